package console

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"

	esbuild "github.com/evanw/esbuild/pkg/api"
)

// bundleDir is where the bundled modules are served, under /console/.
const bundleDir = "b/"

// bundle is the console's modules bundled at start (esbuild, in
// process): the first page's modules in one file, and the views loaded
// later (topology, Cloud Map) in chunks of their own, each named by its
// content's hash. One request instead of seven, and no module graph to
// walk, for the first page.
type bundle struct {
	files   map[string][]byte // by name under bundleDir
	entry   string            // the app's bundle, a name of files
	preload []string          // what the entry imports statically
}

// buildBundle bundles js/app.js and what it imports from the embedded
// assets.
func buildBundle() (*bundle, error) {
	embedded := esbuild.Plugin{Name: "embedded", Setup: func(b esbuild.PluginBuild) {
		b.OnResolve(esbuild.OnResolveOptions{Filter: ".*"}, func(a esbuild.OnResolveArgs) (esbuild.OnResolveResult, error) {
			p := a.Path
			if a.Importer != "" {
				p = path.Join(path.Dir(a.Importer), p)
			}
			return esbuild.OnResolveResult{Path: path.Clean(p), Namespace: "weft"}, nil
		})
		b.OnLoad(esbuild.OnLoadOptions{Filter: ".*", Namespace: "weft"}, func(a esbuild.OnLoadArgs) (esbuild.OnLoadResult, error) {
			src, err := assets.ReadFile("assets/" + a.Path)
			if err != nil {
				return esbuild.OnLoadResult{}, err
			}
			s := string(src)
			return esbuild.OnLoadResult{Contents: &s, Loader: esbuild.LoaderJS}, nil
		})
	}}
	res := esbuild.Build(esbuild.BuildOptions{
		EntryPoints: []string{"js/app.js"},
		Bundle:      true,
		Splitting:   true,
		Format:      esbuild.FormatESModule,
		Target:      esbuild.ES2020,
		Outdir:      "/out",
		EntryNames:  "[name]-[hash]",
		ChunkNames:  "[name]-[hash]",
		Metafile:    true,
		Write:       false,
		LogLevel:    esbuild.LogLevelSilent,
		Plugins:     []esbuild.Plugin{embedded},
	})
	if len(res.Errors) > 0 {
		var msgs []string
		for _, m := range res.Errors {
			msgs = append(msgs, m.Text)
		}
		return nil, fmt.Errorf("bundle the console's modules: %s", strings.Join(msgs, "; "))
	}
	bu := &bundle{files: map[string][]byte{}}
	for _, f := range res.OutputFiles {
		bu.files[strings.TrimPrefix(f.Path, "/out/")] = f.Contents
	}
	var meta struct {
		Outputs map[string]struct {
			EntryPoint string `json:"entryPoint"`
			Imports    []struct {
				Path string `json:"path"`
				Kind string `json:"kind"`
			} `json:"imports"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal([]byte(res.Metafile), &meta); err != nil {
		return nil, fmt.Errorf("bundle metafile: %w", err)
	}
	for out, o := range meta.Outputs {
		if !strings.HasSuffix(o.EntryPoint, "js/app.js") { // the lazily loaded views are entry points too
			continue
		}
		bu.entry = path.Base(out)
		for _, im := range o.Imports {
			if im.Kind == "import-statement" && !slices.Contains(bu.preload, path.Base(im.Path)) {
				bu.preload = append(bu.preload, path.Base(im.Path))
			}
		}
	}
	sort.Strings(bu.preload)
	if bu.files[bu.entry] == nil {
		return nil, errors.New("bundle: no entry point in the output")
	}
	return bu, nil
}
