package format

import (
	"bytes"
	"reflect"
	"testing"
)

func FuzzParseMsg(f *testing.F) {
	f.Add([]byte("Topic: a/b\nQoS: 1\n\npayload"))
	f.Add([]byte("topic: x\r\nUser-Property: a=b\r\nCorrelation-Data: AQ==\r\n\r\n"))
	f.Add([]byte("\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, _, err := ParseMsg(data)
		if err != nil {
			return
		}
		if m.Topic != "" {
			if verr := m.Validate(true); verr != nil {
				t.Fatalf("accepted message is invalid: %v", verr)
			}
		}

		// A parsed message written back must parse to the same message,
		// unless its values cannot be written, which WriteMsg reports.
		var buf bytes.Buffer
		if err := WriteMsg(&buf, m); err != nil {
			return
		}
		again, _, err := ParseMsg(buf.Bytes())
		if err != nil {
			t.Fatalf("rewritten message does not parse: %v\n%q", err, buf.Bytes())
		}
		if !reflect.DeepEqual(normalize(again), normalize(m)) {
			t.Fatalf("round trip changed the message: %+v -> %+v", m, again)
		}
	})
}

func FuzzParseJSONL(f *testing.F) {
	f.Add([]byte(`{"topic":"a","payload":"x","qos":1,"user_properties":[["k","v"]]}` + "\n"))
	f.Add([]byte(`{"payload_base64":"AA=="}` + "\r\n\n" + `{"payload":""}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := ParseJSONL(data)
		if err != nil {
			return
		}
		if len(entries) == 0 {
			t.Fatal("no entries and no error")
		}
		for _, e := range entries {
			if e.Message.Topic == "" {
				continue
			}
			if verr := e.Message.Validate(true); verr != nil {
				t.Fatalf("line %d accepted but invalid: %v", e.Line, verr)
			}
		}

		// Parsing on from any entry's end gives the entries after it.
		mid := entries[len(entries)/2]
		var rest []Entry
		if err := EachJSONL(data[mid.End:], mid.Line, func(e Entry) error {
			e.End += mid.End
			rest = append(rest, e)
			return nil
		}); err != nil {
			t.Fatalf("parsing on from line %d: %v", mid.Line, err)
		}
		if want := entries[len(entries)/2+1:]; !reflect.DeepEqual(normalizeEntries(rest), normalizeEntries(want)) {
			t.Fatalf("parsing on from line %d gave %+v, want %+v", mid.Line, rest, want)
		}
	})
}

func normalizeEntries(entries []Entry) []Entry {
	if len(entries) == 0 {
		return nil
	}
	return entries
}

func FuzzTopicFromPath(f *testing.F) {
	f.Add("a/b/c.json")
	f.Add("../x")
	f.Add("f")
	f.Fuzz(func(t *testing.T, rel string) {
		topic, err := TopicFromPath(rel)
		if err != nil {
			return
		}
		if err := CheckName(rel); err != nil {
			t.Fatalf("accepted %q but CheckName rejects it: %v", rel, err)
		}
		if topic == "" || len(topic) >= len(rel) || rel[:len(topic)+1] != topic+"/" {
			t.Fatalf("topic %q is not the directory of %q", topic, rel)
		}
	})
}

// normalize makes nil and empty slices compare equal.
func normalize(m any) any {
	v := reflect.ValueOf(m)
	out := reflect.New(v.Type()).Elem()
	out.Set(v)
	for i := 0; i < out.NumField(); i++ {
		f := out.Field(i)
		if f.Kind() == reflect.Slice && f.Len() == 0 {
			f.Set(reflect.Zero(f.Type()))
		}
	}
	return out.Interface()
}

// FuzzParseJSONLine checks the .jsonl line decoder against the
// reflection-based decoder it replaced: for any line both must give the
// same message, fields and error text.
func FuzzParseJSONLine(f *testing.F) {
	for _, line := range jsonLineSeeds {
		f.Add([]byte(line))
	}
	var d lineDecoder
	f.Fuzz(func(t *testing.T, line []byte) {
		got, gotFields, gotErr := d.parseLine(line)
		want, wantFields, wantErr := refParseJSONLine(line)
		if (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("line %q: error %v, reference error %v", line, gotErr, wantErr)
		}
		if gotErr != nil {
			if gotErr.Error() != wantErr.Error() {
				t.Fatalf("line %q: error\n%v\nreference error\n%v", line, gotErr, wantErr)
			}
			return
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("line %q: message %+v, reference message %+v", line, got, want)
		}
		if gotFields != wantFields {
			t.Fatalf("line %q: fields %+v, reference fields %+v", line, gotFields, wantFields)
		}
	})
}

// jsonLineSeeds are lines for FuzzParseJSONLine: valid lines and lines
// that break each rule of the decoder.
var jsonLineSeeds = []string{
	`{"topic":"a","payload":"x","qos":1,"user_properties":[["k","v"]]}`,
	`{"payload_base64":"AA=="}`,
	`{"payload":""}`,
	`{"topic":"a/b","payload":"hi","qos":2,"retain":true,"expiry":30,"content_type":"text/plain",` +
		`"response_topic":"r","correlation_data_base64":"AQ==","payload_format":"utf8",` +
		`"user_properties":[["k","1"],["k","2"]]}`,
	`{"payload":"a\"b\\c\/d\b\f\n\r\tz\u00e9\ud83d\ude00"}`,
	`{"payload":"\u0000"}`,
	`{"topic":"\u0000","payload":""}`,
	`{"payload":"\ud800"}`,
	`{"payload":"\udc00\ud800"}`,
	"{\"payload\":\"\xff\"}",
	"{\"payload\":\"\xed\xa0\x80\"}",
	`{"\u0070ayload":"x"}`,
	`{"payload":"x","payload":"y"}`,
	`{"payload":"x","qos":1,"qos":1}`,
	`{"payload":null,"payload":"x"}`,
	`{"colour":1,"colour":2}`,
	`{"TOPIC":"a","payload":"x"}`,
	`{"topic":null,"payload":"x"}`,
	`{"payload":"x","qos":null,"retain":null,"expiry":null}`,
	`{"payload":"x","user_properties":null}`,
	`{"payload":"x","user_properties":[null]}`,
	`{"payload":"x","user_properties":[["k",null]]}`,
	`{"payload":"x","user_properties":[[null,null]]}`,
	`{"payload":"x","user_properties":[["k"]]}`,
	`{"payload":"x","user_properties":[["k","v","w"]]}`,
	`{"payload":"x","user_properties":[]}`,
	`{"payload":"x","user_properties":[[]]}`,
	`{"payload":"x","user_properties":[["","v"]]}`,
	`{"payload":"x","user_properties":[["k",1]]}`,
	`{"payload":"x","user_properties":{"k":"v"}}`,
	`{"payload":"x","user_properties":[["k","v"],{"a":1,"a":2}]}`,
	`{"payload":"x","qos":1.0}`,
	`{"payload":"x","qos":1e0}`,
	`{"payload":"x","qos":1e2}`,
	`{"payload":"x","qos":-0}`,
	`{"payload":"x","qos":01}`,
	`{"payload":"x","qos":1.5}`,
	`{"payload":"x","qos":-1}`,
	`{"payload":"x","qos":"1"}`,
	`{"payload":"x","qos":99999999999999999999}`,
	`{"payload":"x","qos":99999999999999999999.5}`,
	`{"payload":"x","expiry":4294967295}`,
	`{"payload":"x","expiry":4294967296}`,
	`{"payload":"x","expiry":-9223372036854775808}`,
	`{"payload":"x","expiry":9223372036854775808}`,
	`{"payload":"x","retain":1}`,
	`{"payload":"x","retain":[1,}`,
	`{"payload":"x","topic":[1,}`,
	`{"payload":"x","topic":{"a":1,"a":2}}`,
	`{"payload":"x","topic":{"nested":[{"deep":[]}]}}`,
	`{"payload":"x"} {"payload":"y"}`,
	`{"payload":"x"}}`,
	`{"payload":"x"} "` + "\xff" + `"`,
	`{"payload":"x"} `,
	`{"payload":"x",}`,
	`{"payload":"x"`,
	`{"payload"`,
	"\xEF\xBB\xBF{\"payload\":\"x\"}",
	"\r",
	` `,
	`null`,
	`null x`,
	`[1]`,
	`"x"`,
	`1`,
	`true`,
	`{}`,
	`{"payload":"x","payload_base64":"eA=="}`,
	`{"payload_base64":"%%"}`,
	`{"payload_base64":"eA"}`,
	`{"payload":"x","correlation_data_base64":"=="}`,
	`{"payload":"x","payload_format":"text"}`,
	`{"payload":"x","response_topic":"a/+"}`,
	`{"payload":"x","content_type":"\u0001"}`,
	`{"payload":"","topic":"a/#"}`,
}
