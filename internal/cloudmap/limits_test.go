package cloudmap

import "testing"

// TestParseLimits: the --cloudmap-limits flag's value changes the quotas
// it names and keeps the others; String reads back; bad values are
// refused and leave the base.
func TestParseLimits(t *testing.T) {
	l, err := ParseLimits("instancesPerService=5, Namespaces=0", DefaultLimits())
	want := DefaultLimits()
	want.InstancesPerService, want.Namespaces = 5, 0
	if err != nil || l != want {
		t.Fatalf("ParseLimits = %+v, %v; want %+v", l, err, want)
	}
	if back, err := ParseLimits(l.String(), Limits{}); err != nil || back != l {
		t.Fatalf("String does not parse back: %s -> %+v %v", l, back, err)
	}
	for _, bad := range []string{"meshes=1", "namespaces", "namespaces=many", "servicesPerNamespace=1,bogus=2"} {
		if got, err := ParseLimits(bad, DefaultLimits()); err == nil || got != DefaultLimits() {
			t.Errorf("ParseLimits(%q) = %+v, %v; want an error and the defaults", bad, got, err)
		}
	}
}
