package config

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// CheckFiles opens every file the configuration names for reading at
// connect time (broker.password_file and the tls.* files) and returns
// all that cannot be read, wrapping ErrInvalid. It checks as the user
// that runs it. Validate does not call it: "run" must not stop on a file
// that may be put in place later, while "config validate" reports it.
func (c *Config) CheckFiles() error {
	var v validator
	for _, f := range []struct{ key, path string }{
		{"broker.password_file", c.Broker.PasswordFile},
		{"broker.tls.ca_file", c.Broker.TLS.CAFile},
		{"broker.tls.cert_file", c.Broker.TLS.CertFile},
		{"broker.tls.key_file", c.Broker.TLS.KeyFile},
	} {
		if f.path == "" {
			continue
		}
		if err := readable(f.path); err != nil {
			v.addf("%s: %v: create the file or correct the path, and let the user that runs mqspool read it", f.key, err)
		}
	}
	return v.err()
}

// readable opens path and reads one byte, so a directory or a file
// without read permission fails as it would at connect time.
func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.Read(b[:]); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}
