// Package stsapi serves the one STS operation tools ask before anything
// else, GetCallerIdentity, in STS's query protocol: a form-encoded
// Action=GetCallerIdentity&Version=2011-06-15 (POST body or URL query),
// answered in STS's XML. weft has no IAM: every caller acts as its
// account's root user, so the answer is what STS gives for root
// credentials.
package stsapi

import (
	"cmp"
	"encoding/xml"
	"errors"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/weftmesh/weft/internal/appmesh"
)

// Version is the STS API version, the only one accepted.
const Version = "2011-06-15"

// xmlns is the namespace of STS's answers.
const xmlns = "https://sts.amazonaws.com/doc/2011-06-15/"

// DefaultMaxBodyBytes bounds a request body when Config.MaxBodyBytes is 0.
// GetCallerIdentity has no parameters: its body is about 43 bytes.
const DefaultMaxBodyBytes = 64 << 10

// Config tunes a Handler.
type Config struct {
	// Region names the partition of the ARN answered (aws, aws-cn, ...).
	Region string
	// Account returns the calling account of a request: the one place that
	// decides who calls, shared with the App Mesh API.
	Account func(r *http.Request) string
	// MaxBodyBytes bounds a request body (default DefaultMaxBodyBytes).
	MaxBodyBytes int64
}

// Handler serves STS's query protocol. It is immutable after New.
type Handler struct {
	cfg Config
	log *slog.Logger
}

// New returns a Handler.
func New(cfg Config, log *slog.Logger) *Handler {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	return &Handler{cfg: cfg, log: log}
}

// IsRequest tells whether r is an STS query-protocol request: POST / with
// a form-encoded body, or GET / with an Action in the query.
func IsRequest(r *http.Request) bool {
	if r.URL.Path != "/" {
		return false
	}
	switch r.Method {
	case http.MethodPost:
		mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		return mt == "application/x-www-form-urlencoded"
	case http.MethodGet:
		return r.URL.Query().Has("Action")
	}
	return false
}

// identity is GetCallerIdentity's result.
type identity struct {
	Arn     string `xml:"Arn"`
	UserID  string `xml:"UserId"`
	Account string `xml:"Account"`
}

type getCallerIdentityResponse struct {
	XMLName   xml.Name `xml:"GetCallerIdentityResponse"`
	Xmlns     string   `xml:"xmlns,attr"`
	Result    identity `xml:"GetCallerIdentityResult"`
	RequestID string   `xml:"ResponseMetadata>RequestId"`
}

type errorResponse struct {
	XMLName   xml.Name `xml:"ErrorResponse"`
	Xmlns     string   `xml:"xmlns,attr"`
	Type      string   `xml:"Error>Type"`
	Code      string   `xml:"Error>Code"`
	Message   string   `xml:"Error>Message"`
	RequestID string   `xml:"RequestId"`
}

// apiError is an STS error: its code, HTTP status and message.
type apiError struct {
	status  int
	code    string
	message string
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := uuid.NewString()
	w.Header().Set("x-amzn-RequestId", reqID)
	params, aerr := h.params(w, r)
	if aerr == nil {
		aerr = checkAction(params)
	}
	if aerr != nil {
		h.log.Debug("sts request refused", "code", aerr.code, "message", aerr.message)
		writeXML(w, aerr.status, errorResponse{Xmlns: xmlns, Type: "Sender", Code: aerr.code, Message: aerr.message, RequestID: reqID})
		return
	}
	acct := h.cfg.Account(r)
	writeXML(w, http.StatusOK, getCallerIdentityResponse{
		Xmlns: xmlns,
		Result: identity{
			Arn:     "arn:" + appmesh.Partition(h.cfg.Region) + ":iam::" + acct + ":root",
			UserID:  acct,
			Account: acct,
		},
		RequestID: reqID,
	})
}

// params reads the request's parameters: the URL query, and a POST's
// form-encoded body, bounded by MaxBodyBytes.
func (h *Handler) params(w http.ResponseWriter, r *http.Request) (url.Values, *apiError) {
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes)
	}
	if err := r.ParseForm(); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, &apiError{http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "the request body exceeds " + strconv.FormatInt(h.cfg.MaxBodyBytes, 10) + " bytes"}
		}
		return nil, &apiError{http.StatusBadRequest, "MalformedQueryString", "the request's parameters are not form-encoded: " + err.Error()}
	}
	return r.Form, nil
}

// checkAction accepts GetCallerIdentity of version 2011-06-15 only, with
// STS's errors for anything else.
func checkAction(p url.Values) *apiError {
	action := p.Get("Action")
	switch {
	case action == "":
		return &apiError{http.StatusBadRequest, "MissingAction", "Missing Action"}
	case action != "GetCallerIdentity":
		return &apiError{http.StatusBadRequest, "InvalidAction", "Could not find operation " + action + " for version " + cmp.Or(p.Get("Version"), Version) + "; weft serves only GetCallerIdentity"}
	case p.Get("Version") == "":
		return &apiError{http.StatusBadRequest, "MissingParameter", "The request must contain the parameter Version"}
	case p.Get("Version") != Version:
		return &apiError{http.StatusBadRequest, "InvalidAction", "Could not find operation " + action + " for version " + p.Get("Version")}
	}
	for k := range p {
		if k != "Action" && k != "Version" && !strings.HasPrefix(k, "X-Amz-") {
			return &apiError{http.StatusBadRequest, "InvalidParameter", "GetCallerIdentity takes no parameter " + k}
		}
	}
	return nil
}

// WriteError writes an error in STS's shape (ErrorResponse XML), for a
// request refused before it reaches the Handler: a bad signature, say.
func WriteError(w http.ResponseWriter, status int, code, message string) {
	reqID := uuid.NewString()
	w.Header().Set("x-amzn-RequestId", reqID)
	writeXML(w, status, errorResponse{Xmlns: xmlns, Type: "Sender", Code: code, Message: message, RequestID: reqID})
}

func writeXML(w http.ResponseWriter, status int, v any) {
	b, err := xml.Marshal(v)
	if err != nil { // the types above always marshal
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(status)
	w.Write([]byte(xml.Header))
	w.Write(b)
	w.Write([]byte("\n"))
}
