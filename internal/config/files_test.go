package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeKeyPair writes a self-signed certificate valid until notAfter and
// its key into dir, and returns the two paths.
func writeKeyPair(t *testing.T, dir, name string, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    notAfter.Add(-48 * time.Hour),
		NotAfter:     notAfter,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	writePEMFile(t, certFile, "CERTIFICATE", der)
	writePEMFile(t, keyFile, "PRIVATE KEY", keyDER)
	return certFile, keyFile
}

func writePEMFile(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestTLSContentProblems(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	goodCert, goodKey := writeKeyPair(t, dir, "good", now.Add(24*time.Hour))
	_, otherKey := writeKeyPair(t, dir, "other", now.Add(24*time.Hour))
	oldCert, oldKey := writeKeyPair(t, dir, "old", now.Add(-time.Hour))

	cases := []struct {
		name string
		tls  TLS
		want string // "" for no problem
	}{
		{"valid", TLS{CAFile: goodCert, CertFile: goodCert, KeyFile: goodKey}, ""},
		{"ca file without certificate", TLS{CAFile: goodKey}, "broker.tls.ca_file: " + goodKey + " holds no PEM certificate"},
		{"key of another certificate", TLS{CertFile: goodCert, KeyFile: otherKey}, "private key does not match public key"},
		{"expired certificate", TLS{CertFile: oldCert, KeyFile: oldKey}, "broker.tls.cert_file: " + oldCert + " expired at"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			problems := c.tls.contentProblems(now)
			if c.want == "" {
				if len(problems) != 0 {
					t.Errorf("problems %q, want none", problems)
				}
				return
			}
			if len(problems) != 1 || !strings.Contains(problems[0], c.want) {
				t.Errorf("problems %q, want one containing %q", problems, c.want)
			}
		})
	}
}
