package ops

import (
	"context"
	"encoding/base64"
	"strconv"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/store"
)

// maxTags is App Mesh's limit of tags on one resource.
const maxTags = 50

// tagged returns the resource an ARN names, or the error that says why
// there is none here.
func (s *Service) tagged(arn *string) (appmesh.Ref, error) {
	region, r, err := appmesh.ParseARN(str(arn))
	if err != nil {
		return appmesh.Ref{}, err
	}
	if region != s.region {
		return appmesh.Ref{}, appmesh.NotFound("The resource %s is not in region %s", str(arn), s.region)
	}
	return r, nil
}

// TagResource implements the TagResource operation.
func (s *Service) TagResource(ctx context.Context, c Caller, v appmesh.Valid[appmesh.TagResourceInput]) (*appmesh.TagResourceOutput, error) {
	in, err := v.Input()
	if err != nil {
		return nil, err
	}
	r, err := s.tagged(in.ResourceArn)
	if err != nil {
		return nil, err
	}
	_, err = update(ctx, s, func(tx store.Tx) (struct{}, error) {
		if err := mustExist(tx, r); err != nil {
			return struct{}{}, err
		}
		have, err := getTags(tx, r)
		if err != nil {
			return struct{}{}, err
		}
		tags := mergeTags(have, in.Tags)
		if len(tags) > maxTags {
			return struct{}{}, appmesh.TooManyTags("The resource %s would have %d tags; the limit is %d", str(in.ResourceArn), len(tags), maxTags)
		}
		return struct{}{}, putTags(tx, r, tags)
	})
	if err != nil {
		return nil, err
	}
	return &appmesh.TagResourceOutput{}, nil
}

// UntagResource implements the UntagResource operation. Keys the resource
// does not have are ignored.
func (s *Service) UntagResource(ctx context.Context, c Caller, v appmesh.Valid[appmesh.UntagResourceInput]) (*appmesh.UntagResourceOutput, error) {
	in, err := v.Input()
	if err != nil {
		return nil, err
	}
	r, err := s.tagged(in.ResourceArn)
	if err != nil {
		return nil, err
	}
	drop := map[string]bool{}
	for _, k := range in.TagKeys {
		drop[k] = true
	}
	_, err = update(ctx, s, func(tx store.Tx) (struct{}, error) {
		if err := mustExist(tx, r); err != nil {
			return struct{}{}, err
		}
		have, err := getTags(tx, r)
		if err != nil {
			return struct{}{}, err
		}
		var keep []appmesh.TagRef
		for _, t := range have {
			if !drop[str(t.Key)] {
				keep = append(keep, t)
			}
		}
		if len(keep) == len(have) {
			return struct{}{}, nil
		}
		return struct{}{}, putTags(tx, r, keep)
	})
	if err != nil {
		return nil, err
	}
	return &appmesh.UntagResourceOutput{}, nil
}

// ListTagsForResource implements the ListTagsForResource operation. The
// nextToken is the offset of the next tag.
func (s *Service) ListTagsForResource(ctx context.Context, c Caller, in *appmesh.ListTagsForResourceInput) (*appmesh.ListTagsForResourceOutput, error) {
	n := maxTags
	if in.Limit != nil {
		if *in.Limit < 1 || *in.Limit > maxTags {
			return nil, appmesh.BadRequest("Value '%d' at 'limit' failed to satisfy constraint: Member must have value between 1 and 50", *in.Limit)
		}
		n = int(*in.Limit)
	}
	from := 0
	if in.NextToken != nil {
		b, err := base64.RawURLEncoding.DecodeString(*in.NextToken)
		if err == nil {
			from, err = strconv.Atoi(string(b))
		}
		if err != nil || from < 0 {
			return nil, appmesh.BadRequest("The nextToken %q is not valid", *in.NextToken)
		}
	}
	r, err := s.tagged(in.ResourceArn)
	if err != nil {
		return nil, err
	}
	return view(ctx, s, func(tx store.Tx) (*appmesh.ListTagsForResourceOutput, error) {
		if err := mustExist(tx, r); err != nil {
			return nil, err
		}
		tags, err := getTags(tx, r)
		if err != nil {
			return nil, err
		}
		out := &appmesh.ListTagsForResourceOutput{Tags: []appmesh.TagRef{}}
		if from < len(tags) {
			end := min(from+n, len(tags))
			out.Tags = tags[from:end]
			if end < len(tags) {
				tok := base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(end)))
				out.NextToken = &tok
			}
		}
		return out, nil
	})
}
