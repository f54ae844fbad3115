package eventloop

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// selfSignedCert returns a certificate for 127.0.0.1 and a pool that
// trusts it.
func selfSignedCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

func TestTLS_ConfigReadOnEveryConnect(t *testing.T) {
	cert, pool := selfSignedCert(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	b := serveFakeBroker(t, ln, brokerScript{})
	var loads atomic.Int32
	opts := testOptions(b)
	opts.URLs = []string{"mqtts://" + ln.Addr().String()}
	opts.TLSConfig = func() (*tls.Config, error) {
		loads.Add(1)
		return &tls.Config{RootCAs: pool}, nil
	}
	src := newMemSource()
	src.add(msgs("t", 1, 1)...)
	r := start(t, opts, src, &testJournal{}, nil)

	waitFor(t, 3*time.Second, "outcome over tls", func() bool { return len(r.outcomes()) == 1 })
	b.dropConnections()
	waitFor(t, 3*time.Second, "second connack", func() bool { return r.countEvents(EventConnected) == 2 })
	if n := loads.Load(); n != 2 {
		t.Errorf("TLS configuration loaded %d times for 2 connects, want once per connect", n)
	}
	if n := len(b.received(packets.PUBLISH)); n != 1 {
		t.Errorf("broker got %d publishes over TLS, want 1", n)
	}
}

func TestTLS_UntrustedCertificateRetries(t *testing.T) {
	cert, _ := selfSignedCert(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	b := serveFakeBroker(t, ln, brokerScript{})
	opts := testOptions(b)
	opts.URLs = []string{"mqtts://" + ln.Addr().String()}
	r := start(t, opts, newMemSource(), &testJournal{}, nil)

	waitFor(t, 3*time.Second, "tls error", func() bool { return r.l.Stats().LastError != "" })
	time.Sleep(300 * time.Millisecond)
	if n := r.countEvents(EventConnected); n != 0 {
		t.Errorf("%d connections with an untrusted certificate, want 0", n)
	}
	if n := len(b.received(packets.CONNECT)); n != 0 {
		t.Errorf("CONNECT sent over an unverified TLS connection")
	}
	if got := r.l.Stats().LastError; !strings.Contains(got, "set broker.tls.ca_file") {
		t.Errorf("last error = %q, want it to name broker.tls.ca_file", got)
	}
}

func TestVerificationHint(t *testing.T) {
	cert, pool := selfSignedCert(t)
	verify := func(opts x509.VerifyOptions) error {
		_, err := cert.Leaf.Verify(opts)
		if err == nil {
			t.Fatal("verification passed, want an error")
		}
		return fmt.Errorf("tls handshake: %w", &tls.CertificateVerificationError{Err: err})
	}
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"unknown authority", verify(x509.VerifyOptions{Roots: x509.NewCertPool()}), "set broker.tls.ca_file"},
		{"other host", verify(x509.VerifyOptions{Roots: pool, DNSName: "broker.example"}), "set broker.tls.server_name"},
		{"expired", verify(x509.VerifyOptions{Roots: pool, CurrentTime: time.Now().Add(48 * time.Hour)}), "renew the broker's certificate"},
		{"reset", fmt.Errorf("tls handshake: %w", &net.OpError{Op: "read", Err: syscall.ECONNRESET}), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := verificationHint(c.err)
			if !errors.Is(got, c.err) {
				t.Errorf("verificationHint does not wrap %v", c.err)
			}
			if c.want == "" && got.Error() != c.err.Error() {
				t.Errorf("verificationHint = %q, want %q unchanged", got, c.err)
			}
			if c.want != "" && !strings.Contains(got.Error(), c.want) {
				t.Errorf("verificationHint = %q, want it to contain %q", got, c.want)
			}
		})
	}
}

func TestRefusalHint(t *testing.T) {
	alert := func(text string) error {
		return &net.OpError{Op: "remote error", Err: errors.New(text)}
	}
	reset := fmt.Errorf("write connect: %w", &net.OpError{Op: "write", Err: syscall.ECONNRESET})
	cases := []struct {
		name       string
		err        error
		tls, cert  bool
		want, omit string
	}{
		{"alert without certificate", alert("tls: certificate required"), true, false, "set broker.tls.cert_file and broker.tls.key_file", ""},
		{"alert about the certificate", alert("tls: unknown certificate authority"), true, true, "rejected the client certificate", ""},
		{"other alert", alert("tls: protocol version not supported"), true, true, "", "broker.tls"},
		{"reset over tls", reset, true, false, "if it requires a client certificate", ""},
		{"reset over tls with certificate", reset, true, true, "check the one in broker.tls.cert_file", ""},
		{"eof over tcp", fmt.Errorf("read connack: %w", io.EOF), false, false, "its log names the cause", "certificate"},
		{"timeout", errConnectTimeout, true, false, "", "before CONNACK"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := refusalHint(c.err, c.tls, c.cert)
			if !errors.Is(got, c.err) {
				t.Errorf("refusalHint does not wrap %v", c.err)
			}
			if c.want != "" && !strings.Contains(got.Error(), c.want) {
				t.Errorf("refusalHint = %q, want it to contain %q", got, c.want)
			}
			if c.omit != "" && strings.Contains(got.Error(), c.omit) {
				t.Errorf("refusalHint = %q, want no %q", got, c.omit)
			}
		})
	}
}

// A mqtts:// url that points at a port without TLS fails the handshake
// with a reset or a closed connection; the error suggests mqtt://.
func TestTLS_PlainPortSuggestsMQTT(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// A plain MQTT listener reads the ClientHello as a bad
			// packet and closes.
			c.Read(make([]byte, 512))
			c.Close()
		}
	}()

	l := &Loop{opts: Options{ConnectTimeout: 5 * time.Second}}
	_, _, err = l.dial(t.Context(), "mqtts://"+ln.Addr().String())
	if err == nil || !strings.Contains(err.Error(), "instead of mqtts://") {
		t.Errorf("dial error %v, want the mqtt:// hint", err)
	}
}
