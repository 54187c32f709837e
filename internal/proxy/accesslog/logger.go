package accesslog

import (
	"fmt"
	"os"
	"sync"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/proxy/stats"
	"github.com/weftmesh/weft/internal/proxy/strict"
)

// formatter is a compiled Text or JSON format.
type formatter interface {
	Append(b []byte, e *Entry) []byte
}

// Logger writes entries in one format to one sink.
type Logger struct {
	f    formatter
	sink *sink
}

// Log formats e and appends it to the sink. Errors are counted, not
// returned: a full disk must not fail requests.
func (l *Logger) Log(e *Entry) {
	bp := bufPool.Get().(*[]byte)
	b := l.f.Append((*bp)[:0], e)
	l.sink.write(b)
	*bp = b
	bufPool.Put(bp)
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Sinks opens each path once and keeps it open until Close, so that
// configuration updates do not reopen files; each sink has its writer
// (sink.go). Safe for concurrent use.
type Sinks struct {
	st *sinkStats
	b  Buffering

	mu     sync.Mutex
	m      map[string]*sink // protected by mu
	closed bool             // Close was called; protected by mu
}

// NewSinks returns an empty set of sinks buffering as b says, counting in
// st (filesystem.*; nil counts in a private store).
func NewSinks(b Buffering, st *stats.Store) *Sinks {
	if b.FlushInterval <= 0 {
		b.FlushInterval = DefaultFlushInterval
	}
	if b.FlushSize <= 0 {
		b.FlushSize = DefaultFlushSize
	}
	if b.MaxBuffered <= 0 {
		b.MaxBuffered = DefaultMaxBuffered
	}
	return &Sinks{st: newSinkStats(st), b: b, m: make(map[string]*sink)}
}

func (s *Sinks) open(path string) (*sink, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.m[path]; ok {
		return k, nil
	}
	if s.closed {
		// A configuration applied while the proxy stops: no writer
		// would be stopped after this one.
		return nil, fmt.Errorf("open access log %s: the proxy is stopping", path)
	}
	var k *sink
	switch path {
	case "/dev/stdout":
		k = newSink(os.Stdout, false, path, s.st, s.b)
	case "/dev/stderr":
		k = newSink(os.Stderr, false, path, s.st, s.b)
	default:
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("open access log: %w", err)
		}
		k = newSink(f, true, path, s.st, s.b)
	}
	s.m[path] = k
	return k, nil
}

// Close writes what the sinks hold (waiting closeWait at most for all) and
// closes every file opened. Lines logged afterwards are dropped.
func (s *Sinks) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, k := range s.m {
		k.stopTaking()
	}
	deadline := time.Now().Add(closeWait) // one wait for every sink
	var first error
	for p, k := range s.m {
		if err := k.wait(deadline); err != nil && first == nil {
			first = err
		}
		delete(s.m, p)
	}
	return first
}

// Build compiles an AccessLog config (file, stdout or stderr logger) and
// opens its sink.
func (s *Sinks) Build(al *accesslogv3.AccessLog, path string) (*Logger, error) {
	if err := strict.Fields(al, path, "name", "typed_config"); err != nil {
		return nil, err
	}
	if al.GetTypedConfig() == nil {
		return nil, fmt.Errorf("%s: typed_config is required", path)
	}
	msg, err := al.GetTypedConfig().UnmarshalNew()
	if err != nil {
		return nil, fmt.Errorf("%s: typed_config: %w", path, err)
	}
	tpath := strict.Join(path, "typed_config")
	var (
		file   string
		format *corev3.SubstitutionFormatString
		f      formatter
	)
	switch c := msg.(type) {
	case *filev3.FileAccessLog:
		if err := strict.Fields(c, tpath, "path", "format", "json_format", "typed_json_format", "log_format"); err != nil {
			return nil, err
		}
		if c.GetPath() == "" {
			return nil, fmt.Errorf("%s: path is required", tpath)
		}
		file = c.GetPath()
		switch {
		case c.GetLogFormat() != nil:
			format = c.GetLogFormat()
		case c.GetFormat() != "":
			t, err := CompileText(c.GetFormat(), false)
			if err != nil {
				return nil, fmt.Errorf("%s.format: %w", tpath, err)
			}
			f = t
		case c.GetJsonFormat() != nil || c.GetTypedJsonFormat() != nil:
			js := c.GetJsonFormat()
			if js == nil {
				js = c.GetTypedJsonFormat()
			}
			j, err := CompileJSON(js, false)
			if err != nil {
				return nil, fmt.Errorf("%s.json_format: %w", tpath, err)
			}
			f = j
		}
	case *streamv3.StdoutAccessLog:
		if err := strict.Fields(c, tpath, "log_format"); err != nil {
			return nil, err
		}
		file, format = "/dev/stdout", c.GetLogFormat()
	case *streamv3.StderrAccessLog:
		if err := strict.Fields(c, tpath, "log_format"); err != nil {
			return nil, err
		}
		file, format = "/dev/stderr", c.GetLogFormat()
	default:
		return nil, fmt.Errorf("%s: access logger %s is not supported by weft proxy", path, proto.MessageName(msg))
	}
	if f == nil {
		f, err = compileFormat(format, strict.Join(tpath, "log_format"))
		if err != nil {
			return nil, err
		}
	}
	k, err := s.open(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tpath, err)
	}
	return &Logger{f: f, sink: k}, nil
}

func compileFormat(sf *corev3.SubstitutionFormatString, path string) (formatter, error) {
	if sf == nil {
		t, err := CompileText(DefaultFormat, false)
		return t, err
	}
	// content_type matters only for local replies; json_format_options'
	// sort_properties is what weft does anyway.
	if err := strict.Fields(sf, path, "text_format", "json_format", "text_format_source",
		"omit_empty_values", "content_type", "json_format_options"); err != nil {
		return nil, err
	}
	switch {
	case sf.GetJsonFormat() != nil:
		j, err := CompileJSON(sf.GetJsonFormat(), sf.GetOmitEmptyValues())
		if err != nil {
			return nil, fmt.Errorf("%s.json_format: %w", path, err)
		}
		return j, nil
	case sf.GetTextFormatSource() != nil:
		ds := sf.GetTextFormatSource()
		if err := strict.Fields(ds, strict.Join(path, "text_format_source"), "inline_string", "inline_bytes"); err != nil {
			return nil, err
		}
		src := ds.GetInlineString()
		if src == "" {
			src = string(ds.GetInlineBytes())
		}
		t, err := CompileText(src, sf.GetOmitEmptyValues())
		if err != nil {
			return nil, fmt.Errorf("%s.text_format_source: %w", path, err)
		}
		return t, nil
	default:
		t, err := CompileText(sf.GetTextFormat(), sf.GetOmitEmptyValues())
		if err != nil {
			return nil, fmt.Errorf("%s.text_format: %w", path, err)
		}
		return t, nil
	}
}
