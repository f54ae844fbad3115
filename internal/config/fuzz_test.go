package config

import (
	"strings"
	"testing"
)

func FuzzParseByteSize(f *testing.F) {
	for _, s := range []string{"0", "4096", "64KiB", "1.5GiB", "100kB", "2 MB", "-1", "1e400", "KiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseByteSize(s)
		if err != nil {
			return
		}
		if b < 0 {
			t.Fatalf("ParseByteSize(%q) = %d, a negative size", s, b)
		}
		// What String prints must parse back to the same size.
		if again, err := ParseByteSize(b.String()); err != nil || again != b {
			t.Fatalf("ParseByteSize(%q) = %d, but its String %q parses to %d, %v", s, b, b.String(), again, err)
		}
	})
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"100/s", "64KiB/s", "off", "0", "1.5/s", "/s", "-3/s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRate(s)
		if err != nil {
			return
		}
		if r.MessagesPerSecond < 0 || r.BytesPerSecond < 0 {
			t.Fatalf("ParseRate(%q) = %+v, a negative rate", s, r)
		}
	})
}

// FuzzValidateBrokerURL_HidesUserinfo checks that no error shows the text
// before the last "@", and that no accepted URL contains a "@" at all, so
// the URLs the daemon logs later carry no user information.
func FuzzValidateBrokerURL_HidesUserinfo(f *testing.F) {
	for _, s := range [][2]string{{"mqtt://u:", "host:1883"}, {"gw:", "127.0.0.1:1"}, {"mqtt:/", "h:1"}, {"", "h"}, {"mqtt://", "h:1/x?y#z"}} {
		f.Add(s[0], s[1])
	}
	const secret = "S3CR3T"
	f.Fuzz(func(t *testing.T, prefix, suffix string) {
		if strings.Contains(prefix, secret) || strings.ContainsAny(suffix, "@") || strings.Contains(suffix, secret) {
			return
		}
		raw := prefix + secret + "@" + suffix
		err := ValidateBrokerURL(raw)
		if err == nil {
			t.Fatalf("ValidateBrokerURL(%q) accepted a URL with a \"@\"", raw)
		}
		if strings.Contains(err.Error(), secret) {
			t.Fatalf("ValidateBrokerURL(%q) shows the user information: %v", raw, err)
		}
	})
}
