// Package meshapi serves the App Mesh REST API (rest-json, /v20190125/...)
// from the model's operation table: it matches the method and the path
// template of one of the 38 operations, builds the input from the path, the
// query string and the JSON body, validates it against the model (once:
// the write operations take the appmesh.Valid that validation makes and do
// not walk the model again), runs the operation on ops.Service and writes
// the output (or the output's payload member) or the error the way App
// Mesh does.
//
//	request -> route (model URI templates) -> input doc -> appmesh.Decode
//	        -> ops.Service.<Operation> -> JSON body | x-amzn-ErrorType error
package meshapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"

	"github.com/weftmesh/weft/internal/api"
	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/appmesh/ops"
	"github.com/weftmesh/weft/internal/shape"
	"github.com/weftmesh/weft/internal/store"
)

// Config tunes a Handler.
type Config struct {
	// DefaultAccount is the caller's account when the request's SigV4
	// access key id is not a 12-digit account id.
	DefaultAccount string
	// MaxBodyBytes bounds a request body (default 1 MiB).
	MaxBodyBytes int64
	// Region is written into the resource ARNs that Action names
	// (default us-east-1).
	Region string
}

// Handler serves the App Mesh API. It is immutable after New.
type Handler struct {
	routes  []*route
	account string
	region  string
	maxBody int64
	log     *slog.Logger
}

// route is one operation: its URI template, split into segments, and the
// function that runs it.
type route struct {
	op      *shape.Operation
	in      *shape.Shape
	segs    []string // literal segments, or "{name}" for path variables
	call    func(ctx context.Context, c ops.Caller, doc map[string]any) (any, error)
	input   reflect.Type // the Go type of in, which call decodes the input into
	payload int          // index of the output's payload field, or -1
	raw     bool         // call returns the body itself, a json.RawMessage
}

// operation is what bind makes of one ops.Service method.
type operation struct {
	call  func(ctx context.Context, c ops.Caller, doc map[string]any) (any, error)
	input reflect.Type // the input struct type, named as its shape
	out   reflect.Type // the output struct type; nil when raw
	raw   bool         // call returns the response body as a json.RawMessage
}

// decode validates an operation's input document and decodes it: the one
// walk of the model a request gets, in a span of the request's trace when
// weft server traces its writes (a no-op otherwise).
func decode[In any](ctx context.Context, doc map[string]any) (appmesh.Valid[In], error) {
	_, span := trace.SpanFromContext(ctx).TracerProvider().Tracer("github.com/weftmesh/weft/internal/api/meshapi").Start(ctx, "validate")
	defer span.End()
	return appmesh.Decode[In](doc)
}

// bindWrite adapts a write, which takes its input validated.
func bindWrite[In, Out any](fn func(context.Context, ops.Caller, appmesh.Valid[In]) (*Out, error)) operation {
	return operation{
		call: func(ctx context.Context, c ops.Caller, doc map[string]any) (any, error) {
			v, err := decode[In](ctx, doc)
			if err != nil {
				return nil, err
			}
			return fn(ctx, c, v)
		},
		input: reflect.TypeFor[In](),
		out:   reflect.TypeFor[Out](),
	}
}

// bind adapts a read or a delete, which takes its input as it is: it is
// validated here all the same, so that the client hears of a bad request
// as App Mesh answers it.
func bind[In, Out any](fn func(context.Context, ops.Caller, *In) (*Out, error)) operation {
	return operation{
		call: func(ctx context.Context, c ops.Caller, doc map[string]any) (any, error) {
			v, err := decode[In](ctx, doc)
			if err != nil {
				return nil, err
			}
			in, err := v.Input()
			if err != nil {
				return nil, err
			}
			return fn(ctx, c, in)
		},
		input: reflect.TypeFor[In](),
		out:   reflect.TypeFor[Out](),
	}
}

// bindJSON adapts a method that returns the response body itself: the
// Describe operations, whose payload the store holds verbatim.
func bindJSON[In any](fn func(context.Context, ops.Caller, any) (json.RawMessage, error)) operation {
	return operation{
		call: func(ctx context.Context, c ops.Caller, doc map[string]any) (any, error) {
			v, err := decode[In](ctx, doc)
			if err != nil {
				return nil, err
			}
			in, err := v.Input()
			if err != nil {
				return nil, err
			}
			return fn(ctx, c, in)
		},
		input: reflect.TypeFor[In](),
		raw:   true,
	}
}

// operations maps every App Mesh operation to the service method that runs
// it.
func operations(s *ops.Service) map[string]operation {
	return map[string]operation{
		"CreateMesh":             bindWrite(s.CreateMesh),
		"DescribeMesh":           bindJSON[appmesh.DescribeMeshInput](s.DescribeJSON),
		"UpdateMesh":             bindWrite(s.UpdateMesh),
		"DeleteMesh":             bind(s.DeleteMesh),
		"ListMeshes":             bind(s.ListMeshes),
		"CreateVirtualNode":      bindWrite(s.CreateVirtualNode),
		"DescribeVirtualNode":    bindJSON[appmesh.DescribeVirtualNodeInput](s.DescribeJSON),
		"UpdateVirtualNode":      bindWrite(s.UpdateVirtualNode),
		"DeleteVirtualNode":      bind(s.DeleteVirtualNode),
		"ListVirtualNodes":       bind(s.ListVirtualNodes),
		"CreateVirtualService":   bindWrite(s.CreateVirtualService),
		"DescribeVirtualService": bindJSON[appmesh.DescribeVirtualServiceInput](s.DescribeJSON),
		"UpdateVirtualService":   bindWrite(s.UpdateVirtualService),
		"DeleteVirtualService":   bind(s.DeleteVirtualService),
		"ListVirtualServices":    bind(s.ListVirtualServices),
		"CreateVirtualRouter":    bindWrite(s.CreateVirtualRouter),
		"DescribeVirtualRouter":  bindJSON[appmesh.DescribeVirtualRouterInput](s.DescribeJSON),
		"UpdateVirtualRouter":    bindWrite(s.UpdateVirtualRouter),
		"DeleteVirtualRouter":    bind(s.DeleteVirtualRouter),
		"ListVirtualRouters":     bind(s.ListVirtualRouters),
		"CreateRoute":            bindWrite(s.CreateRoute),
		"DescribeRoute":          bindJSON[appmesh.DescribeRouteInput](s.DescribeJSON),
		"UpdateRoute":            bindWrite(s.UpdateRoute),
		"DeleteRoute":            bind(s.DeleteRoute),
		"ListRoutes":             bind(s.ListRoutes),
		"CreateVirtualGateway":   bindWrite(s.CreateVirtualGateway),
		"DescribeVirtualGateway": bindJSON[appmesh.DescribeVirtualGatewayInput](s.DescribeJSON),
		"UpdateVirtualGateway":   bindWrite(s.UpdateVirtualGateway),
		"DeleteVirtualGateway":   bind(s.DeleteVirtualGateway),
		"ListVirtualGateways":    bind(s.ListVirtualGateways),
		"CreateGatewayRoute":     bindWrite(s.CreateGatewayRoute),
		"DescribeGatewayRoute":   bindJSON[appmesh.DescribeGatewayRouteInput](s.DescribeJSON),
		"UpdateGatewayRoute":     bindWrite(s.UpdateGatewayRoute),
		"DeleteGatewayRoute":     bind(s.DeleteGatewayRoute),
		"ListGatewayRoutes":      bind(s.ListGatewayRoutes),
		"TagResource":            bindWrite(s.TagResource),
		"UntagResource":          bindWrite(s.UntagResource),
		"ListTagsForResource":    bind(s.ListTagsForResource),
	}
}

// New returns a Handler serving the operations of the model on svc. (A
// test checks that every operation of the model has an implementation and
// its payload a field.)
func New(svc *ops.Service, cfg Config, log *slog.Logger) *Handler {
	h := &Handler{account: cfg.DefaultAccount, region: cfg.Region, maxBody: cfg.MaxBodyBytes, log: log}
	if h.region == "" {
		h.region = "us-east-1"
	}
	if h.maxBody <= 0 {
		h.maxBody = 1 << 20
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	impl := operations(svc)
	m := appmesh.Model()
	for name, op := range m.Operations {
		o, ok := impl[name]
		if !ok {
			continue
		}
		rt := &route{op: op, in: m.Shapes[op.Input], call: o.call, input: o.input, payload: -1, raw: o.raw}
		rt.segs = strings.Split(strings.TrimPrefix(op.URI, "/"), "/")
		if out := m.Shapes[op.Output]; out != nil && out.Payload != "" && !o.raw {
			for i := range o.out.NumField() {
				tag, _, _ := strings.Cut(o.out.Field(i).Tag.Get("json"), ",")
				if tag == out.Payload {
					rt.payload = i
				}
			}
		}
		h.routes = append(h.routes, rt)
	}
	// The model is a map; a fixed order keeps answers (Allow) stable.
	slices.SortFunc(h.routes, func(a, b *route) int { return strings.Compare(a.op.Name, b.op.Name) })
	return h
}

// match returns the operation for a method and path with its path
// variables. A literal segment beats a variable, so that the most specific
// template wins. allowed lists the methods of templates that match the path
// when none matches the method.
func (h *Handler) match(method string, segs []string) (best *route, vars map[string]string, allowed []string) {
	bestScore := -1
	for _, rt := range h.routes {
		if len(rt.segs) != len(segs) {
			continue
		}
		score, ok := 0, true
		for i, s := range rt.segs {
			switch {
			case strings.HasPrefix(s, "{"):
				if segs[i] == "" {
					ok = false
				}
			case s == segs[i]:
				score++
			default:
				ok = false
			}
			if !ok {
				break
			}
		}
		if !ok {
			continue
		}
		if rt.op.Method != method {
			allowed = append(allowed, rt.op.Method)
			continue
		}
		if score > bestScore {
			best, bestScore = rt, score
		}
	}
	if best == nil {
		return nil, nil, allowed
	}
	vars = map[string]string{}
	for i, s := range best.segs {
		if strings.HasPrefix(s, "{") {
			vars[strings.Trim(s, "{}")] = segs[i]
		}
	}
	return best, vars, nil
}

// ServeHTTP serves one App Mesh API request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("x-amzn-RequestId", uuid.NewString())
	defer func() {
		// A panic is a bug; the client still gets an AWS-shaped answer.
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			h.log.Error("panic serving request", "method", r.Method, "path", r.URL.Path, "panic", p)
			api.WriteRESTError(w, http.StatusInternalServerError, string(appmesh.CodeInternalServer), "internal error")
		}
	}()

	segs, err := pathSegments(r.URL)
	if err != nil {
		api.WriteRESTError(w, http.StatusNotFound, "UnknownOperationException", "no operation at "+r.Method+" "+r.URL.Path)
		return
	}
	rt, vars, allowed := h.match(r.Method, segs)
	if rt == nil {
		if len(allowed) > 0 {
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			api.WriteRESTError(w, http.StatusMethodNotAllowed, "MethodNotAllowedException", "method "+r.Method+" is not allowed at "+r.URL.Path)
			return
		}
		api.WriteRESTError(w, http.StatusNotFound, "UnknownOperationException", "no operation at "+r.Method+" "+r.URL.Path)
		return
	}
	trace.SpanFromContext(r.Context()).SetName("appmesh." + rt.op.Name)
	doc, err := h.input(w, r, rt, vars)
	if err != nil {
		h.writeError(w, r, rt, err)
		return
	}
	out, err := rt.call(r.Context(), h.caller(r), doc)
	if err != nil {
		h.writeError(w, r, rt, err)
		return
	}
	var b []byte
	if rt.raw {
		b = out.(json.RawMessage)
	} else {
		var body any = out
		if rt.payload >= 0 {
			body = reflect.ValueOf(out).Elem().Field(rt.payload).Interface()
		}
		if b, err = json.Marshal(body); err != nil {
			h.writeError(w, r, rt, fmt.Errorf("encode %s output: %w", rt.op.Name, err))
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(rt.op.ResponseCode)
	w.Write(b)
}

// errBodyTooLarge is answered with 413.
var errBodyTooLarge = errors.New("request body too large")

// errBodyTimeout, a body not received within the server's read timeout,
// is answered with 408.
var errBodyTimeout = errors.New("request body timed out")

// input builds the operation's input document from the body, the path
// variables and the query string; the route's call validates it.
func (h *Handler) input(w http.ResponseWriter, r *http.Request, rt *route, vars map[string]string) (map[string]any, error) {
	doc := map[string]any{}
	if r.Body != nil && r.Method != http.MethodGet && r.Method != http.MethodDelete {
		raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, errBodyTooLarge
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, errBodyTimeout
			}
			return nil, appmesh.BadRequest("The request body could not be read: %v", err)
		}
		if len(bytes.TrimSpace(raw)) > 0 {
			obj, err := shape.DecodeObject(raw)
			if err != nil {
				return nil, appmesh.BadRequest("%s", err)
			}
			doc = obj
		}
	}
	query := r.URL.Query()
	for _, m := range rt.in.Members {
		switch m.Location {
		case "":
			continue
		case "uri":
			doc[m.Name] = vars[m.LocationName]
		case "querystring":
			delete(doc, m.Name)
			if vs, ok := query[m.LocationName]; ok && len(vs) > 0 {
				doc[m.Name] = queryValue(appmesh.Model().Shapes[m.Shape], vs[0])
			}
		case "header":
			delete(doc, m.Name)
			if v := r.Header.Get(m.LocationName); v != "" {
				doc[m.Name] = v
			}
		}
	}
	return doc, nil
}

var integer = regexp.MustCompile(`^-?[0-9]+$`)

// queryValue types a query string value as its shape says, so that the
// validator sees a number where the model wants one. The number is
// written again in JSON's form: "007" is 7, as AWS reads it (JSON has no
// leading zeros, and the request's encoding failed with a 500). One
// beyond 64 bits stays a string, which the validator refuses.
func queryValue(s *shape.Shape, v string) any {
	if s != nil && (s.Kind == shape.Integer || s.Kind == shape.Long) && integer.MatchString(v) {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return json.Number(strconv.FormatInt(n, 10))
		}
	}
	return v
}

// pathSegments splits a path after the leading slash and unescapes each
// segment, so that an escaped '/' stays inside its name.
func pathSegments(u *url.URL) ([]string, error) {
	segs := strings.Split(strings.TrimPrefix(u.EscapedPath(), "/"), "/")
	for i, s := range segs {
		v, err := url.PathUnescape(s)
		if err != nil {
			return nil, err
		}
		segs[i] = v
	}
	return segs, nil
}

// caller returns who sent the request. With a credentials file the
// signature was verified and the account is the key's. Without one, no
// signature is checked: when the SigV4 access key id is a 12-digit number
// it is taken as the caller's account, which lets one server stand for
// several accounts; otherwise the caller is the server's account.
func (h *Handler) caller(r *http.Request) ops.Caller {
	if acct := api.Account(r.Context()); acct != "" {
		return ops.Caller{Account: acct} // verified: the key's account
	}
	auth := r.Header.Get("Authorization")
	if _, cred, ok := strings.Cut(auth, "Credential="); ok {
		akid, _, _ := strings.Cut(cred, "/")
		if appmesh.IsAccountID(akid) {
			return ops.Caller{Account: akid}
		}
	}
	return ops.Caller{Account: h.account}
}

// CallerAccount returns the account a request calls as, by the same rule
// as App Mesh operations (caller): the STS API answers it.
func (h *Handler) CallerAccount(r *http.Request) string { return h.caller(r).Account }

// writeError writes an App Mesh exception as App Mesh does; anything else
// is an internal error, logged here and answered with a 500.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, rt *route, err error) {
	if errors.Is(err, errBodyTooLarge) {
		api.WriteRESTError(w, http.StatusRequestEntityTooLarge, "RequestEntityTooLargeException", fmt.Sprintf("The request body exceeds %d bytes", h.maxBody))
		return
	}
	if errors.Is(err, errBodyTimeout) {
		api.WriteRESTError(w, http.StatusRequestTimeout, "RequestTimeoutException", "The request body was not received within the server's read timeout")
		return
	}
	if errors.Is(err, store.ErrClosed) {
		api.WriteRESTError(w, http.StatusServiceUnavailable, "ServiceUnavailableException", "the server is shutting down")
		return
	}
	if errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrConflict) {
		h.log.Warn("store unavailable", "op", rt.op.Name, "err", err)
		w.Header().Set("Retry-After", "1")
		api.WriteRESTError(w, http.StatusServiceUnavailable, "ServiceUnavailableException", storeUnavailableMessage(err))
		return
	}
	if e, ok := appmesh.AsError(err); ok {
		h.log.Debug("request failed", "op", rt.op.Name, "code", e.Code, "message", e.Message)
		api.WriteRESTError(w, e.Code.Status(), string(e.Code), e.Message)
		return
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away; nobody reads the answer.
		api.WriteRESTError(w, 499, "RequestCanceled", "the request was canceled")
		return
	}
	h.log.Error("operation failed", "op", rt.op.Name, "err", err)
	api.WriteRESTError(w, http.StatusInternalServerError, string(appmesh.CodeInternalServer), "internal error")
}

// storeUnavailableMessage tells the caller why a request could not reach
// the store; a write that failed so may or may not have been committed.
func storeUnavailableMessage(err error) string {
	if errors.Is(err, store.ErrConflict) {
		return "too many concurrent writes to the same resources; retry"
	}
	return "the store (etcd) cannot be reached now; retry later (a write answered so may or may not have been applied)"
}
