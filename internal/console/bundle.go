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

// bundle is the console's modules bundled and minified at start (esbuild,
// in process), split where app.js imports a view with import(): the
// first page's code (app.js, lists.js) in the entry, what every view
// shares (api.js, dom.js) in a chunk, and each view loaded later (details
// and forms, topology, Cloud Map, proxies) in chunks of its own, each file
// named by its content's hash. The first page fetches and compiles only
// the entry and the chunks it imports statically.
type bundle struct {
	files   map[string][]byte   // by name under bundleDir
	entry   string              // the app's bundle, a name of files
	preload []string            // what the entry imports statically, directly or not
	inputs  map[string][]string // by name of files: the modules it holds ("js/api.js")
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
		// Minified: fewer bytes to fetch and, above all, to parse and
		// compile before the first page is drawn.
		MinifyWhitespace:  true,
		MinifyIdentifiers: true,
		MinifySyntax:      true,
		LegalComments:     esbuild.LegalCommentsNone,
		Write:             false,
		LogLevel:          esbuild.LogLevelSilent,
		Plugins:           []esbuild.Plugin{embedded},
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
			Inputs map[string]json.RawMessage `json:"inputs"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal([]byte(res.Metafile), &meta); err != nil {
		return nil, fmt.Errorf("bundle metafile: %w", err)
	}
	static := map[string][]string{} // by output: the outputs it imports statically
	bu.inputs = map[string][]string{}
	for out, o := range meta.Outputs {
		name := path.Base(out)
		for in := range o.Inputs {
			bu.inputs[name] = append(bu.inputs[name], strings.TrimPrefix(in, "weft:"))
		}
		sort.Strings(bu.inputs[name])
		for _, im := range o.Imports {
			if im.Kind == "import-statement" {
				static[name] = append(static[name], path.Base(im.Path))
			}
		}
		if strings.HasSuffix(o.EntryPoint, "js/app.js") { // the lazily loaded views are entry points too
			bu.entry = name
		}
	}
	// The entry's static imports, and theirs: the first page needs them
	// all before it runs.
	todo := slices.Clone(static[bu.entry])
	for len(todo) > 0 {
		name := todo[0]
		todo = todo[1:]
		if name == bu.entry || slices.Contains(bu.preload, name) {
			continue
		}
		bu.preload = append(bu.preload, name)
		todo = append(todo, static[name]...)
	}
	sort.Strings(bu.preload)
	if bu.files[bu.entry] == nil {
		return nil, errors.New("bundle: no entry point in the output")
	}
	return bu, nil
}
