package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/weftmesh/weft/internal/appmesh"
	"github.com/weftmesh/weft/internal/appmesh/ops"
	"github.com/weftmesh/weft/internal/auth"
	"github.com/weftmesh/weft/internal/ca"
	"github.com/weftmesh/weft/internal/cloudmap"
	"github.com/weftmesh/weft/internal/discovery"
	"github.com/weftmesh/weft/internal/store"
	"github.com/weftmesh/weft/internal/store/dump"
	"github.com/weftmesh/weft/internal/store/storeurl"
)

// backupTimeout bounds `weft backup` as a whole.
const backupTimeout = 30 * time.Minute

// etcdFlags registers the flags reaching an etcd store.
func etcdFlags(fs *flag.FlagSet) func() storeurl.Etcd {
	var e storeurl.Etcd
	fs.StringVar(&e.CACert, "etcd-cacert", envOr("WEFT_ETCD_CACERT", ""), "PEM CA certificate verifying etcd's; makes the connections to etcd TLS (env WEFT_ETCD_CACERT)")
	fs.StringVar(&e.Cert, "etcd-cert", envOr("WEFT_ETCD_CERT", ""), "PEM client certificate for etcd (env WEFT_ETCD_CERT)")
	fs.StringVar(&e.Key, "etcd-key", envOr("WEFT_ETCD_KEY", ""), "PEM key of --etcd-cert (env WEFT_ETCD_KEY)")
	fs.StringVar(&e.Username, "etcd-username", envOr("WEFT_ETCD_USERNAME", ""), "etcd user (env WEFT_ETCD_USERNAME; password in env WEFT_ETCD_PASSWORD)")
	return func() storeurl.Etcd {
		e.Password = os.Getenv("WEFT_ETCD_PASSWORD")
		return e
	}
}

// spoolFlag defines --max-spool: how large the temporary file holding
// what may grow (dump.DefaultMaxSpool by default).
func spoolFlag(fs *flag.FlagSet, what string) *int64 {
	return fs.Int64("max-spool", dump.DefaultMaxSpool, "bytes the temporary file holding "+what+" may take; beyond, nothing is written (4 GiB: twice etcd's default --quota-backend-bytes)")
}

func openTarget(ctx context.Context, raw string, e storeurl.Etcd) (store.Store, storeurl.Target, error) {
	t, err := storeurl.Parse(raw)
	if err != nil {
		return nil, t, err
	}
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := storeurl.Open(octx, t, e, nil)
	if err != nil {
		return nil, t, fmt.Errorf("open %s: %w", t, err)
	}
	return st, t, nil
}

// checkRecord is the check weft restore and weft store copy make of each
// key before writing any: the key must be one weft writes, and its value
// a record the key's owner reads (each owner's check says what it
// refuses: what the server cannot read, not what today's API would
// refuse in a request). A key under cloudmap/remote/ is discovery's, not
// the registry's.
func checkRecord(key string, value []byte) error {
	switch {
	case strings.HasPrefix(key, appmesh.KeyPrefix):
		return ops.CheckRecord(key, value)
	case strings.HasPrefix(key, discovery.RemotePrefix):
		return discovery.CheckRemoteRecord(key, value)
	case strings.HasPrefix(key, cloudmap.KeyPrefix):
		return cloudmap.CheckRecord(key, value)
	case key == ca.StateKey:
		_, err := ca.Decode(value)
		return err
	case key == auth.TokenKeyKey:
		return auth.CheckTokenKey(value)
	}
	return errors.New("not a key weft writes")
}

// runBackup fetches GET /v1/backup from a live server into a file.
func runBackup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("weft backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: weft backup --out FILE [--endpoint-url URL]\n\n"+
			"Writes a consistent snapshot of a running weft server's store (either kind, CA keys\n"+
			"included: keep the file secret) to FILE; weft restore writes it into an empty store.\n\nflags:")
		fs.PrintDefaults()
	}
	endpoint := fs.String("endpoint-url", envOr("WEFT_ENDPOINT_URL", "http://127.0.0.1:9080"), "weft server's API (env WEFT_ENDPOINT_URL); requests are signed with the environment's AWS credentials when set (action weft:GetBackup)")
	region := fs.String("region", envOr("AWS_REGION", envOr("AWS_DEFAULT_REGION", "us-east-1")), "region to sign for (env AWS_REGION)")
	out := fs.String("out", "", "file to write (required); it is written next to it and renamed when complete")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() > 0 {
		fs.Usage()
		return errors.New("--out is required")
	}
	ctx, cancel := context.WithTimeout(ctx, backupTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(*endpoint, "/")+"/v1/backup", nil)
	if err != nil {
		return err
	}
	if id := os.Getenv("AWS_ACCESS_KEY_ID"); id != "" {
		sum := sha256.Sum256(nil)
		creds := aws.Credentials{AccessKeyID: id, SecretAccessKey: os.Getenv("AWS_SECRET_ACCESS_KEY"), SessionToken: os.Getenv("AWS_SESSION_TOKEN")}
		if err := v4.NewSigner().SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), "weft", *region, time.Now()); err != nil {
			return fmt.Errorf("sign: %w", err)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	tmp, err := os.CreateTemp(filepath.Dir(*out), ".weft-backup-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, nothing to remove
	if _, err := io.Copy(tmp, resp.Body); err != nil {
		tmp.Close()
		return fmt.Errorf("receive backup: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// Check the file is whole before it takes the name.
	if _, err := dump.Verify(*out, tmp.Name()); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), *out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "backup written to %s\n", *out)
	return nil
}

// runRestore writes a backup into an empty store.
func runRestore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("weft restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: weft restore --in FILE --store URL\n\n"+
			"Writes a backup (weft backup) into an empty store: bolt:///path/weft.db (no server may\n"+
			"have it open) or etcd://host:2379,... (start the replicas after the restore). Every\n"+
			"key is checked first (a key weft writes, holding a record weft server reads); one\n"+
			"that is not stops the restore before anything is written. A backup holds the CA's\n"+
			"private keys: keep it as secret as the store. FILE may be a pipe (/dev/stdin,\n"+
			"<(age -d weft.backup.age)): as the restore reads it twice, it first copies it to a\n"+
			"temporary file in $TMPDIR, mode 0600, removed when the restore ends, of at most\n"+
			"--max-spool bytes: a larger one is refused before anything is written.\n\nflags:")
		fs.PrintDefaults()
	}
	in := fs.String("in", "", "backup file (required)")
	to := fs.String("store", "", "store to restore into (required): bolt:///path/weft.db or etcd://host:2379,...[/prefix]")
	maxSpool := spoolFlag(fs, "a backup read from a pipe")
	etcdOpts := etcdFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *in == "" || *to == "" || fs.NArg() > 0 {
		fs.Usage()
		return errors.New("--in and --store are required")
	}
	if *maxSpool <= 0 {
		return fmt.Errorf("--max-spool %d: must be a number of bytes above 0", *maxSpool)
	}
	f, err := os.Open(*in)
	if err != nil {
		return err
	}
	defer f.Close()
	st, t, err := openTarget(ctx, *to, etcdOpts())
	if err != nil {
		return err
	}
	defer st.Close()
	n, err := dump.Restore(ctx, f, st, checkRecord, *maxSpool)
	if errors.Is(err, dump.ErrSpoolLimit) {
		return fmt.Errorf("restore into %s: %s is a pipe holding more than --max-spool (%d bytes) to copy to a temporary file: nothing was written; give --in the backup file itself, which is read where it is, or a larger --max-spool", t, *in, *maxSpool)
	}
	if err != nil {
		return fmt.Errorf("restore into %s: %w", t, err)
	}
	fmt.Fprintf(stdout, "restored %d keys into %s\n", n, t)
	return nil
}

// runStore runs `weft store copy`.
func runStore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stderr, "usage: weft store copy --from URL --to URL\n\nRun 'weft store copy -h' for its flags.")
		return flag.ErrHelp
	}
	if args[0] != "copy" {
		fmt.Fprintln(stderr, "usage: weft store copy --from URL --to URL")
		return fmt.Errorf("unknown subcommand %q; want copy", args[0])
	}
	fs := flag.NewFlagSet("weft store copy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: weft store copy --from URL --to URL\n\n"+
			"Copies a consistent snapshot of one store into another, empty one: bbolt to etcd to\n"+
			"move a single server onto replicas, etcd to bbolt to move back. Stop the servers\n"+
			"using a bbolt file first (it is locked while open). Every key is checked as weft\n"+
			"restore checks them, before anything is written: the snapshot is held meanwhile in a\n"+
			"temporary file in $TMPDIR, mode 0600 (it holds the CA's private keys), of at most\n"+
			"--max-spool bytes, and removed when the copy ends.\n\nflags:")
		fs.PrintDefaults()
	}
	from := fs.String("from", "", "store to read (required): bolt:///path/weft.db (or a path) or etcd://host:2379,...[/prefix]")
	to := fs.String("to", "", "empty store to write (required), same forms")
	maxSpool := spoolFlag(fs, "the snapshot")
	etcdOpts := etcdFlags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *from == "" || *to == "" || fs.NArg() > 0 {
		fs.Usage()
		return errors.New("--from and --to are required")
	}
	if *maxSpool <= 0 {
		return fmt.Errorf("--max-spool %d: must be a number of bytes above 0", *maxSpool)
	}
	src, ft, err := openTarget(ctx, *from, etcdOpts())
	if err != nil {
		return err
	}
	defer src.Close()
	dst, tt, err := openTarget(ctx, *to, etcdOpts())
	if err != nil {
		return err
	}
	defer dst.Close()
	n, err := dump.Copy(ctx, src, dst, checkRecord, *maxSpool)
	if errors.Is(err, dump.ErrSpoolLimit) {
		return fmt.Errorf("copy %s to %s: the snapshot is larger than --max-spool (%d bytes), the temporary file it is checked in: nothing was written; give a larger --max-spool", ft, tt, *maxSpool)
	}
	if err != nil {
		return fmt.Errorf("copy %s to %s: %w", ft, tt, err)
	}
	fmt.Fprintf(stdout, "copied %d keys from %s to %s\n", n, ft, tt)
	return nil
}
