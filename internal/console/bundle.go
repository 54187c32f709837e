package console

import (
	"bytes"
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

// The bundle's layout. The first page (the meshes list) runs app.js,
// lists.js and what every view shares, api.js and dom.js: that code is
// bundled into one module that the index carries inline, so the list is
// drawn without fetching any script. The views opened later (details and
// forms, topology, Cloud Map, proxies) are bundled apart, split into
// content-hashed files that app.js imports when one is opened. They use
// the first page's instances of api.js and dom.js (one session, one
// ApiError class), which the inline module hands them under
// globalThis.weftShared: in their bundle those two imports are replaced
// by modules that read it.
var (
	// sharedModules are the modules the first page's code hands to the
	// later views.
	sharedModules = []string{"js/api.js", "js/dom.js"}
	// laterViews are the modules app.js loads with import().
	laterViews = []string{"js/mesh.js", "js/topology.js", "js/cloudmap.js", "js/proxies.js"}
)

// bundle is the console's modules bundled and minified at start (esbuild,
// in process).
type bundle struct {
	first       []byte              // the first page's module, inlined in the index
	firstInputs []string            // the modules it holds
	files       map[string][]byte   // the later views' files, by name under bundleDir
	inputs      map[string][]string // by name of files: the modules it holds ("js/mesh.js")
}

// embeddedPlugin resolves the modules' relative imports in the embedded
// assets; shim, when not nil, gives the source of a module to use instead
// of the one named (its path, "js/api.js").
func embeddedPlugin(shim func(string) (string, bool)) esbuild.Plugin {
	return esbuild.Plugin{Name: "embedded", Setup: func(b esbuild.PluginBuild) {
		b.OnResolve(esbuild.OnResolveOptions{Filter: ".*"}, func(a esbuild.OnResolveArgs) (esbuild.OnResolveResult, error) {
			p := a.Path
			if a.Importer != "" {
				p = path.Join(path.Dir(a.Importer), p)
			}
			return esbuild.OnResolveResult{Path: path.Clean(p), Namespace: "weft"}, nil
		})
		b.OnLoad(esbuild.OnLoadOptions{Filter: ".*", Namespace: "weft"}, func(a esbuild.OnLoadArgs) (esbuild.OnLoadResult, error) {
			if shim != nil {
				if s, ok := shim(a.Path); ok {
					return esbuild.OnLoadResult{Contents: &s, Loader: esbuild.LoaderJS}, nil
				}
			}
			src, err := assets.ReadFile("assets/" + a.Path)
			if err != nil {
				return esbuild.OnLoadResult{}, err
			}
			s := string(src)
			return esbuild.OnLoadResult{Contents: &s, Loader: esbuild.LoaderJS}, nil
		})
	}}
}

// metafile is what the bundle reads of esbuild's metafile.
type metafile struct {
	Outputs map[string]struct {
		EntryPoint string                     `json:"entryPoint"`
		Exports    []string                   `json:"exports"`
		Inputs     map[string]json.RawMessage `json:"inputs"`
	} `json:"outputs"`
}

// build runs esbuild, minified, as ES modules.
func build(o esbuild.BuildOptions) (esbuild.BuildResult, metafile, error) {
	o.Bundle, o.Format, o.Target = true, esbuild.FormatESModule, esbuild.ES2020
	o.Outdir, o.Metafile, o.Write, o.LogLevel = "/out", true, false, esbuild.LogLevelSilent
	// Minified: fewer bytes to fetch and, above all, to parse and compile
	// before the first page is drawn.
	o.MinifyWhitespace, o.MinifyIdentifiers, o.MinifySyntax = true, true, true
	o.LegalComments = esbuild.LegalCommentsNone
	res := esbuild.Build(o)
	var meta metafile
	if len(res.Errors) > 0 {
		var msgs []string
		for _, m := range res.Errors {
			msgs = append(msgs, m.Text)
		}
		return res, meta, fmt.Errorf("bundle the console's modules: %s", strings.Join(msgs, "; "))
	}
	if err := json.Unmarshal([]byte(res.Metafile), &meta); err != nil {
		return res, meta, fmt.Errorf("bundle metafile: %w", err)
	}
	return res, meta, nil
}

// buildBundle bundles js/app.js and what it imports from the embedded
// assets.
func buildBundle() (*bundle, error) {
	// The shared modules' exports, which their stand-ins in the later
	// views re-export.
	_, meta, err := build(esbuild.BuildOptions{EntryPoints: sharedModules, Plugins: []esbuild.Plugin{embeddedPlugin(nil)}})
	if err != nil {
		return nil, err
	}
	shims := map[string]string{}
	for _, o := range meta.Outputs {
		m := strings.TrimPrefix(o.EntryPoint, "weft:")
		if !slices.Contains(sharedModules, m) || len(o.Exports) == 0 {
			continue
		}
		shims[m] = fmt.Sprintf("export const { %s } = globalThis.weftShared[%q];\n", strings.Join(o.Exports, ", "), m)
	}
	if len(shims) != len(sharedModules) {
		return nil, fmt.Errorf("bundle: the exports of %v: %d found", sharedModules, len(shims))
	}

	// The later views, split, each shared module read from the first
	// page's.
	res, meta, err := build(esbuild.BuildOptions{
		EntryPoints: laterViews, Splitting: true, EntryNames: "[name]-[hash]", ChunkNames: "[name]-[hash]",
		Plugins: []esbuild.Plugin{embeddedPlugin(func(p string) (string, bool) { s, ok := shims[p]; return s, ok })},
	})
	if err != nil {
		return nil, err
	}
	bu := &bundle{files: map[string][]byte{}, inputs: map[string][]string{}}
	for _, f := range res.OutputFiles {
		bu.files[strings.TrimPrefix(f.Path, "/out/")] = f.Contents
	}
	viewURL := map[string]string{} // "./mesh.js", as app.js imports it: its file's URL
	for out, o := range meta.Outputs {
		name := path.Base(out)
		for in := range o.Inputs {
			if in = strings.TrimPrefix(in, "weft:"); !slices.Contains(sharedModules, in) { // the stand-ins
				bu.inputs[name] = append(bu.inputs[name], in)
			}
		}
		sort.Strings(bu.inputs[name])
		if m := strings.TrimPrefix(o.EntryPoint, "weft:"); slices.Contains(laterViews, m) {
			viewURL["./"+path.Base(m)] = "/console/" + bundleDir + name
		}
	}
	if len(viewURL) != len(laterViews) {
		return nil, fmt.Errorf("bundle: %d of the views %v in the output", len(viewURL), laterViews)
	}

	// The first page: app.js, after a module that hands the shared
	// modules to the later views; app.js's import() of a view goes to its
	// file.
	const entry = "js/first.js"
	first := esbuild.Plugin{Name: "first", Setup: func(b esbuild.PluginBuild) {
		b.OnResolve(esbuild.OnResolveOptions{Filter: `^\./(mesh|topology|cloudmap|proxies)\.js$`}, func(a esbuild.OnResolveArgs) (esbuild.OnResolveResult, error) {
			if a.Kind != esbuild.ResolveJSDynamicImport {
				return esbuild.OnResolveResult{}, nil // a static import: bundled
			}
			u, ok := viewURL[a.Path]
			if !ok {
				return esbuild.OnResolveResult{}, fmt.Errorf("no bundled view %s", a.Path)
			}
			return esbuild.OnResolveResult{Path: u, External: true}, nil
		})
	}}
	handOver := "import * as api from './api.js';\nimport * as dom from './dom.js';\n" +
		"globalThis.weftShared = { 'js/api.js': api, 'js/dom.js': dom };\n"
	res, meta, err = build(esbuild.BuildOptions{
		EntryPoints: []string{entry},
		Plugins: []esbuild.Plugin{first, embeddedPlugin(func(p string) (string, bool) {
			switch p {
			case entry:
				return "import './shared.js';\nimport './app.js';\n", true
			case "js/shared.js":
				return handOver, true
			}
			return "", false
		})},
	})
	if err != nil {
		return nil, err
	}
	if len(res.OutputFiles) != 1 {
		return nil, fmt.Errorf("bundle: the first page's code is %d files", len(res.OutputFiles))
	}
	bu.first = bytes.TrimSpace(res.OutputFiles[0].Contents)
	if bytes.Contains(bytes.ToLower(bu.first), []byte("</script")) {
		return nil, errors.New("bundle: the first page's code holds </script and cannot be inlined")
	}
	for _, o := range meta.Outputs {
		for in := range o.Inputs {
			if in = strings.TrimPrefix(in, "weft:"); in != entry && in != "js/shared.js" {
				bu.firstInputs = append(bu.firstInputs, in)
			}
		}
	}
	sort.Strings(bu.firstInputs)
	return bu, nil
}
