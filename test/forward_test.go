// Package test holds mqspool's integration tests: the real binary against a
// real mosquitto on a free loopback port.
package test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mqspool/mqspool/test/harness"
)

// expected is a message the subscriber must receive.
type expected struct {
	topic   string
	payload []byte
}

// dropMixed drops n files cycling through raw files in nested and UTF-8
// directories, .msg files with properties and binary payloads, and .jsonl
// batches, and returns every message they hold.
func dropMixed(d *harness.Daemon, prefix string, n int) []expected {
	var want []expected
	for i := range n {
		switch i % 4 {
		case 0:
			topic := fmt.Sprintf("%s/gebäude-3/temp", prefix)
			payload := []byte(fmt.Sprintf(`{"seq":%d}`, i))
			d.Drop(fmt.Sprintf("%s/%06d.json", topic, i), payload)
			want = append(want, expected{topic, payload})
		case 1:
			topic := fmt.Sprintf("%s/bin/%d", prefix, i%3)
			payload := []byte{0, 1, 2, 0, 255, byte(i), 0}
			var b bytes.Buffer
			fmt.Fprintf(&b, "Topic: %s\r\nQoS: 1\r\nUser-Property: seq=%d\r\nContent-Type: application/octet-stream\r\n\r\n", topic, i)
			b.Write(payload)
			d.Drop(fmt.Sprintf("%s-%06d.msg", prefix, i), b.Bytes())
			want = append(want, expected{topic, payload})
		case 2:
			var b strings.Builder
			for j := range 3 {
				topic := fmt.Sprintf("%s/batch/%d", prefix, j)
				payload := []byte(fmt.Sprintf("line %d of file %d\x00", j, i))
				line, _ := json.Marshal(map[string]any{
					"topic":           topic,
					"payload_base64":  base64.StdEncoding.EncodeToString(payload),
					"qos":             1,
					"user_properties": [][2]string{{"file", fmt.Sprint(i)}, {"line", fmt.Sprint(j)}},
				})
				b.Write(line)
				b.WriteByte('\n')
				want = append(want, expected{topic, payload})
			}
			d.Drop(fmt.Sprintf("batch-%s-%06d.jsonl", prefix, i), []byte(b.String()))
		case 3:
			topic := fmt.Sprintf("%s/empty/%d", prefix, i)
			d.Drop(fmt.Sprintf("%s/%06d.dat", topic, i), nil)
			want = append(want, expected{topic, []byte{}})
		}
	}
	return want
}

// checkDelivered asserts every expected message arrived at least once
// with its exact topic and payload, and that per topic the first arrivals
// follow drop order.
func checkDelivered(t *testing.T, sub *harness.Subscriber, want []expected) {
	t.Helper()
	got := map[string]int{}
	firstOrder := map[string][]string{}
	for _, m := range sub.Messages() {
		key := m.Topic + "\x00" + string(m.Payload)
		if got[key] == 0 {
			firstOrder[m.Topic] = append(firstOrder[m.Topic], string(m.Payload))
		}
		got[key]++
	}

	wantOrder := map[string][]string{}
	missing := 0
	for _, w := range want {
		key := w.topic + "\x00" + string(w.payload)
		wantOrder[w.topic] = append(wantOrder[w.topic], string(w.payload))
		if got[key] == 0 {
			missing++
			if missing <= 5 {
				t.Errorf("missing message on %q with payload %q", w.topic, w.payload)
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d messages missing", missing, len(want))
	}

	for topic, order := range wantOrder {
		if fmt.Sprint(firstOrder[topic]) != fmt.Sprint(order) {
			t.Errorf("topic %s: first arrivals out of drop order:\n got %q\nwant %q", topic, firstOrder[topic], order)
		}
	}
}

func TestForward_AllFormats(t *testing.T) {
	broker := harness.StartBroker(t, "")
	sub := harness.Subscribe(t, broker.Addr(), "#", 1)
	d := harness.NewDaemon(t, broker.URL(), "")
	d.DumpOnFailure()
	d.Start()

	want := dropMixed(d, "site1", 400)
	sub.WaitCount(len(want), 60*time.Second)
	checkDelivered(t, sub, want)

	harness.WaitFor(t, 10*time.Second, "new/ empty", d.NewEmpty)
	if code := d.Stop(10 * time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0", code)
	}
}

func TestForward_PropertiesKept(t *testing.T) {
	broker := harness.StartBroker(t, "")
	sub := harness.Subscribe(t, broker.Addr(), "#", 1)
	d := harness.NewDaemon(t, broker.URL(), "")
	d.DumpOnFailure()
	d.Start()

	d.Drop("one.msg", []byte("Topic: p/1\nContent-Type: text/plain\nUser-Property: a=1\nUser-Property: a=2=x\nUser-Property: b=\n\nhello"))
	sub.WaitCount(1, 20*time.Second)
	m := sub.Messages()[0]
	if m.ContentType != "text/plain" {
		t.Errorf("content type = %q, want text/plain", m.ContentType)
	}
	wantProps := [][2]string{{"a", "1"}, {"a", "2=x"}, {"b", ""}}
	if fmt.Sprint(m.UserProperties) != fmt.Sprint(wantProps) {
		t.Errorf("user properties = %q, want %q", m.UserProperties, wantProps)
	}
}

func TestForward_BrokerRestartMidStream(t *testing.T) {
	broker := harness.StartBroker(t, "")
	sub := harness.Subscribe(t, broker.Addr(), "#", 1)
	d := harness.NewDaemon(t, broker.URL(), "")
	d.DumpOnFailure()
	d.Start()

	want := dropMixed(d, "a", 200)
	sub.WaitCount(20, 30*time.Second)
	broker.Restart()
	want = append(want, dropMixed(d, "b", 200)...)

	harness.WaitFor(t, 60*time.Second, "all messages after the broker restart", func() bool {
		return distinct(sub) >= len(want)
	})
	checkDelivered(t, sub, want)
}

func TestForward_DaemonRestartResumesSession(t *testing.T) {
	broker := harness.StartBroker(t, "")
	proxy := harness.StartProxy(t, broker.Addr())
	sub := harness.Subscribe(t, broker.Addr(), "#", 1)
	d := harness.NewDaemon(t, proxy.URL(), "")
	d.DumpOnFailure()
	d.Start()

	want := dropMixed(d, "a", 200)
	sub.WaitCount(10, 30*time.Second)
	if code := d.Stop(10 * time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0", code)
	}
	want = append(want, dropMixed(d, "b", 100)...)
	d.Start()

	harness.WaitFor(t, 60*time.Second, "all messages after the daemon restart", func() bool {
		return distinct(sub) >= len(want)
	})
	checkDelivered(t, sub, want)

	var connacks []harness.Packet
	var connects []harness.Packet
	for _, p := range proxy.Packets() {
		switch {
		case p.Type == 2 && p.Dir == harness.ToClient:
			connacks = append(connacks, p)
		case p.Type == 1 && p.Dir == harness.ToBroker:
			connects = append(connects, p)
		}
	}
	if len(connacks) < 2 {
		t.Fatalf("saw %d CONNACKs, want at least 2", len(connacks))
	}
	if !connects[0].CleanStart {
		t.Errorf("first CONNECT without saved state has Clean Start 0, want 1")
	}
	if connects[1].CleanStart {
		t.Errorf("CONNECT after restart has Clean Start 1, want 0 to resume the session")
	}
	if !connacks[1].SessionPresent {
		t.Errorf("second CONNACK has session present 0, want 1")
	}
}

func TestForward_InflightWithinReceiveMaximum(t *testing.T) {
	broker := harness.StartBroker(t, "") // mosquitto's default max_inflight_messages is 20
	proxy := harness.StartProxy(t, broker.Addr())
	sub := harness.Subscribe(t, broker.Addr(), "#", 1)
	d := harness.NewDaemon(t, proxy.URL(), "")
	d.DumpOnFailure()
	d.Start()

	want := dropMixed(d, "w", 300)
	sub.WaitCount(len(want), 60*time.Second)

	max, reuse := harness.MaxOutstanding(proxy.Packets())
	if reuse != nil {
		t.Error(reuse)
	}
	if max > 20 {
		t.Errorf("up to %d publishes outstanding, want at most the broker's Receive Maximum 20", max)
	}
	if max < 2 {
		t.Errorf("at most %d publish outstanding: the inflight window is not used", max)
	}
}

// distinct counts distinct (topic, payload) pairs received.
func distinct(sub *harness.Subscriber) int {
	seen := map[string]bool{}
	for _, m := range sub.Messages() {
		seen[m.Topic+"\x00"+string(m.Payload)] = true
	}
	return len(seen)
}
