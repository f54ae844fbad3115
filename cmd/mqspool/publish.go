package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqspool/mqspool/internal/format"
	"github.com/mqspool/mqspool/internal/message"
)

type publishFlags struct {
	configFlags
	spoolDir    string
	topic       string
	qos         int
	retain      bool
	expiry      uint32
	contentType string
	properties  []string
	text        string
	textSet     bool
	retainSet   bool
	topicSet    bool
	waitFlags
}

func newPublishCommand() *cobra.Command {
	var f publishFlags
	c := &cobra.Command{
		Use:   "publish [flags] [FILE|-]",
		Short: "Drop a message into the spool directory atomically",
		Long: `Drop one message into the spool directory as a .msg file: written into tmp/,
synced, renamed into new/ and the directory synced, so the daemon never sees
a partial file. The payload comes from FILE, from standard input with "-",
or from --message. The daemon does not need to run. A payload over
publish.max_message_bytes is rejected with exit status 2, and nothing is
written. The limit is the one in the configuration file that publish reads
(--config, or the default file when --spool-dir, or --socket with --wait,
is missing), and 1MiB when it reads none.

--retain takes no value: write --retain, or --retain=false to turn it off.
With --retain, a FILE spelled true, false, yes, no, on or off is rejected
as a value meant for the flag. Write ./false for a file of that name.

With --wait DURATION, publish then asks the running daemon, through its
control socket, to report when the broker has acknowledged the message.
It exits 0 once acknowledged, 3 when DURATION passes first and 4 when the
message was rejected (see failed/).`,
		Example: `  mqspool publish --topic site1/temp --message 21.5
  sensor-read | mqspool publish --topic site1/temp --qos 2 -
  mqspool publish --topic cam/1 --content-type image/jpeg snapshot.jpg
  mqspool publish --topic alarm/door --qos 1 --wait 30s --message open`,
		Args: maxArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			f.textSet = c.Flags().Changed("message")
			f.retainSet = c.Flags().Changed("retain")
			f.topicSet = c.Flags().Changed("topic")
			return runPublish(c, &f, args)
		},
	}
	f.configFlags.register(c)
	fl := c.Flags()
	fl.StringVar(&f.spoolDir, "spool-dir", "", "spool directory (default: spool.dir from the config)")
	fl.StringVarP(&f.topic, "topic", "t", "", "topic (default: the daemon's routes and publish.default_topic)")
	f.qos = -1
	fl.VarP(qosValue{&f.qos}, "qos", "q", "QoS 0, 1 or 2 (default: the daemon's publish.qos)")
	fl.BoolVarP(&f.retain, "retain", "r", false, "set the retain flag (takes no value: --retain, or --retain=false)")
	fl.Uint32Var(&f.expiry, "expiry", 0, "message expiry interval in seconds, aged while queued (0: none)")
	fl.StringVar(&f.contentType, "content-type", "", "MQTT 5 content type")
	fl.StringArrayVarP(&f.properties, "property", "p", nil, "user property key=value (repeatable, order kept)")
	fl.StringVarP(&f.text, "message", "m", "", "payload text, instead of FILE or -")
	f.waitFlags.register(c)
	return c
}

// qosValue is the --qos flag. Left out, the QoS stays -1, which leaves it
// to the daemon's publish.qos, and the help shows no default value.
type qosValue struct{ qos *int }

func (v qosValue) String() string {
	if v.qos == nil || *v.qos < 0 {
		return ""
	}
	return strconv.Itoa(*v.qos)
}

func (v qosValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 2 {
		return fmt.Errorf("%q is invalid: use 0, 1 or 2, or leave it out for the daemon's publish.qos", s)
	}
	*v.qos = n
	return nil
}

func (v qosValue) Type() string { return "int" }

func runPublish(c *cobra.Command, f *publishFlags, args []string) error {
	if f.wait < 0 {
		return usageError(fmt.Errorf("--wait %s is invalid: use a positive duration such as 30s, or leave it out", f.wait))
	}
	if f.topicSet && f.topic == "" {
		return usageError(errors.New("--topic is empty: give a topic, or leave the flag out " +
			"to use the daemon's routes and publish.default_topic"))
	}
	// Everything is checked before the file is written, because a script
	// that retries on exit status 2 would otherwise queue it twice.
	target, err := f.resolve(c)
	if err != nil {
		return err
	}
	m, err := f.message(c.InOrStdin(), args, target.limit)
	if err != nil {
		return usageError(err)
	}
	set := format.Fields{Topic: f.topic != "", QoS: f.qos != -1, Retain: f.retainSet}
	data, err := encodeMessage(m, set)
	if err != nil {
		// Every field comes from the flags, so a value that the .msg
		// format cannot hold is invalid usage.
		return usageError(err)
	}
	// The name is chosen first, because a route that matches it may set
	// the topic that counts towards the size limit.
	name := uniqueName()
	if err := target.limit.checkTopic(m, name); err != nil {
		return usageError(err)
	}
	if err := target.limit.checkMessage(m, name, len(data)); err != nil {
		return usageError(err)
	}
	if err := ensureSpoolDir(target.dir, "check spool.dir or --spool-dir"); err != nil {
		return err
	}

	if err := dropFile(target.dir, name, data); err != nil {
		return err
	}
	fmt.Fprintf(c.OutOrStdout(), "queued new/%s\n", name)
	if f.wait > 0 {
		return f.waitFor(c, target.socket, name)
	}
	return nil
}

// publishTarget is the spool directory that publish writes into, the
// daemon's size limit and, with --wait, the control socket that receives
// the wait request.
type publishTarget struct {
	dir    string
	socket string
	limit  sizeLimit
}

// resolve returns the target from the flags and, where they leave
// something open, from the configuration. An explicit --config is always
// read and checked.
func (f *publishFlags) resolve(c *cobra.Command) (publishTarget, error) {
	t := publishTarget{dir: f.spoolDir, socket: f.socket, limit: defaultSizeLimit()}
	needSocket := f.wait > 0 && t.socket == ""
	if t.dir != "" && f.file == "" && !needSocket {
		return t, nil
	}

	loaded, err := f.loadOffline(c)
	if err != nil {
		return t, err
	}
	cfg := loaded.Config
	if t.dir == "" {
		t.dir = cfg.Spool.Dir
	}
	if t.socket == "" {
		t.socket = cfg.Control.Socket
	}
	t.limit = configSizeLimit(loaded)
	return t, nil
}

// message builds the message from the flags. A QoS of -1 means the
// daemon's default; the .msg file then has no QoS header.
func (f *publishFlags) message(stdin io.Reader, args []string, limit sizeLimit) (message.Message, error) {
	var m message.Message
	payload, err := f.payload(stdin, args, limit)
	if err != nil {
		return m, err
	}
	m.Payload = payload
	m.Topic = f.topic
	m.Retain = f.retain
	m.ExpirySeconds = f.expiry
	m.ContentType = f.contentType

	if f.topic != "" {
		// A topic starting with $ is checked against the routes in
		// checkTopic.
		if err := message.ValidateTopic(f.topic, true); err != nil {
			return m, fmt.Errorf("--topic %s: %w", message.QuoteShort(f.topic), err)
		}
	}
	if err := f.checkHeaderValues(); err != nil {
		return m, err
	}
	switch {
	case f.qos == -1:
		// Left to the daemon's routes and publish.qos.
	case f.qos < 0 || f.qos > 2:
		return m, fmt.Errorf("--qos %d is invalid: use 0, 1 or 2", f.qos)
	default:
		m.QoS = byte(f.qos)
	}
	for _, p := range f.properties {
		key, value, ok := strings.Cut(p, "=")
		if !ok {
			return m, fmt.Errorf("--property %q is invalid: write it as key=value", p)
		}
		if key == "" {
			return m, fmt.Errorf("--property %q is invalid: %w", p, format.ErrEmptyPropertyKey)
		}
		m.UserProperties = append(m.UserProperties, message.UserProperty{Key: key, Value: value})
	}
	return m, checkStrings(m)
}

// checkStrings checks the content type and the user properties against
// the characters that MQTT 5 strings may hold. The topic is checked with
// ValidateTopic, and may be empty here when the daemon's routes set it.
func checkStrings(m message.Message) error {
	if err := message.ValidateString(m.ContentType); err != nil {
		return fmt.Errorf("--content-type %q %w", m.ContentType, err)
	}
	for _, p := range m.UserProperties {
		if err := message.ValidateString(p.Key); err != nil {
			return fmt.Errorf("--property %q: the name %w", p.Key+"="+p.Value, err)
		}
		if err := message.ValidateString(p.Value); err != nil {
			return fmt.Errorf("--property %q: the value %w", p.Key+"="+p.Value, err)
		}
	}
	return nil
}

// checkHeaderValues checks that the .msg headers can hold the topic,
// the content type and the user properties unchanged.
func (f *publishFlags) checkHeaderValues() error {
	if err := checkHeaderValue("--topic", f.topic); err != nil {
		return err
	}
	if err := checkHeaderValue("--content-type", f.contentType); err != nil {
		return err
	}
	for _, p := range f.properties {
		if err := checkHeaderValue("--property", p); err != nil {
			return err
		}
	}
	return nil
}

// checkHeaderValue rejects the value of flag when a .msg header line
// cannot hold it: one with a line break, or with a space or tab at either
// end, which the daemon trims.
func checkHeaderValue(flag, value string) error {
	if strings.ContainsAny(value, "\r\n") {
		return fmt.Errorf("%s %q is invalid: it contains a line break, which a .msg header "+
			"cannot hold: remove it", flag, value)
	}
	if strings.Trim(value, " \t") != value {
		return fmt.Errorf("%s %q is invalid: it starts or ends with a space or tab, which "+
			"the daemon trims: remove it", flag, value)
	}
	return nil
}

// payload reads the payload from --message, FILE or standard input. It
// reads at most one byte more than the limit allows, so a large or endless
// input fails without filling the memory.
func (f *publishFlags) payload(stdin io.Reader, args []string, limit sizeLimit) ([]byte, error) {
	switch {
	case f.textSet && len(args) > 0:
		return nil, errors.New("give the payload once: --message or FILE or -, not both")
	case f.textSet:
		return []byte(f.text), limit.checkPayload("--message", int64(len(f.text)))
	case len(args) == 0:
		return nil, errors.New("missing payload: pass FILE, - for standard input, or --message TEXT")
	case args[0] == "-":
		return limit.readPayload("standard input", stdin)
	default:
		return f.readFileArg(args[0], limit)
	}
}

// readFileArg reads the payload from the FILE argument name. With
// --retain set, a name that reads as true or false was most likely meant
// for the flag, which takes no value, so it is rejected. A missing file's
// error then shows the --retain=false form.
func (f *publishFlags) readFileArg(name string, limit sizeLimit) ([]byte, error) {
	afterRetain := f.retainSet && f.retain
	if afterRetain && isBoolWord(name) {
		return nil, fmt.Errorf("FILE %q looks like a value for --retain, which takes none: "+
			"write --retain or --retain=false, or ./%s for a file of that name", name, name)
	}
	data, err := readPayloadFile(name, limit)
	switch {
	case afterRetain && errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("%w: --retain takes no value, so %q was read as FILE: "+
			"write --retain or --retain=false", err, name)
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("%w: check the path of FILE, or pass - for standard input or --message TEXT", err)
	case errors.Is(err, os.ErrPermission):
		return nil, fmt.Errorf("%w: make FILE readable by this user, or pass - for standard input", err)
	}
	return data, err
}

// isBoolWord reports whether s, in any case, is a word that people write
// for true or false.
func isBoolWord(s string) bool {
	switch strings.ToLower(s) {
	case "true", "false", "yes", "no", "on", "off":
		return true
	}
	return false
}

// readPayloadFile reads the payload from the file name. A regular file
// that is too large is rejected by its size before it is read.
func readPayloadFile(name string, limit sizeLimit) ([]byte, error) {
	file, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("read payload: %w", err)
	}
	defer file.Close()

	info, err := file.Stat()
	if err != nil {
		return nil, fmt.Errorf("read payload: %w", err)
	}
	if info.Mode().IsRegular() {
		if err := limit.checkPayload(name, info.Size()); err != nil {
			return nil, err
		}
	}
	return limit.readPayload(name, file)
}

// uniqueName returns a .msg name that sorts by creation time and does not
// collide with a concurrent publish.
func uniqueName() string {
	var b [6]byte
	rand.Read(b[:])
	return fmt.Sprintf("%d-%d-%s.msg", time.Now().UnixNano(), os.Getpid(), hex.EncodeToString(b[:]))
}

// dropMessage writes m as a .msg file into the spool directory dir the
// atomic way: tmp/, sync, rename into new/NAME, sync the directory.
// set marks which of topic, QoS and retain to write, and the daemon's
// routes and defaults fill in the others.
func dropMessage(dir, name string, m message.Message, set format.Fields) error {
	data, err := encodeMessage(m, set)
	if err != nil {
		return err
	}
	return dropFile(dir, name, data)
}

// encodeMessage returns m in the .msg format, with the headers that set
// marks.
func encodeMessage(m message.Message, set format.Fields) ([]byte, error) {
	var buf bytes.Buffer
	if err := format.WriteMsgFields(&buf, m, set); err != nil {
		return nil, fmt.Errorf("encode message: %w", err)
	}
	return buf.Bytes(), nil
}

// dropFile writes the .msg file data into the spool directory dir as
// new/NAME the atomic way.
func dropFile(dir, name string, data []byte) error {
	err := format.WriteFileAtomic(dir, name, data)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("drop message into %s: %w: let this user write to tmp/ and new/ there, "+
			"for example by adding it to the group of the spool directory", dir, err)
	default:
		return fmt.Errorf("drop message into %s: %w", dir, err)
	}
}

// ensureSpoolDir checks that the spool directory exists and creates its
// tmp/ and new/ when missing, as the daemon would at start. A missing spool
// directory is an error: it is far more often a wrong path than a first
// run. fix names the setting to check, which differs between commands.
func ensureSpoolDir(dir, fix string) error {
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		return fmt.Errorf("spool directory %s not found: %s, or start the daemon once to create it", dir, fix)
	}
	for _, sub := range []string{"tmp", "new"} {
		if err := format.MkdirAllSync(filepath.Join(dir, sub)); err != nil {
			return fmt.Errorf("create %s in the spool directory: %w", sub, err)
		}
	}
	return nil
}
