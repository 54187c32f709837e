package translate

import (
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filelogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/internal/appmesh"
)

// accessLogFile is logging.accessLog.file of a node or gateway (the two
// shapes differ only in name).
type accessLogFile struct {
	path   string
	format *appmesh.LoggingFormat
}

func (b *build) nodeAccessLog(vn *appmesh.VirtualNodeData) *accessLogFile {
	if vn.Spec == nil || vn.Spec.Logging == nil || vn.Spec.Logging.AccessLog == nil || vn.Spec.Logging.AccessLog.File == nil {
		return nil
	}
	f := vn.Spec.Logging.AccessLog.File
	return &accessLogFile{path: str(f.Path), format: f.Format}
}

func (b *build) gatewayAccessLog(vg *appmesh.VirtualGatewayData) *accessLogFile {
	if vg.Spec == nil || vg.Spec.Logging == nil || vg.Spec.Logging.AccessLog == nil || vg.Spec.Logging.AccessLog.File == nil {
		return nil
	}
	f := vg.Spec.Logging.AccessLog.File
	return &accessLogFile{path: str(f.Path), format: f.Format}
}

// accessLogs is the file access log every connection manager and TCP proxy
// of the proxy gets (reference §2.7). Without a format Envoy's default
// applies; text is a format string, json a flat object of format strings.
func (b *build) accessLogs(f *accessLogFile) []*accesslogv3.AccessLog {
	if f == nil || f.path == "" {
		return nil
	}
	fl := &filelogv3.FileAccessLog{Path: f.path}
	if lf := logFormat(f.format); lf != nil {
		fl.AccessLogFormat = &filelogv3.FileAccessLog_LogFormat{LogFormat: lf}
	}
	return []*accesslogv3.AccessLog{{
		Name:       "envoy.access_loggers.file",
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: b.any(fl)},
	}}
}

func logFormat(f *appmesh.LoggingFormat) *corev3.SubstitutionFormatString {
	switch {
	case f == nil:
		return nil
	case f.Text != nil:
		return &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormatSource{
			TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: *f.Text}}}}
	case len(f.Json) > 0:
		fields := map[string]*structpb.Value{}
		for _, kv := range f.Json {
			fields[str(kv.Key)] = structpb.NewStringValue(str(kv.Value))
		}
		return &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{
			JsonFormat: &structpb.Struct{Fields: fields}}}
	}
	return nil
}
