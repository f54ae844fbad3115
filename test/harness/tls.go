package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// CA is a test certificate authority whose certificate is written to
// CertFile.
type CA struct {
	t        testing.TB
	dir      string
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
	CertFile string
}

// NewCA creates a CA named name in a temporary directory.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &CA{t: t, dir: t.TempDir(), cert: cert, key: key}
	ca.CertFile = filepath.Join(ca.dir, name+"-ca.crt")
	writePEM(t, ca.CertFile, "CERTIFICATE", der)
	return ca
}

// Issue signs a certificate for commonName, valid for 127.0.0.1 and
// localhost, usable by servers and clients, and writes the certificate
// and key files to certFile and keyFile (created in a temporary directory
// when empty). It returns the two paths.
func (ca *CA) Issue(commonName, certFile, keyFile string) (string, string) {
	ca.t.Helper()
	if certFile == "" {
		certFile = filepath.Join(ca.dir, commonName+".crt")
		keyFile = filepath.Join(ca.dir, commonName+".key")
	}
	key := newKey(ca.t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(ca.t),
		Subject:      pkix.Name{CommonName: commonName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	writePEM(ca.t, keyFile, "PRIVATE KEY", keyDER)
	writePEM(ca.t, certFile, "CERTIFICATE", der)
	return certFile, keyFile
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// writePEM writes one PEM block through a rename, so a reader never sees
// half a file.
func writePEM(t testing.TB, path, blockType string, der []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TLSBroker is a mosquitto with a plain listener (Broker.Addr) and a TLS
// listener on TLSPort, with a server certificate from CA.
type TLSBroker struct {
	*Broker
	CA      *CA
	TLSPort int
}

// TLSURL returns the mqtts:// URL of the TLS listener.
func (b *TLSBroker) TLSURL() string { return fmt.Sprintf("mqtts://127.0.0.1:%d", b.TLSPort) }

// StartTLSBroker starts mosquitto with a TLS listener whose certificate
// is signed by a new CA. With requireClientCert, the listener accepts only
// clients with a certificate from that CA and uses its common name as the
// username, which the broker log shows as u'NAME'.
func StartTLSBroker(t testing.TB, requireClientCert bool) *TLSBroker {
	t.Helper()
	ca := NewCA(t, "broker")
	certFile, keyFile := ca.Issue("mosquitto", "", "")
	port := FreePort(t)
	conf := fmt.Sprintf("listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n", port, ca.CertFile, certFile, keyFile)
	if requireClientCert {
		conf += "require_certificate true\nuse_identity_as_username true\n"
	}
	b := StartBroker(t, conf)
	WaitFor(t, 10*time.Second, "mosquitto TLS listener", func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	return &TLSBroker{Broker: b, CA: ca, TLSPort: port}
}

// Hello is what a TLS client offered in its ClientHello.
type Hello struct {
	ServerName string
	ALPN       []string
}

// HelloRecorder is a TLS listener that records each ClientHello and then
// fails the handshake, for checking SNI and ALPN.
type HelloRecorder struct {
	ln net.Listener
	mu sync.Mutex // guards hellos
	hs []Hello
}

// StartHelloRecorder listens on a free port of 127.0.0.1 until the test
// ends.
func StartHelloRecorder(t testing.TB) *HelloRecorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &HelloRecorder{ln: ln}
	cfg := &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		r.mu.Lock()
		r.hs = append(r.hs, Hello{ServerName: h.ServerName, ALPN: append([]string(nil), h.SupportedProtos...)})
		r.mu.Unlock()
		return nil, fmt.Errorf("hello recorded")
	}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * time.Second))
				tls.Server(c, cfg).Handshake()
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return r
}

// URL returns the recorder's mqtts:// URL.
func (r *HelloRecorder) URL() string { return "mqtts://" + r.ln.Addr().String() }

// Hellos returns the ClientHellos seen so far.
func (r *HelloRecorder) Hellos() []Hello {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Hello(nil), r.hs...)
}
