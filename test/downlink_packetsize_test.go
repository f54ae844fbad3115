package test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqspool/mqspool/test/harness"
)

// packetSizeLimit is the broker's max_packet_size in bytes. Below 128
// bytes, a SUBSCRIBE with one Subscription Identifier under 128 is the
// filter plus 10 bytes, and a QoS 1 PUBLISH with a 5-byte payload is the
// topic plus 12 bytes.
const packetSizeLimit = 128

// TestDownlink_MaximumPacketSize runs against a broker whose Maximum
// Packet Size (mosquitto's max_packet_size, sent in CONNACK) is smaller
// than the filters together and smaller than one filter alone. The
// filters that fit are subscribed, the one that does not is shown in
// status without being sent, and the connection stays up: mosquitto
// closes the connection of a client that sends a larger packet.
func TestDownlink_MaximumPacketSize(t *testing.T) {
	broker := harness.StartBroker(t, fmt.Sprintf("max_packet_size %d", packetSizeLimit))
	root := t.TempDir()

	// Each filter fits alone, but 4 of them exceed the limit together.
	// NOTE: mosquitto offers Subscription Identifiers, so the daemon sends
	// each filter in a SUBSCRIBE of its own and never has to split a
	// packet of several. The eventloop package tests that split.
	levels := []string{"a", "b", "c", "d"}
	var fitting []string
	for _, level := range levels {
		fitting = append(fitting, "dl/"+strings.Repeat(level, 80)+"/#")
	}
	tooLong := "dl/" + strings.Repeat("z", 200) + "/#"

	// The filter that cannot be sent comes second, so a daemon that sends
	// it anyway loses its connection before the filters after it.
	filters := []string{fitting[0], tooLong, fitting[1], fitting[2], fitting[3]}
	var config strings.Builder
	config.WriteString("subscriptions:\n")
	for i, filter := range filters {
		fmt.Fprintf(&config, "  - filter: %s\n    qos: 1\n    dir: %s\n", filter, filepath.Join(root, fmt.Sprint("inbox-", i)))
	}
	d := harness.NewDaemon(t, broker.URL(), config.String())
	d.DumpOnFailure()
	d.Start()
	waitSubscribed(t, d, len(fitting))

	for i, filter := range filters {
		if filter == tooLong {
			continue
		}
		topic := strings.TrimSuffix(filter, "#") + "x"
		mosquittoPub(t, broker, topic, 1, fmt.Sprint("msg-", i))
	}
	for i, filter := range filters {
		if filter == tooLong {
			continue
		}
		dir := filepath.Join(root, fmt.Sprint("inbox-", i))
		harness.WaitFor(t, 10*time.Second, "a file in "+dir, func() bool { return len(readInbox(t, dir)) == 1 })
		if got := string(readInbox(t, dir)[0].Message.Payload); got != fmt.Sprint("msg-", i) {
			t.Errorf("inbox %d holds payload %q, want msg-%d", i, got, i)
		}
	}

	st := opsStatus(t, d)
	subs, _ := st["subscriptions"].([]any)
	if len(subs) != len(filters) {
		t.Fatalf("status lists %d subscriptions, want %d", len(subs), len(filters))
	}
	for i, filter := range filters {
		rejected, _ := subs[i].(map[string]any)["rejected"].(string)
		switch {
		case filter == tooLong && !strings.Contains(rejected, "Maximum Packet Size"):
			t.Errorf("status of the filter too long to send: rejected %q, want the Maximum Packet Size named", rejected)
		case filter != tooLong && rejected != "":
			t.Errorf("status of subscription %d: rejected %q, want none", i, rejected)
		}
	}
	if out, _ := d.Ctl("status"); !strings.Contains(out, "rejected by the broker or over its limits") {
		t.Errorf("status text does not show the filter too long to send:\n%s", out)
	}
	if st["connected"] != true {
		t.Errorf("status connected = %v, want true", st["connected"])
	}
	if st["reconnects"] != float64(0) {
		t.Errorf("status reconnects = %v, want 0", st["reconnects"])
	}
	// mosquitto 2.0.11 logs this line when it closes a connection with
	// reason 0x95 (Packet too large).
	if broker.Contains("disconnected due to oversize packet") {
		t.Errorf("mosquitto received a packet over its limit:\n%s", broker.Log())
	}
	if !d.Running() {
		t.Fatal("daemon exited")
	}
}
