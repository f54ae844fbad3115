package test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mqspool/mqspool/test/harness"
)

// opsTLSConfig returns a broker section for url with the given tls keys.
func opsTLSConfig(url, tlsKeys string) string {
	return fmt.Sprintf("broker:\n  urls: [%s]\n  client_id: mqspool-t\n  keep_alive: 5s\n  connect_timeout: 3s\n  tls:\n%s", url, tlsKeys)
}

// TestOpsTLS_TrustedCA forwards over mqtts:// with the broker's CA in
// broker.tls.ca_file and server_name set to a name in its certificate.
func TestOpsTLS_TrustedCA(t *testing.T) {
	b := harness.StartTLSBroker(t, false)
	sub := harness.Subscribe(t, b.Addr(), "tls/#", 1)
	d := harness.NewDaemon(t, "", opsTLSConfig(b.TLSURL(),
		"    ca_file: "+b.CA.CertFile+"\n    server_name: localhost\n"))
	d.DumpOnFailure()
	d.Start()

	d.Drop("tls/ok/1.txt", []byte("over tls"))
	sub.WaitCount(1, 10*time.Second)
	if got := string(sub.Messages()[0].Payload); got != "over tls" {
		t.Errorf("payload %q, want %q", got, "over tls")
	}
}

// TestOpsTLS_WrongCA checks that an untrusted broker certificate gives a
// clear error and reconnects with backoff rather than in a tight loop.
func TestOpsTLS_WrongCA(t *testing.T) {
	b := harness.StartTLSBroker(t, false)
	other := harness.NewCA(t, "other")
	// Every retry waits at least min_delay, so a window of 4s allows at
	// most 9 attempts; a storm would be hundreds.
	const window, minDelay = 4 * time.Second, 500 * time.Millisecond
	d := harness.NewDaemon(t, "", opsTLSConfig(b.TLSURL(), "    ca_file: "+other.CertFile+"\n")+
		"reconnect:\n  min_delay: 500ms\n  max_delay: 1s\n")
	d.DumpOnFailure()
	d.Start()

	start := time.Now()
	time.Sleep(window) // count attempts over a fixed span
	log := d.Log()
	elapsed := time.Since(start) + time.Second // the start before Start returned
	if !strings.Contains(log, "certificate signed by unknown authority") {
		t.Errorf("log does not name the untrusted certificate:\n%s", log)
	}
	attempts := strings.Count(log, "msg=connecting")
	if limit := int(elapsed/minDelay) + 1; attempts < 2 || attempts > limit {
		t.Errorf("%d connect attempts in %s, want between 2 and %d (backoff)", attempts, elapsed, limit)
	}
	if n := strings.Count(log, "certificate signed by unknown authority"); n >= attempts {
		t.Errorf("the same TLS error logged %d times for %d attempts, want repeats suppressed", n, attempts)
	}
	if st := opsStatus(t, d); !strings.Contains(fmt.Sprint(st["last_error"]), "unknown authority") {
		t.Errorf("status last_error = %v, want the TLS error", st["last_error"])
	}
}

// TestOpsTLS_Mutual checks that a broker requiring client certificates
// accepts the configured one, rejects a client without one, and that a
// rotated certificate is used on the next connect.
func TestOpsTLS_Mutual(t *testing.T) {
	b := harness.StartTLSBroker(t, true)
	sub := harness.Subscribe(t, b.Addr(), "mtls/#", 1)
	certFile, keyFile := b.CA.Issue("gateway-a", "", "")
	d := harness.NewDaemon(t, "", opsTLSConfig(b.TLSURL(), fmt.Sprintf(
		"    ca_file: %s\n    cert_file: %s\n    key_file: %s\n", b.CA.CertFile, certFile, keyFile)))
	d.DumpOnFailure()
	d.Start()

	d.Drop("mtls/a/1.txt", []byte("from a"))
	sub.WaitCount(1, 10*time.Second)
	if !b.Contains("u'gateway-a'") {
		t.Errorf("broker log does not show the client certificate's name gateway-a:\n%s", b.Log())
	}

	// Rotate: new certificate and key in the same files, then reconnect.
	b.CA.Issue("gateway-b", certFile, keyFile)
	opsCtl(t, d, "reconnect")
	harness.WaitFor(t, 10*time.Second, "a connection as gateway-b", func() bool { return b.Contains("u'gateway-b'") })
	d.Drop("mtls/b/2.txt", []byte("from b"))
	sub.WaitCount(2, 10*time.Second)
}

// TestOpsTLS_MutualRejected checks that a broker requiring client
// certificates turns away a daemon without one and that the attempt is
// logged as failed.
func TestOpsTLS_MutualRejected(t *testing.T) {
	b := harness.StartTLSBroker(t, true)
	d := harness.NewDaemon(t, "", opsTLSConfig(b.TLSURL(), "    ca_file: "+b.CA.CertFile+"\n"))
	d.DumpOnFailure()
	d.Start()

	harness.WaitFor(t, 10*time.Second, "a failed connect", func() bool {
		return strings.Contains(d.Log(), "connect failed")
	})
	st := opsStatus(t, d)
	if st["connected"] != false {
		t.Errorf("status connected = %v without a client certificate, want false", st["connected"])
	}
	// The broker replies with an alert or, when the client's CONNECT
	// crosses it, with a reset. Either way the error must name the fix.
	if msg := fmt.Sprint(st["last_error"]); !strings.Contains(msg, "client certificate") || !strings.Contains(msg, "set broker.tls.cert_file and broker.tls.key_file") {
		t.Errorf("status last_error = %q, want it to ask for broker.tls.cert_file and key_file", msg)
	}
}

// TestOpsTLS_ClientCertUntrusted checks that a client certificate the
// broker does not trust is named as the cause, not the broker's own.
func TestOpsTLS_ClientCertUntrusted(t *testing.T) {
	b := harness.StartTLSBroker(t, true)
	certFile, keyFile := harness.NewCA(t, "other").Issue("gateway-x", "", "")
	d := harness.NewDaemon(t, "", opsTLSConfig(b.TLSURL(), fmt.Sprintf(
		"    ca_file: %s\n    cert_file: %s\n    key_file: %s\n", b.CA.CertFile, certFile, keyFile)))
	d.DumpOnFailure()
	d.Start()

	harness.WaitFor(t, 10*time.Second, "a failed connect", func() bool {
		return strings.Contains(d.Log(), "connect failed")
	})
	log := d.Log()
	if !strings.Contains(log, "client certificate") || !strings.Contains(log, "broker.tls.cert_file") {
		t.Errorf("log does not name the client certificate in broker.tls.cert_file as the cause:\n%s", log)
	}
}

// TestOpsTLS_ServerNameALPN checks that broker.tls.server_name and
// broker.tls.alpn reach the ClientHello.
func TestOpsTLS_ServerNameALPN(t *testing.T) {
	r := harness.StartHelloRecorder(t)
	d := harness.NewDaemon(t, "", opsTLSConfig(r.URL(),
		"    server_name: broker.example\n    alpn: [x-amzn-mqtt-ca, mqtt]\n"))
	d.DumpOnFailure()
	d.Start()

	harness.WaitFor(t, 10*time.Second, "a ClientHello", func() bool { return len(r.Hellos()) > 0 })
	h := r.Hellos()[0]
	if h.ServerName != "broker.example" {
		t.Errorf("SNI %q, want broker.example", h.ServerName)
	}
	if !slices.Equal(h.ALPN, []string{"x-amzn-mqtt-ca", "mqtt"}) {
		t.Errorf("ALPN %q, want [x-amzn-mqtt-ca mqtt]", h.ALPN)
	}
}

// TestOpsTLS_CAFileAppearsLater starts the daemon before its CA file
// exists, as when a provisioning job writes it after boot. The daemon
// warns and keeps running, and the next connect after the file appears
// uses it.
func TestOpsTLS_CAFileAppearsLater(t *testing.T) {
	b := harness.StartTLSBroker(t, false)
	sub := harness.Subscribe(t, b.Addr(), "tls/#", 1)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	d := harness.NewDaemon(t, "", opsTLSConfig(b.TLSURL(), "    ca_file: "+ca+"\n    server_name: localhost\n")+
		"reconnect:\n  min_delay: 200ms\n  max_delay: 500ms\n")
	d.DumpOnFailure()
	d.Start()
	d.Drop("tls/later/1.txt", []byte("after the CA"))

	harness.WaitFor(t, 5*time.Second, "warning about the missing CA file", func() bool {
		return strings.Contains(d.Log(), "unreadable or invalid") && strings.Contains(d.Log(), "broker.tls.ca_file")
	})
	if !d.Running() {
		t.Fatal("the daemon stopped on a missing CA file")
	}

	pem, err := os.ReadFile(b.CA.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ca, pem, 0o644); err != nil {
		t.Fatal(err)
	}
	sub.WaitCount(1, 10*time.Second)
}
