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
