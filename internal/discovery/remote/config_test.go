package remote

import (
	"strings"
	"testing"
)

func TestParseRemote(t *testing.T) {
	r, err := ParseRemote("name=aws,region=eu-west-1,namespace=apps.local,namespace=jobs.local,endpoint=https://cm.example:8443,profile=prod")
	if err != nil {
		t.Fatal(err)
	}
	if r.Name != "aws" || r.Region != "eu-west-1" || r.Endpoint != "https://cm.example:8443" || r.Profile != "prod" || strings.Join(r.Namespaces, " ") != "apps.local jobs.local" {
		t.Fatalf("%+v", r)
	}
	for in, msg := range map[string]string{
		"region=us-east-1":                       "give the namespaces",
		"namespace=a,colour=red":                 `unknown key "colour"`,
		"namespace=a,endpoint=ftp://x":           "not an http(s) URL",
		"namespace=*,namespace=a":                "excludes other namespaces",
		"namespace":                              "not key=value",
		"namespace=a,endpoint=http://":           "not an http(s) URL",
		"namespace=a,region=us-east-1,,name=x":   "not key=value",
		"name=,namespace=a":                      "not key=value",
		"namespace=a,endpoint=127.0.0.1:9080":    "not an http(s) URL",
		"namespace=a,endpoint=http://[::1:9080/": "not an http(s) URL",
	} {
		if _, err := ParseRemote(in); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseRemote(%q): %v, want %q", in, err, msg)
		}
	}
	two := func(a, b string) error {
		ra, _ := ParseRemote(a)
		rb, _ := ParseRemote(b)
		return Config{Remotes: []Remote{ra, rb}}.check()
	}
	if err := two("name=x,namespace=a", "name=y,namespace=a"); err == nil || !strings.Contains(err.Error(), `"a" is given to remotes "x" and "y"`) {
		t.Errorf("overlap: %v", err)
	}
	if err := two("name=x,namespace=*", "name=y,namespace=b"); err == nil || !strings.Contains(err.Error(), "only remote") {
		t.Errorf("star with another: %v", err)
	}
	if err := two("name=x,namespace=a", "name=x,namespace=b"); err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Errorf("same name: %v", err)
	}
	if err := two("name=x,namespace=a", "name=y,namespace=b"); err != nil {
		t.Errorf("disjoint: %v", err)
	}
}
