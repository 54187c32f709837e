package cloudmap

import (
	"context"
	"time"

	"github.com/weftmesh/weft/internal/shape"
	"github.com/weftmesh/weft/internal/store"
)

// GetOperation returns an operation that a mutation reported.
func (r *Registry) GetOperation(ctx context.Context, v Valid[GetOperationRequest]) (*GetOperationResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	var out GetOperationResponse
	err = r.view(ctx, func(tx store.Tx) error {
		var op Operation
		found := false
		if owner := deref(req.OwnerAccount); owner == "" || owner == r.account {
			var err error
			if found, err = getJSON(tx, OperationKey(deref(req.OperationId)), &op); err != nil {
				return err
			}
		}
		if !found {
			return errorf(CodeOperationNotFound, "Operation not found: %s", deref(req.OperationId))
		}
		out.Operation = &op
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// ListOperations lists operations, oldest first, filtered.
func (r *Registry) ListOperations(ctx context.Context, v Valid[ListOperationsRequest]) (*ListOperationsResponse, error) {
	req, err := v.Input()
	if err != nil {
		return nil, err
	}
	var preds []func(*Operation) bool
	for _, f := range req.Filters {
		p, err := operationFilter(f)
		if err != nil {
			return nil, err
		}
		preds = append(preds, p)
	}
	out := ListOperationsResponse{Operations: []OperationSummary{}}
	err = r.view(ctx, func(tx store.Tx) error {
		var err error
		out.NextToken, err = r.page(tx, OperationPrefix, deref(req.NextToken), maxResults(req.MaxResults, 100), func(kv store.KV) (bool, error) {
			var op Operation
			if err := unmarshal(kv, &op); err != nil {
				return false, err
			}
			for _, p := range preds {
				if !p(&op) {
					return false, nil
				}
			}
			out.Operations = append(out.Operations, OperationSummary{Id: op.Id, Status: op.Status})
			return true, nil
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

func operationFilter(f OperationFilter) (func(*Operation) bool, error) {
	eq := []FilterCondition{FilterConditionEq}
	eqIn := []FilterCondition{FilterConditionEq, FilterConditionIn}
	switch f.Name {
	case OperationFilterNameNamespaceId:
		return predicate(string(f.Name), f.Condition, f.Values, eq, func(op *Operation) string { return op.Targets["NAMESPACE"] })
	case OperationFilterNameServiceId:
		return predicate(string(f.Name), f.Condition, f.Values, eq, func(op *Operation) string { return op.Targets["SERVICE"] })
	case OperationFilterNameStatus:
		return predicate(string(f.Name), f.Condition, f.Values, eqIn, func(op *Operation) string { return string(op.Status) })
	case OperationFilterNameType:
		return predicate(string(f.Name), f.Condition, f.Values, eqIn, func(op *Operation) string { return string(op.Type) })
	case OperationFilterNameUpdateDate:
		if f.Condition != FilterConditionBetween || len(f.Values) != 2 {
			return nil, invalid("Filter UPDATE_DATE takes the condition BETWEEN and two dates")
		}
		var bounds [2]time.Time
		for i, v := range f.Values {
			t, err := shape.ParseTime(v)
			if err != nil {
				return nil, invalid("Filter UPDATE_DATE: %q is not a date in Unix time", v)
			}
			bounds[i] = t
		}
		return func(op *Operation) bool {
			return op.UpdateDate != nil && !op.UpdateDate.Before(bounds[0]) && !op.UpdateDate.After(bounds[1])
		}, nil
	}
	return nil, invalid("Unknown filter %q", f.Name)
}
