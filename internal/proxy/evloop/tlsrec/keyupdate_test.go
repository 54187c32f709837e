package tlsrec

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"io"
	"strings"
	"sync"
	"testing"
)

// TestKeyUpdate: crypto/tls answers a KeyUpdate but never starts one (no
// setting and no amount of data makes it), so the test sends it in the
// client's place: it seals records with the client's traffic secret from
// the key log (RFC 8446 §5.2, §7.1-7.3), a KeyUpdate asking for an update
// and then data under the next secret. Feed must take both, queue its own
// KeyUpdate in Pending and switch its write keys: the crypto/tls client
// reads the answer sealed under the server's next secret.
func TestKeyUpdate(t *testing.T) {
	scfg, ccfg := configs(t, tls.VersionTLS13)
	keys := &keyLog{}
	ccfg.KeyLogWriter = keys
	p, serr, cerr := serve(t, Server(scfg), ccfg)
	if serr != nil || cerr != nil {
		t.Fatalf("handshake: %v, %v", serr, cerr)
	}
	if _, err := p.peer.Write([]byte("one")); err != nil { // the client's record 0
		t.Fatal(err)
	}
	if got := p.feedUntil(t, 3); string(got) != "one" {
		t.Fatalf("%q", got)
	}

	suite := p.peer.ConnectionState().CipherSuite
	var h func() hash.Hash
	var keyLen int
	switch suite {
	case tls.TLS_AES_128_GCM_SHA256:
		h, keyLen = sha256.New, 16
	case tls.TLS_AES_256_GCM_SHA384:
		h, keyLen = sha512.New384, 32
	default:
		t.Fatalf("cipher suite %s: the test seals AES-GCM records only", tls.CipherSuiteName(suite))
	}
	secret := keys.secret(t, "CLIENT_TRAFFIC_SECRET_0")
	next := expandLabel(t, h, secret, "traffic upd", h().Size())
	keyUpdate := []byte{24, 0, 0, 1, 1} // KeyUpdate, update_requested
	var wire []byte
	wire = append(wire, seal(t, h, keyLen, secret, 1, keyUpdate, 22)...)
	wire = append(wire, seal(t, h, keyLen, next, 0, []byte("two"), 23)...)
	if _, err := p.praw.Write(wire); err != nil {
		t.Fatal(err)
	}
	if got := p.feedUntil(t, 3); string(got) != "two" {
		t.Fatalf("data under the updated key: %q", got)
	}
	if len(p.c.Pending()) == 0 {
		t.Fatal("Feed queued no KeyUpdate of its own")
	}
	if _, err := p.c.Write([]byte("three")); err != nil {
		t.Fatal(err)
	}
	p.flush(t)
	got := make([]byte, 5)
	if _, err := io.ReadFull(p.peer, got); err != nil || string(got) != "three" {
		t.Fatalf("the client read %q, %v after the server's KeyUpdate", got, err)
	}
}

// keyLog collects an NSS key log written by crypto/tls.
type keyLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (k *keyLog) Write(p []byte) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.buf.Write(p)
}

func (k *keyLog) secret(t *testing.T, label string) []byte {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	sc := bufio.NewScanner(bytes.NewReader(k.buf.Bytes()))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == label {
			b, err := hex.DecodeString(f[2])
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	t.Fatalf("no %s in the key log", label)
	return nil
}

// expandLabel is HKDF-Expand-Label of RFC 8446 §7.1 with an empty context.
func expandLabel(t *testing.T, h func() hash.Hash, secret []byte, label string, n int) []byte {
	t.Helper()
	full := "tls13 " + label
	info := binary.BigEndian.AppendUint16(nil, uint16(n))
	info = append(info, byte(len(full)))
	info = append(info, full...)
	info = append(info, 0)
	out, err := hkdf.Expand(h, secret, string(info), n)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// seal returns one TLS 1.3 record: content of type typ, protected with
// the traffic secret's key and IV at sequence number seq (RFC 8446 §5.2,
// §5.3).
func seal(t *testing.T, h func() hash.Hash, keyLen int, secret []byte, seq uint64, content []byte, typ byte) []byte {
	t.Helper()
	key := expandLabel(t, h, secret, "key", keyLen)
	iv := expandLabel(t, h, secret, "iv", 12)
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	nonce := bytes.Clone(iv)
	for i := range 8 {
		nonce[4+i] ^= byte(seq >> (56 - 8*i))
	}
	inner := append(bytes.Clone(content), typ)
	hdr := []byte{23, 3, 3, 0, 0}
	binary.BigEndian.PutUint16(hdr[3:], uint16(len(inner)+aead.Overhead()))
	return aead.Seal(hdr, nonce, inner, hdr)
}
