package pickup

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/mqspool/mqspool/internal/format"
	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/internal/spool"
)

// jsonlFileFactor sets the largest .jsonl file: this many times
// MaxMessageBytes, which bounds the memory one file needs.
const jsonlFileFactor = 16

// msgHeaderAllowance is the room for headers in a .msg file on top of
// MaxMessageBytes.
const msgHeaderAllowance = 64 << 10

// route is a Route with its glob split into segments.
type route struct {
	Route
	segments []string
}

func compileRoutes(rs []Route) ([]route, error) {
	out := make([]route, 0, len(rs))
	for i, r := range rs {
		segs := strings.Split(r.Match, "/")
		for _, s := range segs {
			if _, err := path.Match(s, ""); err != nil {
				return nil, fmt.Errorf("route %d: match %q is not a valid glob: %w", i, r.Match, err)
			}
		}
		if r.Topic != "" {
			if err := message.ValidateTopic(r.Topic, r.AllowDollar); err != nil {
				return nil, fmt.Errorf("route %d: topic %q: %w", i, r.Topic, err)
			}
		}
		if r.QoS != nil && *r.QoS > 2 {
			return nil, fmt.Errorf("route %d: qos %d is invalid: use 0, 1 or 2", i, *r.QoS)
		}
		out = append(out, route{Route: r, segments: segs})
	}
	return out, nil
}

// matchRoute returns the first route whose glob matches rel, or nil.
func (p *Pickup) matchRoute(rel string) *route {
	p.routesMu.RLock()
	routes := p.routes
	p.routesMu.RUnlock()

	parts := strings.Split(rel, "/")
	for i := range routes {
		if matchSegments(routes[i].segments, parts) {
			return &routes[i]
		}
	}
	return nil
}

// MatchRoute returns the first of routes that applies to the file at rel,
// its slash-separated path under new/, as the pickup chooses it. A route
// with an invalid glob matches nothing.
func MatchRoute(routes []Route, rel string) (Route, bool) {
	parts := strings.Split(rel, "/")
	for _, r := range routes {
		if matchSegments(strings.Split(r.Match, "/"), parts) {
			return r, true
		}
	}
	return Route{}, false
}

// matchSegments matches path segments against glob segments, where "**"
// matches zero or more segments.
func matchSegments(glob, parts []string) bool {
	if len(glob) == 0 {
		return len(parts) == 0
	}
	if glob[0] == "**" {
		for i := 0; i <= len(parts); i++ {
			if matchSegments(glob[1:], parts[i:]) {
				return true
			}
		}
		return false
	}
	if len(parts) == 0 {
		return false
	}
	ok, _ := path.Match(glob[0], parts[0])
	return ok && matchSegments(glob[1:], parts[1:])
}

// sizeLimit returns the largest file of this kind that the pickup reads.
func (p *Pickup) sizeLimit(kind format.Kind) int64 {
	limit := int64(p.opts.MaxMessageBytes)
	switch kind {
	case format.KindMsg:
		return limit + msgHeaderAllowance
	case format.KindJSONL:
		return limit * jsonlFileFactor
	}
	return limit
}

// position is a place in a file: how many messages come before it, and
// for a .jsonl file the byte offset and the number of lines before it.
type position struct {
	index int
	off   int
	lines int
}

// eachMessage parses a file from the position from on, where the zero
// position is its start. It applies the route r (nil for none), the
// defaults, the topic prefix and the configured properties to each
// message and hands it to fn with the position after it. It stops at the
// first error: fn's as it is, or a parse or check error that describes
// the problem and how to fix it.
func (p *Pickup) eachMessage(id spool.FileID, data []byte, r *route, from position,
	fn func(message.Message, position) error) error {
	rel := id.Name
	now := p.now().UTC().Format(time.RFC3339Nano)
	emit := func(e format.Entry, after position) error {
		m, err := p.finish(e, r)
		if err != nil {
			if e.Line > 0 {
				return fmt.Errorf("line %d: %w", e.Line, err)
			}
			return err
		}
		p.addProperties(&m, id, after.index-1, now)
		return fn(m, after)
	}

	switch format.KindOf(rel) {
	case format.KindMsg:
		m, f, err := format.ParseMsg(data)
		if err != nil {
			return err
		}
		return emit(format.Entry{Message: m, Fields: f}, position{index: 1, off: len(data)})
	case format.KindJSONL:
		return p.eachLine(data, from, emit)
	default:
		e, err := p.rawEntry(rel, data, r)
		if err != nil {
			return err
		}
		return emit(e, position{index: 1, off: len(data)})
	}
}

// eachLine parses the objects of a .jsonl file from the position from on.
// A file without any object is bad input.
func (p *Pickup) eachLine(data []byte, from position, emit func(format.Entry, position) error) error {
	at := from
	err := format.EachJSONL(data[from.off:], from.lines, func(e format.Entry) error {
		at = position{index: at.index + 1, off: from.off + e.End, lines: e.Line}
		return emit(e, at)
	})
	if err != nil {
		return err
	}
	return format.CheckJSONLCount(len(data), at.index)
}

// rawEntry makes the message of a raw file, whose topic comes from a
// route, the directory path or the default topic, in that order.
func (p *Pickup) rawEntry(rel string, data []byte, r *route) (format.Entry, error) {
	e := format.Entry{Message: message.Message{Payload: data}}
	if r != nil && r.Topic != "" {
		return e, nil
	}
	topic, err := format.TopicFromPath(rel)
	if errors.Is(err, format.ErrNoPathTopic) && p.opts.DefaultTopic != "" {
		return e, nil
	}
	if err != nil {
		return e, err
	}
	e.Message.Topic, e.Fields.Topic = topic, true
	return e, nil
}

// finish fills fields the file left unset and checks the result.
func (p *Pickup) finish(e format.Entry, r *route) (message.Message, error) {
	m, f := e.Message, e.Fields
	if !f.Topic {
		m.Topic = p.opts.DefaultTopic
		if r != nil && r.Topic != "" {
			m.Topic = r.Topic
		}
	}
	if m.Topic == "" {
		return m, errors.New("no topic: set Topic (or \"topic\" in .jsonl), " +
			"a route topic or publish.default_topic")
	}
	if !f.QoS {
		m.QoS = p.opts.DefaultQoS
		if r != nil && r.QoS != nil {
			m.QoS = *r.QoS
		}
	}
	if !f.Retain {
		m.Retain = p.opts.DefaultRetain
		if r != nil && r.Retain != nil {
			m.Retain = *r.Retain
		}
	}
	m.Topic = p.opts.TopicPrefix + m.Topic

	if err := m.Validate(r != nil && r.AllowDollar); err != nil {
		return m, err
	}
	if size := m.Size(); size > p.opts.MaxMessageBytes {
		return m, fmt.Errorf("message is %d bytes, over publish.max_message_bytes (%d): "+
			"split it or raise the limit", size, p.opts.MaxMessageBytes)
	}
	return m, nil
}

// addProperties appends the message id and ingest time properties. A
// property the message already has is kept, so a forwarded message keeps
// its original id.
func (p *Pickup) addProperties(m *message.Message, id spool.FileID, index int, now string) {
	if k := p.opts.MessageIDProperty; k != "" && !hasProperty(m, k) {
		m.UserProperties = append(m.UserProperties,
			message.UserProperty{Key: k, Value: messageID(id, index)})
	}
	if k := p.opts.IngestTimeProperty; k != "" && !hasProperty(m, k) {
		m.UserProperties = append(m.UserProperties, message.UserProperty{Key: k, Value: now})
	}
}

func hasProperty(m *message.Message, key string) bool {
	for _, up := range m.UserProperties {
		if up.Key == key {
			return true
		}
	}
	return false
}

// messageID derives a 128-bit hex id from the file identity and the
// message's index in the file, so a file ingested again after a crash
// gives its messages the same ids.
func messageID(id spool.FileID, index int) string {
	h := sha256.New()
	var buf [8]byte
	for _, v := range []uint64{id.Dev, id.Ino, uint64(id.Size), uint64(id.Ctime), uint64(index)} {
		binary.BigEndian.PutUint64(buf[:], v)
		h.Write(buf[:])
	}
	h.Write([]byte(id.Name))
	return hex.EncodeToString(h.Sum(nil)[:16])
}
