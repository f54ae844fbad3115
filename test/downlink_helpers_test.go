package test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mqspool/mqspool/internal/format"
	"github.com/mqspool/mqspool/internal/message"
	"github.com/mqspool/mqspool/test/harness"
)

// inboxFile is one received .msg file read back from an inbox.
type inboxFile struct {
	Name    string
	Message message.Message
	// Received holds the Subscription-Identifier, Received-At and Dup
	// headers, which the parser skips.
	Received map[string]string
}

// readInbox parses every file in dir/new, in name order.
func readInbox(t *testing.T, dir string) []inboxFile {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "new"))
	if err != nil {
		t.Fatalf("read inbox: %v", err)
	}
	var files []inboxFile
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, "new", e.Name()))
		if err != nil {
			continue // a consumer removed it meanwhile
		}
		m, _, err := format.ParseMsg(data)
		if err != nil {
			t.Fatalf("inbox file %s does not parse: %v\n%s", e.Name(), err, data)
		}
		files = append(files, inboxFile{Name: e.Name(), Message: m, Received: receivedHeaders(data)})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	return files
}

// receivedHeaders returns the received-only headers of a .msg file.
func receivedHeaders(data []byte) map[string]string {
	out := map[string]string{}
	head, _, _ := strings.Cut(string(data), "\n\n")
	for _, line := range strings.Split(head, "\n") {
		name, value, _ := strings.Cut(line, ":")
		switch name {
		case "Subscription-Identifier", "Received-At", "Dup":
			out[name] = strings.TrimSpace(value)
		}
	}
	return out
}

// mosquittoPub publishes one message with mosquitto_pub; args are extra
// flags such as -D publish user-property k v.
func mosquittoPub(t *testing.T, b *harness.Broker, topic string, qos int, payload string, args ...string) {
	t.Helper()
	base := []string{"-V", "mqttv5", "-h", "127.0.0.1", "-p", fmt.Sprint(b.Port),
		"-t", topic, "-q", fmt.Sprint(qos), "-m", payload}
	out, err := exec.Command("mosquitto_pub", append(base, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub %s: %v\n%s", topic, err, out)
	}
}

// linePublisher is one mosquitto_pub -l process that publishes each line
// written to it as a message, so it keeps publishing while the daemon
// restarts.
type linePublisher struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	w     *bufio.Writer
	out   strings.Builder
}

func startLinePublisher(t *testing.T, b *harness.Broker, topic string, qos int) *linePublisher {
	t.Helper()
	p := &linePublisher{cmd: exec.Command("mosquitto_pub", "-V", "mqttv5", "-h", "127.0.0.1",
		"-p", fmt.Sprint(b.Port), "-t", topic, "-q", fmt.Sprint(qos), "-l")}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start mosquitto_pub -l: %v", err)
	}
	p.w = bufio.NewWriter(p.stdin)
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	return p
}

func (p *linePublisher) send(line string) {
	p.w.WriteString(line + "\n")
	p.w.Flush()
}

// close ends the input and waits until every message is acknowledged.
func (p *linePublisher) close(t *testing.T) {
	t.Helper()
	p.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("mosquitto_pub -l: %v\n%s", err, p.out.String())
		}
	case <-time.After(20 * time.Second):
		t.Errorf("mosquitto_pub -l did not finish:\n%s", p.out.String())
	}
}

// waitSubscribed waits until the daemon logged n accepted subscriptions
// in all its runs.
func waitSubscribed(t *testing.T, d *harness.Daemon, n int) {
	t.Helper()
	harness.WaitFor(t, 15*time.Second, fmt.Sprintf("%d subscriptions", n), func() bool {
		return strings.Count(d.Log(), "msg=subscribed") >= n
	})
}

// startConnected starts the daemon and waits until it connected, so that
// a signal sent next finds its handlers installed.
func startConnected(t *testing.T, d *harness.Daemon) {
	t.Helper()
	before := strings.Count(d.Log(), "msg=connected")
	d.Start()
	harness.WaitFor(t, 15*time.Second, "a connection", func() bool {
		return strings.Count(d.Log(), "msg=connected") > before
	})
}

// requireInboxesComplete waits until the QoS 1 inbox q1Dir and the QoS 2
// inbox q2Dir hold every message numbered below total. It fails the test
// on a QoS 2 message stored twice or a QoS 1 repeat without a copy marked
// Dup: true, and returns the number of QoS 1 messages stored more than
// once.
func requireInboxesComplete(t *testing.T, q1Dir, q2Dir string, total int) int {
	t.Helper()
	harness.WaitFor(t, 60*time.Second, fmt.Sprintf("all %d QoS 2 messages", total), func() bool {
		return len(readInbox(t, q2Dir)) >= total
	})
	harness.WaitFor(t, 60*time.Second, fmt.Sprintf("all %d QoS 1 messages", total), func() bool {
		missing, _, _ := tallyInbox(t, readInbox(t, q1Dir), total)
		return len(missing) == 0
	})
	time.Sleep(500 * time.Millisecond) // let a late duplicate show up

	missing, dups, _ := tallyInbox(t, readInbox(t, q2Dir), total)
	if len(missing) > 0 || len(dups) > 0 {
		t.Errorf("QoS 2: %d missing %v, %d stored twice %v", len(missing), head(missing), len(dups), head(dups))
	}
	missing, dups, unmarked := tallyInbox(t, readInbox(t, q1Dir), total)
	if len(missing) > 0 {
		t.Errorf("QoS 1: %d missing %v", len(missing), head(missing))
	}
	if len(unmarked) > 0 {
		t.Errorf("QoS 1: %d messages repeated without a copy marked Dup: true: %v", len(unmarked), head(unmarked))
	}
	return len(dups)
}
