package message

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidateFilter(t *testing.T) {
	cases := []struct {
		filter string
		want   error
	}{
		{"a/#", nil},
		{"#", nil},
		{"+", nil},
		{"+/x/+", nil},
		{"/", nil},
		{"a//b", nil},
		{"$share/g/a/#", nil},
		{"$share/g/#", nil},
		{"$share/g//", nil},
		{"$SYS/#", nil},
		{"$share", nil},
		{"gebäude/+/temp", nil},
		{strings.Repeat("a", MaxTopicBytes), nil},
		{"", ErrFilterEmpty},
		{strings.Repeat("a", MaxTopicBytes+1), ErrFilterTooLong},
		{strings.Repeat("a/", 35000), ErrFilterTooLong},
		{"caf\xe9", ErrFilterNotUTF8},
		{"a\x00b", ErrFilterNUL},
		{"sw/#/a", ErrFilterHash},
		{"#/x", ErrFilterHash},
		{"a/b#", ErrFilterHash},
		{"a/#/", ErrFilterHash},
		{"##", ErrFilterHash},
		{"sw/a+/x", ErrFilterPlus},
		{"+a", ErrFilterPlus},
		{"a/++", ErrFilterPlus},
		{"$share/g", ErrShareFilter},
		{"$share/g/", ErrShareFilter},
		{"$share//x", ErrShareName},
		{"$share/", ErrShareName},
		{"$share/g+/x", ErrShareName},
		{"$share/#/x", ErrShareName},
		{"$share/g/a/#/b", ErrFilterHash},
		{"$share/g/a+", ErrFilterPlus},
	}
	for _, tc := range cases {
		if err := ValidateFilter(tc.filter); !errors.Is(err, tc.want) {
			t.Errorf("ValidateFilter(%.30q) = %v, want %v", tc.filter, err, tc.want)
		}
	}
}

func FuzzValidateFilter(f *testing.F) {
	for _, s := range []string{"a/#", "#", "+/x/+", "$share/g/a/#", "$SYS/#", "sw/#/a", "sw/a+/x",
		"#/x", "a\x00b", "$share/g", "$share//x", "a//+", "caf\xe9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, filter string) {
		if ValidateFilter(filter) != nil {
			return
		}
		checkAcceptedFilter(t, filter)
	})
}

// checkAcceptedFilter fails t unless filter obeys every rule of a topic
// filter, checked character by character rather than level by level.
func checkAcceptedFilter(t *testing.T, filter string) {
	t.Helper()
	if len(filter) < 1 || len(filter) > MaxTopicBytes {
		t.Fatalf("accepted %q with %d bytes", filter, len(filter))
	}
	if !utf8.ValidString(filter) || strings.ContainsRune(filter, 0) {
		t.Fatalf("accepted %q, which is not valid UTF-8 without U+0000", filter)
	}
	if rest, ok := strings.CutPrefix(filter, sharePrefix); ok {
		slash := strings.IndexByte(rest, '/')
		if slash < 1 || slash == len(rest)-1 || strings.ContainsAny(rest[:slash], "+#") {
			t.Fatalf("accepted shared subscription %q without a valid share name and filter", filter)
		}
		filter = rest[slash+1:]
	}
	for i := 0; i < len(filter); i++ {
		c := filter[i]
		if c != '+' && c != '#' {
			continue
		}
		startsLevel := i == 0 || filter[i-1] == '/'
		endsLevel := i == len(filter)-1 || filter[i+1] == '/'
		if !startsLevel || !endsLevel {
			t.Fatalf("accepted %q with %c inside a level at byte %d", filter, c, i)
		}
		if c == '#' && i != len(filter)-1 {
			t.Fatalf("accepted %q with # before the last level", filter)
		}
	}
}
