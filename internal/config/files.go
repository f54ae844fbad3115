package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// FileProblems opens every file the configuration names for reading at
// connect time (broker.password_file and the tls.* files) and returns one
// problem for each that cannot be read. It checks as the user that runs
// it. Validate does not call it: "run" only warns, since the file may be
// put in place later, while "config validate" reports it as an error
// ([LoadOptions.CheckFiles]).
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
		return fmt.Errorf("%s is %s, not a regular file", path, kindOf(info.Mode()))
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

func kindOf(m os.FileMode) string {
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
