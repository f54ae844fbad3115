package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"
)

// FileProblems opens every file the configuration names for reading at
// connect time (broker.password_file and the tls.* files) and returns one
// problem for each that cannot be read. When all can be read, it returns
// the problems of the TLS files' contents instead. It checks as the user
// that runs it. Validation calls it only with [LoadOptions.CheckFiles],
// which "config validate" sets to report the problems as errors. "run"
// only warns of them, since a file may be put in place later.
func (c *Config) FileProblems() []string {
	var problems []string
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
			problems = append(problems, fmt.Sprintf("%s: %v: create the file or correct the path, "+
				"and let the user that runs mqspool read it", f.key, err))
		}
	}
	if len(problems) > 0 {
		return problems
	}
	return c.Broker.TLS.contentProblems(time.Now())
}

// contentProblems parses the TLS files as each connect does, and adds a
// client certificate that has expired at now, which the broker rejects.
func (t TLS) contentProblems(now time.Time) []string {
	var problems []string
	if t.CAFile != "" {
		if data, err := os.ReadFile(t.CAFile); err != nil {
			problems = append(problems, fmt.Sprintf("broker.tls.ca_file: %v", err))
		} else if !x509.NewCertPool().AppendCertsFromPEM(data) {
			problems = append(problems, fmt.Sprintf("broker.tls.ca_file: %s holds no PEM certificate: "+
				"give the file with the CA certificate that signed the broker's certificate", t.CAFile))
		}
	}
	if t.CertFile == "" || t.KeyFile == "" {
		return problems
	}
	pair, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return append(problems, fmt.Sprintf("broker.tls.cert_file and key_file: %v: give a PEM certificate "+
			"and the private key that belongs to it", err))
	}
	if leaf := pair.Leaf; leaf != nil && now.After(leaf.NotAfter) {
		problems = append(problems, fmt.Sprintf("broker.tls.cert_file: %s expired at %s: renew it; the daemon reads "+
			"it again at every connect", t.CertFile, leaf.NotAfter.UTC().Format(time.RFC3339)))
	}
	return problems
}

// readable opens path without blocking and reads one byte, so a
// directory or a file without read permission fails as it would at
// connect time. Anything but a regular file is refused before it is
// opened, since opening a FIFO blocks.
func readable(path string) error {
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%s is %s, not a regular file", path, FileKind(info.Mode()))
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.Read(b[:]); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// FileKind names the type of a file that is not a regular one, such as
// "a directory", for errors that reject it.
func FileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device"
	}
	return "a special file"
}
