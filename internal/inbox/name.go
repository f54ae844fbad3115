package inbox

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// namer makes file names that sort in arrival order and never repeat
// within a process: a zero-padded nanosecond wall-clock time, kept
// strictly increasing, then a counter. Across restarts the order rests on
// the wall clock.
type namer struct {
	last    int64
	counter uint64
}

// next returns the name for the next message. A QoS 2 message also gets
// its flow key, so a redelivery of the same flow can find its file.
func (n *namer) next(now time.Time, flowKey string) string {
	ns := max(now.UnixNano(), n.last+1)
	n.last = ns
	n.counter++
	name := fmt.Sprintf("%020d-%06d", ns, n.counter%1000000)
	if flowKey != "" {
		name += "-" + flowKey
	}
	return name + ".msg"
}

// FlowKey identifies a QoS 2 flow in a file name: the packet identifier
// and a hash of the topic and payload. It stays the same when the broker
// sends the PUBLISH again after a reconnect or a restart, unlike anything
// the client counts itself.
func FlowKey(packetID uint16, topic string, payload []byte) string {
	h := sha256.New()
	h.Write([]byte(topic))
	h.Write([]byte{0})
	h.Write(payload)
	return fmt.Sprintf("q2-%05d-%s", packetID, hex.EncodeToString(h.Sum(nil)[:8]))
}

// flowKeyOf returns the flow key in a name made by namer.next for a
// QoS 2 message, or "" for any other name.
func flowKeyOf(name string) string {
	base, ok := strings.CutSuffix(name, ".msg")
	if !ok {
		return ""
	}
	i := strings.Index(base, "-q2-")
	if i < 0 {
		return ""
	}
	return base[i+1:]
}
