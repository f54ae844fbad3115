package format

import (
	"encoding/base64"
	"fmt"
	"io"

	"github.com/go-json-experiment/json"

	"github.com/mqspool/mqspool/internal/message"
)

// jsonLineOut is one .jsonl line as [WriteJSONL] writes it. The field
// names are those that [ParseJSONL] reads.
type jsonLineOut struct {
	Topic                 string      `json:"topic,omitempty"`
	PayloadBase64         string      `json:"payload_base64"`
	QoS                   byte        `json:"qos"`
	Retain                bool        `json:"retain"`
	Expiry                uint32      `json:"expiry,omitzero"`
	ContentType           string      `json:"content_type,omitempty"`
	ResponseTopic         string      `json:"response_topic,omitempty"`
	CorrelationDataBase64 string      `json:"correlation_data_base64,omitempty"`
	PayloadFormat         string      `json:"payload_format,omitempty"`
	UserProperties        [][2]string `json:"user_properties,omitempty"`
}

// WriteJSONL writes m as one .jsonl line that [ParseJSONL] reads back to
// the same message, with topic (when not empty), qos and retain set. The
// payload is always written as payload_base64. A .jsonl line can contain values
// that a .msg header cannot, such as a user property key with '=' or a
// value that starts with a space, so it is the fallback for a message
// that [WriteMsg] rejects.
func WriteJSONL(w io.Writer, m message.Message) error {
	if m.QoS > 2 {
		return fmt.Errorf("qos %d is invalid: use 0, 1 or 2", m.QoS)
	}
	line := jsonLineOut{
		Topic:         m.Topic,
		PayloadBase64: base64.StdEncoding.EncodeToString(m.Payload),
		QoS:           m.QoS,
		Retain:        m.Retain,
		Expiry:        m.ExpirySeconds,
		ContentType:   m.ContentType,
		ResponseTopic: m.ResponseTopic,
	}
	if len(m.CorrelationData) > 0 {
		line.CorrelationDataBase64 = base64.StdEncoding.EncodeToString(m.CorrelationData)
	}
	if m.PayloadFormat != message.PayloadFormatUnset {
		line.PayloadFormat = m.PayloadFormat.String()
	}
	for _, p := range m.UserProperties {
		line.UserProperties = append(line.UserProperties, [2]string{p.Key, p.Value})
	}
	data, err := json.Marshal(line)
	if err != nil {
		return fmt.Errorf("encode message with topic %q as .jsonl: %w", m.Topic, err)
	}
	if _, err := w.Write(append(data, '\n')); err != nil {
		return fmt.Errorf("write .jsonl: %w", err)
	}
	return nil
}
