package tutorial

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// cliProgram is one installed AWS CLI: Debian's awscli is version 2, pip's
// is version 1, and they differ in what they send (the v2 that Debian ships
// cannot turn off DiscoverInstances' host prefix, for one).
type cliProgram struct {
	path    string // the aws program
	version string // as --version prints it: "aws-cli/2.9.19"
}

// major is the CLI's major version: "1" or "2".
func (p cliProgram) major() string {
	v := strings.TrimPrefix(p.version, "aws-cli/")
	major, _, _ := strings.Cut(v, ".")
	return major
}

// name is the subtest name for the CLI: "aws-cli-2.9.19".
func (p cliProgram) name() string { return strings.ReplaceAll(p.version, "/", "-") }

// awsCLIs returns the AWS CLIs the tests run with: the programs listed in
// WEFT_AWS_CLIS (paths separated by the OS's list separator), or else every
// `aws` on PATH, one per version. With none it skips, or on CI
// (WEFT_CI=1) fails.
func awsCLIs(t *testing.T) []cliProgram {
	t.Helper()
	var paths []string
	listed := os.Getenv("WEFT_AWS_CLIS")
	if listed != "" {
		paths = filepath.SplitList(listed)
	} else {
		for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
			if dir == "" {
				continue
			}
			p := filepath.Join(dir, "aws")
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				paths = append(paths, p)
			}
		}
	}
	var clis []cliProgram
	seen := map[string]bool{}
	for _, p := range paths {
		out, err := exec.Command(p, "--version").Output()
		f := strings.Fields(string(out))
		if err != nil || len(f) == 0 || !strings.HasPrefix(f[0], "aws-cli/") {
			if listed != "" {
				t.Fatalf("WEFT_AWS_CLIS names %s, which is not a working AWS CLI: %v %q", p, err, out)
			}
			continue // e.g. a pyenv shim for a Python without awscli
		}
		if !seen[f[0]] {
			seen[f[0]] = true
			clis = append(clis, cliProgram{path: p, version: f[0]})
		}
	}
	if len(clis) == 0 {
		if os.Getenv("WEFT_CI") == "1" {
			t.Fatal("no AWS CLI (aws) on PATH or in WEFT_AWS_CLIS")
		}
		t.Skip("no AWS CLI (aws) on PATH or in WEFT_AWS_CLIS")
	}
	return clis
}

// forEachCLI runs f as a subtest for every AWS CLI of awsCLIs.
func forEachCLI(t *testing.T, f func(t *testing.T, prog cliProgram)) {
	t.Helper()
	for _, prog := range awsCLIs(t) {
		t.Run(prog.name(), func(t *testing.T) {
			t.Logf("%s (%s)", prog.path, prog.version)
			f(t, prog)
		})
	}
}

// command is the exec.Cmd of one `aws` command line run by this CLI.
func (p cliProgram) command(args ...string) *exec.Cmd {
	return exec.Command(p.path, args...)
}

// awsCLI runs `aws` commands. It prefers one long-lived Python process
// that runs each command through the CLI's own driver (awscli_driver.py),
// about 50 times faster than starting `aws` per command; without a Python
// that imports this very CLI it runs the program each time. Owned by one
// test.
type awsCLI struct {
	prog cliProgram
	mu   sync.Mutex
	in   io.WriteCloser // nil: run the aws program per command
	out  *bufio.Reader
}

// awscliPython returns a Python interpreter whose awscli is the program's
// own version: the one its #! line names, else a python3 on PATH (pip's
// CLI behind a pyenv shim). "" if none is.
func awscliPython(prog cliProgram) string {
	var cands []string
	if b, err := os.ReadFile(prog.path); err == nil && bytes.HasPrefix(b, []byte("#!")) {
		line, _, _ := bytes.Cut(b[2:], []byte("\n"))
		if f := strings.Fields(string(line)); len(f) > 0 && strings.Contains(f[0], "python") {
			cands = append(cands, f[0])
		}
	}
	// Every python3 on PATH: a pyenv shim's python3 is the Python whose
	// scripts its aws shim runs.
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		if py := filepath.Join(dir, "python3"); dir != "" && !slices.Contains(cands, py) {
			if _, err := os.Stat(py); err == nil {
				cands = append(cands, py)
			}
		}
	}
	want := strings.TrimPrefix(prog.version, "aws-cli/")
	for _, py := range cands {
		out, err := exec.Command(py, "-c", "import awscli, awscli.clidriver; print(awscli.__version__)").Output()
		if err == nil && strings.TrimSpace(string(out)) == want {
			return py
		}
	}
	return ""
}

func startCLI(t *testing.T, prog cliProgram) *awsCLI {
	t.Helper()
	py := awscliPython(prog)
	if py == "" {
		t.Logf("no Python imports awscli %s: running %s for every command", prog.version, prog.path)
		return &awsCLI{prog: prog}
	}
	cmd := exec.Command(py, "awscli_driver.py")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the CLI driver: %v", err)
	}
	t.Cleanup(func() {
		in.Close() // the driver ends at end of input
		cmd.Wait()
	})
	return &awsCLI{prog: prog, in: in, out: bufio.NewReaderSize(out, 1<<20)}
}

func (c *awsCLI) run(t *testing.T, dir string, env map[string]string, argv ...string) cliResult {
	t.Helper()
	if c.in == nil {
		cmd := c.prog.command(argv...)
		cmd.Dir = dir
		cmd.Env = os.Environ()
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatalf("aws: %v", err)
		}
		return cliResult{RC: cmd.ProcessState.ExitCode(), Stdout: stdout.String(), Stderr: stderr.String()}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	req, _ := json.Marshal(map[string]any{"argv": argv, "cwd": dir, "env": env})
	if _, err := c.in.Write(append(req, '\n')); err != nil {
		t.Fatalf("CLI driver: %v", err)
	}
	line, err := c.out.ReadBytes('\n')
	if err != nil {
		t.Fatalf("CLI driver: %v", err)
	}
	var res cliResult
	if err := json.Unmarshal(line, &res); err != nil {
		t.Fatalf("CLI driver reply %q: %v", line, err)
	}
	return res
}
