package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weftmesh/weft/internal/ca"
)

const caUsage = `usage: weft ca <command> [--api HOST:PORT]

commands (each one store write on the server; see docs/tls.md):
  status                          the roots, their fingerprints and which one signs
  add-root [--cert F --key F]     1. introduce a root, trusted beside the others (generated, or imported)
  activate FINGERPRINT            2. make it sign: every proxy's certificate is re-issued
  remove-root FINGERPRINT         3. stop trusting a root that no longer signs

FINGERPRINT may be a unique prefix of at least 8 hex digits.`

// runCA calls the CA endpoints of a running weft server (/v1/ca).
func runCA(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stderr, caUsage)
		if len(args) == 0 {
			return errors.New("missing command")
		}
		return flag.ErrHelp
	}
	cmd := args[0]
	fs := flag.NewFlagSet("weft ca "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	api := fs.String("api", envOr("WEFT_API_ADDR", "127.0.0.1:9080"), "host:port of weft server's API listener (env WEFT_API_ADDR)")
	certFile := fs.String("cert", "", "add-root: PEM certificate (then its chain) of a CA to import")
	keyFile := fs.String("key", "", "add-root: PEM private key of --cert")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	base := "http://" + *api + "/v1/ca"
	c := &http.Client{Timeout: 30 * time.Second}
	var method, url string
	var body []byte
	switch cmd {
	case "status":
		method, url = http.MethodGet, base
	case "add-root":
		method, url = http.MethodPost, base+"/roots"
		var req ca.AddRootRequest
		if *certFile != "" || *keyFile != "" {
			if *certFile == "" || *keyFile == "" {
				return errors.New("add-root: give both --cert and --key, or neither to generate a root")
			}
			cert, err := os.ReadFile(*certFile)
			if err != nil {
				return err
			}
			key, err := os.ReadFile(*keyFile)
			if err != nil {
				return err
			}
			req = ca.AddRootRequest{Certificate: string(cert), PrivateKey: string(key)}
		}
		var err error
		if body, err = json.Marshal(req); err != nil {
			return err
		}
	case "activate", "remove-root":
		if fs.NArg() != 1 {
			return fmt.Errorf("%s: give one FINGERPRINT (see weft ca status)", cmd)
		}
		method, url = http.MethodPost, base+"/roots/"+fs.Arg(0)+"/activate"
		if cmd == "remove-root" {
			method, url = http.MethodDelete, base+"/roots/"+fs.Arg(0)
		}
	default:
		fmt.Fprintln(stderr, caUsage)
		return fmt.Errorf("unknown command %q", cmd)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Message string }
		if json.Unmarshal(out, &e) == nil && e.Message != "" {
			return fmt.Errorf("%s: %s", resp.Status, e.Message)
		}
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(out)))
	}
	if cmd != "status" {
		var r ca.RootStatus
		if err := json.Unmarshal(out, &r); err != nil {
			return fmt.Errorf("decode answer: %w", err)
		}
		printRoots(stdout, []ca.RootStatus{r})
		return nil
	}
	var s ca.Status
	if err := json.Unmarshal(out, &s); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	fmt.Fprintf(stdout, "trust domain: %s\n", s.TrustDomain)
	printRoots(stdout, s.Roots)
	return nil
}

func printRoots(w io.Writer, roots []ca.RootStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FINGERPRINT\tSIGNING\tNOT AFTER\tIMPORTED\tSUBJECT")
	for _, r := range roots {
		fmt.Fprintf(tw, "%s\t%t\t%s\t%t\t%s\n", r.Fingerprint, r.Signing, r.NotAfter.UTC().Format(time.RFC3339), r.Imported, r.Subject)
	}
	tw.Flush()
}
