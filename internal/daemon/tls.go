package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/mqspool/mqspool/internal/config"
)

// tlsConfigFunc returns a function that reads the CA, certificate and key
// files on every call, so a rotated certificate is used on the next
// connect without a restart.
func tlsConfigFunc(t config.TLS) func() (*tls.Config, error) {
	return func() (*tls.Config, error) {
		c := &tls.Config{
			MinVersion: tls.VersionTLS12,
			ServerName: t.ServerName,
			NextProtos: t.ALPN,
		}
		if t.CAFile != "" {
			pem, err := os.ReadFile(t.CAFile)
			if err != nil {
				return nil, fmt.Errorf("read broker.tls.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("broker.tls.ca_file %s contains no PEM certificate: point it at the CA that signed the broker's certificate", t.CAFile)
			}
			c.RootCAs = pool
		}
		if t.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("load client certificate %s with key %s: %w", t.CertFile, t.KeyFile, err)
			}
			c.Certificates = []tls.Certificate{cert}
		}
		return c, nil
	}
}
