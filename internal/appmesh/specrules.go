package appmesh

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"
)

// maxDurationSeconds is protobuf's largest Duration, which Envoy's
// configuration holds every App Mesh duration in (10,000 years).
const maxDurationSeconds = 315_576_000_000

// CheckSpec applies to a resource's spec the rules on what it holds,
// wherever it holds it, that the model leaves out (botocore declares no
// bound on these). What they refuse was accepted and committed, and then
// could not be translated: the proxies of the nodes that read it stopped
// getting configuration, or got what Envoy refuses.
//   - A duration is at most protobuf's largest (its value in the unit it
//     names): a larger one overflowed into a negative timeout.
//   - A regex (route, gateway route and header matches) compiles: Envoy's
//     RE2 and Go's take the same syntax. Envoy also bounds a regex's
//     program size, which this does not check.
//   - A DNS hostname, and the virtual service a backend names, are not
//     empty and hold no control character.
func CheckSpec(spec any) error {
	return checkValue(reflect.ValueOf(spec), "spec")
}

var (
	durationType = reflect.TypeFor[Duration]()
	dnsType      = reflect.TypeFor[DnsServiceDiscovery]()
	backendType  = reflect.TypeFor[VirtualServiceBackend]()
)

func checkValue(v reflect.Value, path string) error {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return checkValue(v.Elem(), path)
	case reflect.Slice:
		for i := range v.Len() {
			if err := checkValue(v.Index(i), fmt.Sprintf("%s.%d.member", path, i+1)); err != nil {
				return err
			}
		}
	case reflect.Struct:
		switch v.Type() {
		case durationType:
			return checkDuration(v.Interface().(Duration), path)
		case dnsType:
			if h := v.Interface().(DnsServiceDiscovery).Hostname; h != nil {
				return checkName(*h, path+".hostname")
			}
		case backendType:
			if n := v.Interface().(VirtualServiceBackend).VirtualServiceName; n != nil {
				if err := CheckServiceName(path+".virtualServiceName", *n); err != nil {
					return err
				}
			}
		}
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			fv := v.Field(i)
			if f.Name == "Regex" && f.Type == reflect.TypeFor[*string]() {
				if !fv.IsNil() {
					if _, err := regexp.Compile(*fv.Interface().(*string)); err != nil {
						return BadRequest("Value '%s' at '%s.%s' is not a valid regular expression: %v", *fv.Interface().(*string), path, name, err)
					}
				}
				continue
			}
			if err := checkValue(fv, path+"."+name); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkDuration(d Duration, path string) error {
	if d.Value == nil {
		return nil
	}
	limit := int64(maxDurationSeconds)
	if d.Unit == DurationUnitMs {
		limit *= 1000
	}
	if *d.Value > limit {
		return BadRequest("Value '%d' at '%s.value' failed to satisfy constraint: Member must have value less than or equal to %d (%s)", *d.Value, path, limit, d.Unit)
	}
	return nil
}

// checkName refuses an empty name, and one with a control character.
func checkName(s, path string) error {
	if s == "" {
		return BadRequest("Value '' at '%s' failed to satisfy constraint: Member must have length greater than or equal to 1", path)
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return BadRequest("Value %q at '%s' failed to satisfy constraint: Member must not contain control characters", s, path)
	}
	return nil
}
