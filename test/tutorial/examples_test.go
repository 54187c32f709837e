package tutorial

import (
	"os"
	"path/filepath"
	"testing"
)

// TestExamplesAreTheTestdata checks that the tutorial files shipped for
// readers (examples/tutorial, which docs/quickstart.md uses) are the ones
// these tests run, file for file, both ways.
func TestExamplesAreTheTestdata(t *testing.T) {
	const examples = "../../examples/tutorial"
	list := func(root string) map[string]bool {
		files := map[string]bool{}
		err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(root, path)
			files[rel] = true
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return files
	}
	ours, theirs := list("testdata"), list(examples)
	if len(ours) < 20 {
		t.Fatalf("testdata has only %d files", len(ours))
	}
	for rel := range ours {
		if !theirs[rel] {
			t.Errorf("%s lacks %s", examples, rel)
			continue
		}
		a, _ := os.ReadFile(filepath.Join("testdata", rel))
		b, _ := os.ReadFile(filepath.Join(examples, rel))
		if string(a) != string(b) {
			t.Errorf("%s differs from testdata/%s", filepath.Join(examples, rel), rel)
		}
	}
	for rel := range theirs {
		if !ours[rel] {
			t.Errorf("%s has %s, which testdata lacks", examples, rel)
		}
	}
}
