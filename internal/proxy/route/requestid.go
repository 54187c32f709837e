package route

// KeepsRequestID reports whether a request's x-request-id value is an ID
// the proxy keeps when it generates IDs (generate_request_id, on unless
// turned off): any value but an empty one. Envoy 1.34.0 replaces an
// empty x-request-id as it adds a missing one (UUIDRequestIDExtension::set:
// no header, or its value empty, gets a new UUID); before 1.34 an empty
// one was kept. Envoy's header map joins a request's x-request-id lines
// into one value, an empty line adding nothing to it, so an empty line is
// never forwarded: alone, the proxy's ID replaces it; beside a non-empty
// one, that one is kept.
func KeepsRequestID[S ~string | ~[]byte](v S) bool { return len(v) > 0 }
