package format

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/mqspool/mqspool/internal/message"
)

// jsonField is a bit that marks a .jsonl field as present in a line.
type jsonField uint16

const (
	fieldTopic jsonField = 1 << iota
	fieldPayload
	fieldPayloadBase64
	fieldQoS
	fieldRetain
	fieldExpiry
	fieldContentType
	fieldResponseTopic
	fieldCorrelationDataBase64
	fieldPayloadFormat
)

// jsonLine is one decoded .jsonl line. A field whose bit is not in set
// was absent or null. The base64 fields alias the decoder's buffers and
// are valid until the next line.
type jsonLine struct {
	set                   jsonField
	topic                 string
	payload               []byte
	payloadBase64         []byte
	qos                   int64
	retain                bool
	expiry                int64
	contentType           string
	responseTopic         string
	correlationDataBase64 []byte
	payloadFormat         string
	userProperties        []jsonProperty
}

// jsonProperty is one element of user_properties. valid is false unless
// the element is an array of exactly two strings.
type jsonProperty struct {
	key, value string
	valid      bool
}

// lineDecoder decodes .jsonl lines one after another. It walks the
// tokens of each line with a jsontext.Decoder, which checks the JSON
// syntax, the UTF-8 and duplicate member names, and it reuses its
// buffers from line to line.
//
// Its rules and errors are those of json.Unmarshal with
// RejectUnknownMembers into a struct of pointer fields: member names
// match exactly, null leaves a field absent, and the first error in the
// text wins. It reads each value with the same decoder calls as
// json.Unmarshal, so a line with a type error and a syntax error reports
// the same one of the two.
type lineDecoder struct {
	input jsontext.Decoder
	text  bytes.Buffer

	unquoted              []byte
	payloadBase64Buffer   []byte
	correlationDataBuffer []byte
	properties            []jsonProperty
}

// parseLine decodes and checks one object.
func (d *lineDecoder) parseLine(text []byte) (message.Message, Fields, error) {
	j, err := d.decodeLine(text)
	if err != nil {
		return message.Message{}, Fields{}, decodeError(err)
	}
	return j.message()
}

// decodeLine decodes one line into a jsonLine. A line of JSON null is an
// object without members, as json.Unmarshal takes it.
func (d *lineDecoder) decodeLine(text []byte) (jsonLine, error) {
	d.text = *bytes.NewBuffer(text)
	d.input.Reset(&d.text)
	j := jsonLine{userProperties: d.properties[:0]}

	tok, err := d.input.ReadToken()
	switch {
	case err == io.EOF:
		// The line holds only JSON whitespace, such as a lone CR.
		end := d.input.InputOffset() + int64(len(d.input.UnreadBuffer()))
		return j, &jsontext.SyntacticError{ByteOffset: end, Err: io.ErrUnexpectedEOF}
	case err != nil:
		return j, err
	case tok.Kind() == '{':
		if err := d.decodeMembers(&j); err != nil {
			return j, err
		}
	case tok.Kind() != 'n':
		return j, d.typeError(tok.Kind(), nil)
	}
	if _, err := d.input.ReadToken(); err != io.EOF {
		return j, errTextAfter
	}
	d.properties = j.userProperties
	return j, nil
}

// decodeMembers decodes the members of the line's object up to and
// including its closing brace.
func (d *lineDecoder) decodeMembers(j *jsonLine) error {
	for d.input.PeekKind() != '}' {
		name, err := d.input.ReadValue()
		if err != nil {
			return err
		}
		d.unquoted, err = jsontext.AppendUnquote(d.unquoted[:0], name)
		if err != nil {
			return err
		}
		if err := d.decodeMember(j, d.unquoted); err != nil {
			return err
		}
	}
	_, err := d.input.ReadToken()
	return err
}

// decodeMember decodes the value of the member name into j.
func (d *lineDecoder) decodeMember(j *jsonLine, name []byte) error {
	var field jsonField
	var present bool
	var err error
	switch string(name) {
	case "topic":
		field = fieldTopic
		present, err = d.decodeString(&j.topic)
	case "payload":
		field = fieldPayload
		present, err = d.decodeBytes(&j.payload, nil)
	case "payload_base64":
		field = fieldPayloadBase64
		present, err = d.decodeBytes(&j.payloadBase64, d.payloadBase64Buffer[:0])
		d.payloadBase64Buffer = j.payloadBase64
	case "qos":
		field = fieldQoS
		present, err = d.decodeInt(&j.qos)
	case "retain":
		field = fieldRetain
		present, err = d.decodeBool(&j.retain)
	case "expiry":
		field = fieldExpiry
		present, err = d.decodeInt(&j.expiry)
	case "content_type":
		field = fieldContentType
		present, err = d.decodeString(&j.contentType)
	case "response_topic":
		field = fieldResponseTopic
		present, err = d.decodeString(&j.responseTopic)
	case "correlation_data_base64":
		field = fieldCorrelationDataBase64
		present, err = d.decodeBytes(&j.correlationDataBase64, d.correlationDataBuffer[:0])
		d.correlationDataBuffer = j.correlationDataBase64
	case "payload_format":
		field = fieldPayloadFormat
		present, err = d.decodeString(&j.payloadFormat)
	case "user_properties":
		j.userProperties, err = d.decodeProperties(j.userProperties[:0])
	default:
		return d.typeError('"', json.ErrUnknownName)
	}
	if present {
		j.set |= field
	}
	return err
}

// readString reads a string value, or a null, for which present is
// false. The value is quoted and valid until the next read.
func (d *lineDecoder) readString() (val jsontext.Value, present bool, err error) {
	if null, err := d.readNull(); null || err != nil {
		return nil, false, err
	}
	val, err = d.input.ReadValue()
	if err != nil {
		return nil, false, err
	}
	if val.Kind() != '"' {
		return nil, false, d.typeError(val.Kind(), nil)
	}
	return val, true, nil
}

// readNull reads the next value when it is a null, which leaves a field
// absent, and reports whether it was one.
func (d *lineDecoder) readNull() (bool, error) {
	if d.input.PeekKind() != 'n' {
		return false, nil
	}
	_, err := d.input.ReadToken()
	return true, err
}

func (d *lineDecoder) decodeString(dst *string) (bool, error) {
	val, present, err := d.readString()
	if !present {
		return false, err
	}
	d.unquoted, err = jsontext.AppendUnquote(d.unquoted[:0], val)
	*dst = string(d.unquoted)
	return true, err
}

// decodeBytes unquotes a string value into buf, or into a new slice of
// the right size when buf is nil, and stores the result in dst.
func (d *lineDecoder) decodeBytes(dst *[]byte, buf []byte) (bool, error) {
	val, present, err := d.readString()
	if !present {
		return false, err
	}
	if buf == nil {
		buf = make([]byte, 0, len(val)) // jsontext.AppendUnquote grows to len(val) first
	}
	*dst, err = jsontext.AppendUnquote(buf, val)
	return true, err
}

// decodeInt decodes a whole number that fits an int64. It takes the
// numbers json.Unmarshal takes for an int64: digits with an optional
// minus sign, so -0 is 0 but 1.0 and 1e2 are errors.
func (d *lineDecoder) decodeInt(dst *int64) (bool, error) {
	if null, err := d.readNull(); null || err != nil {
		return false, err
	}
	val, err := d.input.ReadValue()
	if err != nil {
		return false, err
	}
	if val.Kind() != '0' {
		return false, d.typeError(val.Kind(), nil)
	}
	n, err := parseInt64(val)
	if err != nil {
		return false, d.typeError('0', err)
	}
	*dst = n
	return true, nil
}

func (d *lineDecoder) decodeBool(dst *bool) (bool, error) {
	if null, err := d.readNull(); null || err != nil {
		return false, err
	}
	tok, err := d.input.ReadToken()
	if err != nil {
		return false, err
	}
	if k := tok.Kind(); k != 't' && k != 'f' {
		return false, d.typeError(k, nil)
	}
	*dst = tok.Bool()
	return true, nil
}

// decodeProperties decodes user_properties, an array of string arrays,
// appending its elements to props. null gives no properties.
func (d *lineDecoder) decodeProperties(props []jsonProperty) ([]jsonProperty, error) {
	tok, err := d.input.ReadToken()
	if err != nil {
		return props, err
	}
	switch tok.Kind() {
	case 'n':
		return props, nil
	case '[':
	default:
		return props, d.typeError(tok.Kind(), nil)
	}
	for d.input.PeekKind() != ']' {
		p, err := d.decodeProperty()
		if err != nil {
			return props, err
		}
		props = append(props, p)
	}
	_, err = d.input.ReadToken()
	return props, err
}

// decodeProperty decodes one element of user_properties. It is valid
// only if it is an array of exactly two strings.
func (d *lineDecoder) decodeProperty() (jsonProperty, error) {
	var p jsonProperty
	tok, err := d.input.ReadToken()
	if err != nil {
		return p, err
	}
	switch tok.Kind() {
	case 'n':
		return p, nil
	case '[':
	default:
		return p, d.typeError(tok.Kind(), nil)
	}
	n, stringCount := 0, 0
	for ; d.input.PeekKind() != ']'; n++ {
		var s string
		present, err := d.decodeString(&s)
		if err != nil {
			return p, err
		}
		if present {
			stringCount++
		}
		switch n {
		case 0:
			p.key = s
		case 1:
			p.value = s
		}
	}
	p.valid = n == 2 && stringCount == 2
	_, err = d.input.ReadToken()
	return p, err
}

// typeError reports a value of the kind k where the field takes another
// kind, or err about the value, the way json.Unmarshal does.
func (d *lineDecoder) typeError(k jsontext.Kind, err error) error {
	return &json.SemanticError{JSONPointer: d.input.StackPointer(), JSONKind: k, Err: err}
}

// parseInt64 parses a JSON number as an int64. It fails with
// strconv.ErrSyntax for a number that is not a whole number in plain
// digits, and with strconv.ErrRange for one out of range.
func parseInt64(val []byte) (int64, error) {
	neg := len(val) > 0 && val[0] == '-'
	if neg {
		val = val[1:]
	}
	if len(val) == 0 {
		return 0, strconv.ErrSyntax
	}
	for _, c := range val {
		if c < '0' || c > '9' {
			return 0, strconv.ErrSyntax
		}
	}
	var u uint64
	for _, c := range val {
		digit := uint64(c - '0')
		if u > (math.MaxUint64-digit)/10 {
			return 0, strconv.ErrRange
		}
		u = 10*u + digit
	}
	switch {
	case neg && u > 1<<63:
		return 0, strconv.ErrRange
	case neg:
		return -int64(u), nil
	case u > math.MaxInt64:
		return 0, strconv.ErrRange
	}
	return int64(u), nil
}

func (j *jsonLine) has(field jsonField) bool { return j.set&field != 0 }

// message converts the decoded fields and checks their values.
func (j *jsonLine) message() (message.Message, Fields, error) {
	var m message.Message
	var f Fields
	if err := j.setPayload(&m); err != nil {
		return m, f, err
	}
	if j.has(fieldTopic) {
		if err := message.ValidateTopic(j.topic, true); err != nil {
			return m, f, fmt.Errorf("field topic %s is invalid: %w", message.QuoteShort(j.topic), err)
		}
		m.Topic, f.Topic = j.topic, true
	}
	if j.has(fieldQoS) {
		if j.qos < 0 || j.qos > 2 {
			return m, f, fmt.Errorf("field qos %d is invalid: use 0, 1 or 2", j.qos)
		}
		m.QoS, f.QoS = byte(j.qos), true
	}
	if j.has(fieldRetain) {
		m.Retain, f.Retain = j.retain, true
	}
	if j.has(fieldExpiry) {
		if j.expiry < 0 || j.expiry > 1<<32-1 {
			return m, f, fmt.Errorf("field expiry %d is invalid: use whole seconds "+
				"from 0 to 4294967295", j.expiry)
		}
		m.ExpirySeconds = uint32(j.expiry)
	}
	if err := j.setProperties(&m); err != nil {
		return m, f, err
	}
	return m, f, nil
}

// setPayload sets the payload from exactly one of payload and
// payload_base64.
func (j *jsonLine) setPayload(m *message.Message) error {
	switch {
	case j.has(fieldPayload) && j.has(fieldPayloadBase64):
		return errors.New("both payload and payload_base64 are set: use one of them")
	case j.has(fieldPayload):
		m.Payload = j.payload
	case j.has(fieldPayloadBase64):
		b, err := decodeBase64(j.payloadBase64)
		if err != nil {
			return fmt.Errorf("field payload_base64 is invalid: %v: use standard base64 "+
				"with padding", err)
		}
		m.Payload = b
	default:
		return errors.New("payload is missing: set payload (text) or payload_base64")
	}
	return nil
}

// setProperties sets the optional MQTT 5 properties.
func (j *jsonLine) setProperties(m *message.Message) error {
	for _, field := range [...]struct {
		bit   jsonField
		value string
	}{
		{fieldContentType, j.contentType},
		{fieldResponseTopic, j.responseTopic},
		{fieldPayloadFormat, j.payloadFormat},
	} {
		if j.has(field.bit) {
			if err := checkString(field.value); err != nil {
				return fmt.Errorf("field value %q is invalid: %w", field.value, err)
			}
		}
	}
	if j.has(fieldContentType) {
		m.ContentType = j.contentType
	}
	if j.has(fieldResponseTopic) {
		if err := checkResponseTopic(j.responseTopic); err != nil {
			return fmt.Errorf("field response_topic %s is invalid: %w", message.QuoteShort(j.responseTopic), err)
		}
		m.ResponseTopic = j.responseTopic
	}
	if j.has(fieldCorrelationDataBase64) {
		b, err := decodeBase64(j.correlationDataBase64)
		if err != nil {
			return fmt.Errorf("field correlation_data_base64 is invalid: %v: use standard "+
				"base64 with padding", err)
		}
		m.CorrelationData = b
	}
	if j.has(fieldPayloadFormat) {
		pf, ok := parsePayloadFormat(j.payloadFormat)
		if !ok {
			return fmt.Errorf("field payload_format %q is invalid: use utf8 or bytes",
				j.payloadFormat)
		}
		m.PayloadFormat = pf
	}
	return j.setUserProperties(m)
}

func (j *jsonLine) setUserProperties(m *message.Message) error {
	for i, p := range j.userProperties {
		if !p.valid {
			return fmt.Errorf("user_properties[%d] is invalid: write each property as "+
				"[\"key\", \"value\"]", i)
		}
		if p.key == "" {
			return fmt.Errorf("user_properties[%d] is invalid: %w", i, ErrEmptyPropertyKey)
		}
		for _, s := range [...]string{p.key, p.value} {
			if err := checkString(s); err != nil {
				return fmt.Errorf("user_properties[%d] value %q is invalid: %w", i, s, err)
			}
		}
	}
	if len(j.userProperties) > 0 {
		m.UserProperties = make([]message.UserProperty, len(j.userProperties))
		for i, p := range j.userProperties {
			m.UserProperties[i] = message.UserProperty{Key: p.key, Value: p.value}
		}
	}
	return nil
}

// decodeBase64 decodes standard base64 with padding into a new slice,
// with the errors of base64.StdEncoding.DecodeString.
func decodeBase64(text []byte) ([]byte, error) {
	b := make([]byte, base64.StdEncoding.DecodedLen(len(text)))
	n, err := base64.StdEncoding.Decode(b, text)
	return b[:n], err
}
