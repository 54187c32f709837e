package cloudmap

import (
	"context"
	"slices"
	"strings"

	"github.com/weftmesh/weft/internal/store"
)

// mergeTags returns old with tags added, a tag replacing the one with its
// key, sorted by key.
func mergeTags(old, tags []Tag) []Tag {
	byKey := map[string]Tag{}
	for _, t := range append(slices.Clone(old), tags...) {
		byKey[deref(t.Key)] = t
	}
	out := make([]Tag, 0, len(byKey))
	for _, t := range byKey {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b Tag) int { return strings.Compare(deref(a.Key), deref(b.Key)) })
	return out
}

// tagged is a namespace or service record, loaded for its tags.
type tagged struct {
	key  string
	tags *[]Tag
	rec  any
}

func (r *Registry) taggedResource(tx store.Tx, arn string) (*tagged, error) {
	notFound := errorf(CodeResourceNotFound, "Resource not found: %s", arn)
	if !strings.HasPrefix(arn, "arn:") {
		return nil, notFound
	}
	if id, ok := r.resourceID(arn, "namespace"); ok {
		var rec NamespaceRecord
		found, err := getJSON(tx, NamespaceKey(id), &rec)
		if err != nil {
			return nil, err
		}
		if found {
			return &tagged{key: NamespaceKey(id), tags: &rec.Tags, rec: &rec}, nil
		}
	}
	if id, ok := r.resourceID(arn, "service"); ok {
		var rec ServiceRecord
		found, err := getJSON(tx, ServiceKey(id), &rec)
		if err != nil {
			return nil, err
		}
		if found {
			return &tagged{key: ServiceKey(id), tags: &rec.Tags, rec: &rec}, nil
		}
	}
	return nil, notFound
}

// TagResource adds tags to a namespace or service.
func (r *Registry) TagResource(ctx context.Context, v Valid[TagResourceRequest]) (*TagResourceResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	err = r.update(ctx, func(tx store.Tx) error {
		res, err := r.taggedResource(tx, deref(req.ResourceARN))
		if err != nil {
			return err
		}
		tags := mergeTags(*res.tags, req.Tags)
		if len(tags) > maxTags {
			e := errorf(CodeTooManyTags, "A resource can have at most %d tags", maxTags)
			e.Fields = map[string]string{"ResourceName": deref(req.ResourceARN)}
			return e
		}
		*res.tags = tags
		return putJSON(tx, res.key, res.rec)
	})
	if err != nil {
		return nil, err
	}
	return &TagResourceResponse{}, nil
}

// UntagResource removes tags by key from a namespace or service.
func (r *Registry) UntagResource(ctx context.Context, v Valid[UntagResourceRequest]) (*UntagResourceResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	err = r.update(ctx, func(tx store.Tx) error {
		res, err := r.taggedResource(tx, deref(req.ResourceARN))
		if err != nil {
			return err
		}
		*res.tags = slices.DeleteFunc(*res.tags, func(t Tag) bool { return slices.Contains(req.TagKeys, deref(t.Key)) })
		return putJSON(tx, res.key, res.rec)
	})
	if err != nil {
		return nil, err
	}
	return &UntagResourceResponse{}, nil
}

// ListTagsForResource returns a namespace's or service's tags.
func (r *Registry) ListTagsForResource(ctx context.Context, v Valid[ListTagsForResourceRequest]) (*ListTagsForResourceResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	out := ListTagsForResourceResponse{Tags: []Tag{}}
	err = r.view(ctx, func(tx store.Tx) error {
		res, err := r.taggedResource(tx, deref(req.ResourceARN))
		if err != nil {
			return err
		}
		out.Tags = append(out.Tags, *res.tags...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}
