// Package cloudmapapi serves the Cloud Map API (servicediscovery
// 2017-03-14) as AWS does: awsJson1.1, POST / with X-Amz-Target
// Route53AutoNaming_v20170314.<Operation>, PascalCase members.
//
// A request flows: target -> cloudmap.Decode (the body validated against
// the model, once) -> the registry's operation, which takes the
// cloudmap.Valid it made -> JSON encode; errors leave as AWS errors
// (x-amzn-ErrorType and {"__type","Message"}), 4xx for anything the
// caller sent. The Host header is never checked, so DiscoverInstances,
// which AWS clients send to "data-" + host, works on any name that reaches
// the listener.
package cloudmapapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime/debug"
	"strings"

	"github.com/google/uuid"

	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/store"
)

// TargetPrefix is the X-Amz-Target prefix of every Cloud Map operation.
const TargetPrefix = "Route53AutoNaming_v20170314."

// Handler serves the Cloud Map API. It is immutable after New.
type Handler struct {
	ops     map[string]operation
	maxBody int64
	log     *slog.Logger
}

// operation is one API operation: it validates and decodes a request's
// body into the operation's input and calls the registry with it.
type operation func(ctx context.Context, body []byte) (any, error)

// call adapts a registry method to an operation.
func call[Req, Resp any](fn func(context.Context, cloudmap.Valid[Req]) (*Resp, error)) operation {
	return func(ctx context.Context, body []byte) (any, error) {
		v, err := cloudmap.Decode[Req](body)
		if err != nil {
			return nil, err
		}
		return fn(ctx, v)
	}
}

// New returns the handler of the registry's operations.
func New(reg *cloudmap.Registry, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	run := map[string]operation{
		"CreateHttpNamespace":       call(reg.CreateHttpNamespace),
		"CreatePrivateDnsNamespace": call(reg.CreatePrivateDnsNamespace),
		"CreatePublicDnsNamespace":  call(reg.CreatePublicDnsNamespace),
		"GetNamespace":              call(reg.GetNamespace),
		"ListNamespaces":            call(reg.ListNamespaces),
		"UpdateHttpNamespace":       call(reg.UpdateHttpNamespace),
		"UpdatePrivateDnsNamespace": call(reg.UpdatePrivateDnsNamespace),
		"UpdatePublicDnsNamespace":  call(reg.UpdatePublicDnsNamespace),
		"DeleteNamespace":           call(reg.DeleteNamespace),
		"CreateService":             call(reg.CreateService),
		"GetService":                call(reg.GetService),
		"ListServices":              call(reg.ListServices),
		"UpdateService":             call(reg.UpdateService),
		"DeleteService":             call(reg.DeleteService),
		"GetServiceAttributes":      call(reg.GetServiceAttributes),
		"UpdateServiceAttributes":   call(reg.UpdateServiceAttributes),
		"DeleteServiceAttributes":   call(reg.DeleteServiceAttributes),
		"RegisterInstance":          call(reg.RegisterInstance),
		"DeregisterInstance":        call(reg.DeregisterInstance),
		"GetInstance":               call(reg.GetInstance),
		"ListInstances":             call(reg.ListInstances),
		"DiscoverInstances":         call(reg.DiscoverInstances),
		"DiscoverInstancesRevision": call(reg.DiscoverInstancesRevision),
		"GetInstancesHealthStatus":  call(reg.GetInstancesHealthStatus),
		"UpdateInstanceCustomHealthStatus": call(func(ctx context.Context, v cloudmap.Valid[cloudmap.UpdateInstanceCustomHealthStatusRequest]) (*struct{}, error) {
			return &struct{}{}, reg.UpdateInstanceCustomHealthStatus(ctx, v)
		}),
		"GetOperation":        call(reg.GetOperation),
		"ListOperations":      call(reg.ListOperations),
		"TagResource":         call(reg.TagResource),
		"UntagResource":       call(reg.UntagResource),
		"ListTagsForResource": call(reg.ListTagsForResource),
	}
	h := &Handler{ops: map[string]operation{}, maxBody: MaxBodyBytes, log: log}
	for name := range cloudmap.Model().Operations {
		if r := run[name]; r != nil {
			h.ops[name] = r
		}
	}
	return h
}

// Operations returns the names of the operations served, for tests that
// check every operation of the model is.
func (h *Handler) Operations() []string {
	names := make([]string, 0, len(h.ops))
	for n := range h.ops {
		names = append(names, n)
	}
	return names
}

// ServeHTTP serves one Cloud Map request; the Host header does not matter.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("x-amzn-RequestId", uuid.NewString())
	name, _ := strings.CutPrefix(r.Header.Get("X-Amz-Target"), TargetPrefix)
	defer func() {
		// A panic is a bug; the client still gets an AWS-shaped answer.
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			h.log.Error("panic serving request", "operation", name, "panic", p, "stack", string(debug.Stack()))
			writeError(w, http.StatusInternalServerError, &cloudmap.Error{Code: cloudmap.CodeInternalFailure, Message: "internal error"})
		}
	}()
	out, err := h.serve(w, r, name)
	if err != nil {
		h.fail(w, name, err)
		return
	}
	b, err := json.Marshal(out)
	if err != nil {
		h.fail(w, name, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Write(b)
	h.log.Debug("cloud map request", "operation", name)
}

// MaxBodyBytes bounds a request body; a larger one is answered 413
// RequestEntityTooLargeException and its connection closed.
const MaxBodyBytes = 1 << 20

// errBodyTooLarge is answered with 413.
var errBodyTooLarge = errors.New("request body too large")

// errBodyTimeout, a body not received within the server's read timeout,
// is answered with 408.
var errBodyTimeout = errors.New("request body timed out")

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, name string) (any, error) {
	op, ok := h.ops[name]
	if !ok || !strings.HasPrefix(r.Header.Get("X-Amz-Target"), TargetPrefix) {
		return nil, &cloudmap.Error{Code: cloudmap.CodeUnknownOperation, Message: "unknown operation " + r.Header.Get("X-Amz-Target")}
	}
	if r.Method != http.MethodPost {
		return nil, &cloudmap.Error{Code: cloudmap.CodeUnknownOperation, Message: "operations take POST, not " + r.Method}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errBodyTooLarge
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, errBodyTimeout
		}
		return nil, &cloudmap.Error{Code: cloudmap.CodeSerializationException, Message: "read request body: " + err.Error()}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	return op(r.Context(), body)
}

// fail writes err: AWS errors as they are, a store that is closing as 503,
// anything else as 500, logged since an operator must look.
func (h *Handler) fail(w http.ResponseWriter, name string, err error) {
	if errors.Is(err, errBodyTooLarge) {
		// awsJson1.1's shape with HTTP's status, as App Mesh's API answers.
		writeError(w, http.StatusRequestEntityTooLarge, &cloudmap.Error{Code: "RequestEntityTooLargeException", Message: fmt.Sprintf("The request body exceeds %d bytes", h.maxBody)})
		return
	}
	if errors.Is(err, errBodyTimeout) {
		writeError(w, http.StatusRequestTimeout, &cloudmap.Error{Code: "RequestTimeoutException", Message: "The request body was not received within the server's read timeout"})
		return
	}
	if e, ok := cloudmap.AsError(err); ok {
		h.log.Debug("cloud map request failed", "operation", name, "code", e.Code, "message", e.Message)
		writeError(w, e.Status(), e)
		return
	}
	if errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrConflict) {
		h.log.Warn("store unavailable", "operation", name, "err", err)
		msg := "the store (etcd) cannot be reached now; retry later (a write answered so may or may not have been applied)"
		if errors.Is(err, store.ErrConflict) {
			msg = "too many concurrent writes to the same resources; retry"
		}
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, &cloudmap.Error{Code: "ServiceUnavailable", Message: msg})
		return
	}
	if errors.Is(err, store.ErrClosed) || errors.Is(err, context.Canceled) {
		writeError(w, http.StatusServiceUnavailable, &cloudmap.Error{Code: "ServiceUnavailable", Message: "the server is shutting down"})
		return
	}
	h.log.Error("cloud map request failed", "operation", name, "err", err)
	writeError(w, http.StatusInternalServerError, &cloudmap.Error{Code: cloudmap.CodeInternalFailure, Message: "internal error"})
}

// writeError writes an awsJson1.1 error: the code in x-amzn-ErrorType and
// __type, the message, and the exception's other members.
func writeError(w http.ResponseWriter, status int, e *cloudmap.Error) {
	body := map[string]string{}
	for k, v := range e.Fields {
		body[k] = v
	}
	body["__type"] = e.Code
	body["Message"] = e.Message
	b, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("x-amzn-ErrorType", e.Code)
	w.WriteHeader(status)
	w.Write(b)
}
