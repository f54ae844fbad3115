package main

import (
	"bytes"
	"fmt"
	"io"
	"strings"

	"github.com/mqspool/mqspool/internal/config"
	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/internal/pickup"
)

// msgHeaderAllowance is the room the daemon's pickup leaves for the
// headers of a .msg file on top of publish.max_message_bytes.
// NOTE: it copies msgHeaderAllowance in internal/pickup/route.go, which
// is not exported, and must be changed with it.
const msgHeaderAllowance = 64 << 10

// sizeLimit is the daemon's limit on the size of one message, which
// publish applies before it writes anything.
type sizeLimit struct {
	// maxMessageBytes is publish.max_message_bytes.
	maxMessageBytes int
	// topicPrefix is publish.topic_prefix, which the daemon adds to the
	// topic before it compares the message with the limit.
	topicPrefix string
	// routes and defaultTopic give the topic of a message without
	// --topic, as the daemon sets it.
	routes       []pickup.Route
	defaultTopic string
	// source names where maxMessageBytes comes from, for the errors, and
	// loaded is set when a configuration was read.
	source string
	loaded bool
}

// defaultSizeLimit returns the limit of a daemon with the default
// configuration, for publish --spool-dir without --config.
func defaultSizeLimit() sizeLimit {
	return sizeLimit{maxMessageBytes: pickup.DefaultMaxMessageBytes, source: "default, as no configuration was read"}
}

// configSizeLimit returns the limit of the loaded configuration.
func configSizeLimit(loaded *config.Loaded) sizeLimit {
	const key = "publish.max_message_bytes"
	source := "default"
	switch loaded.Sources[key] {
	case config.SourceFile:
		source = "from " + loaded.File
	case config.SourceEnv:
		source = "from " + config.EnvName(key)
	}
	cfg := loaded.Config
	routes := make([]pickup.Route, 0, len(cfg.Routes))
	for _, r := range cfg.Routes {
		routes = append(routes, pickup.Route{Match: r.Match, Topic: r.Topic, AllowDollar: r.AllowDollar})
	}
	return sizeLimit{
		maxMessageBytes: int(cfg.Publish.MaxMessageBytes),
		topicPrefix:     cfg.Publish.TopicPrefix,
		routes:          routes,
		defaultTopic:    cfg.Publish.DefaultTopic,
		source:          source,
		loaded:          true,
	}
}

// topicOf returns the topic the pickup gives m, dropped into new/ as
// name, before the topic prefix. That is m's own topic, else the topic of
// the first route that matches name. publish.default_topic applies when
// that route sets none or no route matches.
func (l sizeLimit) topicOf(m message.Message, name string) string {
	if m.Topic != "" {
		return m.Topic
	}
	if r, ok := pickup.MatchRoute(l.routes, name); ok && r.Topic != "" {
		return r.Topic
	}
	return l.defaultTopic
}

// checkTopic rejects m, to be dropped into new/ as name, when the pickup
// would move it to failed/ for its topic. That is no topic at all from m,
// the route matching name or publish.default_topic, a topic too long once
// publish.topic_prefix is added, or one that starts with $ after the
// prefix when that route does not set allow_dollar.
func (l sizeLimit) checkTopic(m message.Message, name string) error {
	if !l.loaded {
		return nil // the routes and defaults are unknown
	}
	topic := l.topicOf(m, name)
	if topic == "" {
		return fmt.Errorf("missing --topic: no route that sets a topic matches the file name %q, "+
			"and publish.default_topic is not set: pass --topic, or add a route for *.msg with a topic", name)
	}
	if n := len(l.topicPrefix) + len(topic); n > message.MaxTopicBytes {
		return fmt.Errorf("topic is %d bytes with publish.topic_prefix %q, over the MQTT limit of %d bytes: shorten --topic",
			n, l.topicPrefix, message.MaxTopicBytes)
	}
	r, matched := pickup.MatchRoute(l.routes, name)
	if !strings.HasPrefix(l.topicPrefix+topic, "$") || (matched && r.AllowDollar) {
		return nil
	}
	route := fmt.Sprintf("no route matches the file name %q", name)
	if matched {
		route = fmt.Sprintf("the first route matching the file name %q, %q, does not set allow_dollar", name, r.Match)
	}
	if strings.HasPrefix(l.topicPrefix, "$") {
		return fmt.Errorf("topic %s: %w (publish.topic_prefix %q adds the $, and %s)",
			message.QuoteShort(l.topicPrefix+topic), message.ErrTopicDollar, l.topicPrefix, route)
	}
	return fmt.Errorf("--topic %s: %w (%s)", message.QuoteShort(m.Topic), message.ErrTopicDollar, route)
}

// describe returns the limit with its key and source, for an error.
func (l sizeLimit) describe() string {
	return fmt.Sprintf("the limit of %d bytes (publish.max_message_bytes %s)", l.maxMessageBytes, l.source)
}

// fix returns what to do about a message over the limit.
func (l sizeLimit) fix() string {
	if !l.loaded {
		return "split the payload into smaller messages, or pass the daemon's configuration with " +
			"--config when it raises publish.max_message_bytes"
	}
	return "split the payload into smaller messages, or raise publish.max_message_bytes " +
		"in the daemon's configuration"
}

// checkPayload rejects a payload of size bytes from the input named from
// when it alone is over the limit.
func (l sizeLimit) checkPayload(from string, size int64) error {
	if size <= int64(l.maxMessageBytes) {
		return nil
	}
	return fmt.Errorf("payload from %s is %d bytes, over %s: %s", from, size, l.describe(), l.fix())
}

// readPayload reads r, named from in errors, up to one byte past the
// limit. A payload past the limit is rejected before the rest of r is
// read, so its full size stays unknown.
func (l sizeLimit) readPayload(from string, r io.Reader) ([]byte, error) {
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(r, int64(l.maxMessageBytes)+1))
	if err != nil {
		return nil, fmt.Errorf("read payload from %s: %w", from, err)
	}
	if n > int64(l.maxMessageBytes) {
		return nil, fmt.Errorf("payload from %s is over %s: %s", from, l.describe(), l.fix())
	}
	return buf.Bytes(), nil
}

// checkMessage rejects m, to be dropped into new/ as name, when the
// daemon would. That is when its size, as [message.Message.Size] counts
// it with the topic the daemon gives it, is over
// publish.max_message_bytes. It is also when its .msg file of fileSize
// bytes is over that plus the header allowance.
// NOTE: without a configuration, as with --spool-dir alone, the routes,
// publish.default_topic and publish.topic_prefix are unknown and not
// counted, so a message near the limit may still go to failed/.
func (l sizeLimit) checkMessage(m message.Message, name string, fileSize int) error {
	m.Topic = l.topicPrefix + l.topicOf(m, name)
	if size := m.Size(); size > l.maxMessageBytes {
		return fmt.Errorf("message is %d bytes with its topic %s and properties, over %s: %s",
			size, message.QuoteShort(m.Topic), l.describe(), l.fix())
	}
	if fileLimit := l.maxMessageBytes + msgHeaderAllowance; fileSize > fileLimit {
		return fmt.Errorf(".msg file would be %d bytes, over %s plus %d bytes for headers: "+
			"use fewer or shorter --property values, or %s", fileSize, l.describe(), msgHeaderAllowance, l.fix())
	}
	return nil
}
