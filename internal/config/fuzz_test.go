package config

import "testing"

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
