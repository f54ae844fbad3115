package message

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateTopic(t *testing.T) {
	cases := []struct {
		topic       string
		allowDollar bool
		want        error
	}{
		{"site1/temp", false, nil},
		{"gebäude-3/temp", false, nil},
		{"/leading/slash", false, nil},
		{"", false, ErrTopicEmpty},
		{strings.Repeat("a", MaxTopicBytes+1), false, ErrTopicTooLong},
		{"caf\xe9", false, ErrTopicNotUTF8},
		{"a\x00b", false, ErrTopicNUL},
		{"a/+/b", false, ErrTopicWildcard},
		{"a/#", false, ErrTopicWildcard},
		{"$SYS/x", false, ErrTopicDollar},
		{"$SYS/x", true, nil},
		{"tab\there", false, ErrControlCharacter},
		{"a\x7fb", false, ErrControlCharacter},
		{"a\u0085b", false, ErrControlCharacter},
		{"a\ufdd0b", false, ErrControlCharacter},
		{"a\U0001fffeb", false, ErrControlCharacter},
		{"a\u00a0b", false, nil},
		{"emoji/\U0001f600", false, nil},
	}
	for _, tc := range cases {
		if err := ValidateTopic(tc.topic, tc.allowDollar); !errors.Is(err, tc.want) {
			t.Errorf("ValidateTopic(%.20q, %t) = %v, want %v", tc.topic, tc.allowDollar, err, tc.want)
		}
	}
}

func TestMessage_Validate(t *testing.T) {
	good := Message{Topic: "a/b", QoS: 2, PayloadFormat: PayloadFormatUTF8, Payload: []byte("ok")}
	if err := good.Validate(false); err != nil {
		t.Errorf("valid message: %v", err)
	}
	longest := strings.Repeat("x", 65535)
	atLimit := Message{Topic: "a", ContentType: longest, CorrelationData: []byte(longest),
		UserProperties: []UserProperty{{Key: longest, Value: longest}}}
	if err := atLimit.Validate(false); err != nil {
		t.Errorf("message with 65535-byte strings: %v", err)
	}

	cases := map[string]Message{
		"qos 3":               {Topic: "a", QoS: 3},
		"utf8 payload wrong":  {Topic: "a", PayloadFormat: PayloadFormatUTF8, Payload: []byte{0xff}},
		"bad response topic":  {Topic: "a", ResponseTopic: "r/#"},
		"wildcard topic":      {Topic: "a/+"},
		"property not utf8":   {Topic: "a", UserProperties: []UserProperty{{Key: "k", Value: "\xff"}}},
		"escape in property":  {Topic: "a", UserProperties: []UserProperty{{Key: "k", Value: "\x1b[31m"}}},
		"bell in name":        {Topic: "a", UserProperties: []UserProperty{{Key: "k\a", Value: "v"}}},
		"nul in value":        {Topic: "a", UserProperties: []UserProperty{{Key: "k", Value: "a\x00"}}},
		"newline in type":     {Topic: "a", ContentType: "text/plain\n"},
		"control in reply":    {Topic: "a", ResponseTopic: "r\x01"},
		"long property value": {Topic: "a", UserProperties: []UserProperty{{Key: "k", Value: strings.Repeat("v", 65536)}}},
		"long property name":  {Topic: "a", UserProperties: []UserProperty{{Key: strings.Repeat("k", 65536), Value: "v"}}},
		"long content type":   {Topic: "a", ContentType: strings.Repeat("t", 65536)},
		"long correlation":    {Topic: "a", CorrelationData: make([]byte, 65536)},
	}
	for name, m := range cases {
		if err := m.Validate(false); err == nil {
			t.Errorf("%s: Validate succeeded, want an error", name)
		}
	}
}

func TestMessage_Size(t *testing.T) {
	m := Message{Topic: "ab", Payload: []byte("123"), UserProperties: []UserProperty{{"k", "vv"}}}
	if got := m.Size(); got != 8 {
		t.Errorf("Size = %d, want 8", got)
	}
}

// A long string is cut in an error message, never inside a character,
// and its full length is given.
func TestQuoteShort_CutsLongStrings(t *testing.T) {
	if got := QuoteShort("site1/temp"); got != `"site1/temp"` {
		t.Errorf("short string quoted as %s", got)
	}

	long := strings.Repeat("a", quoteMax-1) + "é" + strings.Repeat("b", 65000)
	got := QuoteShort(long)
	want := `"` + strings.Repeat("a", quoteMax-1) + `"... (65201 bytes)`
	if got != want {
		t.Errorf("long string quoted as %.80s...%s, want %.80s...%s", got, got[len(got)-24:], want, want[len(want)-24:])
	}
}
