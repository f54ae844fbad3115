package daemon

import (
	"testing"

	"github.com/mqspool/mqspool/internal/eventloop"
	"github.com/mqspool/mqspool/internal/spool"
)

func TestDrainRate(t *testing.T) {
	queue := spool.Stats{Messages: 100, Bytes: 100 * 1024}
	cases := []struct {
		name string
		out  float64
		loop eventloop.Stats
		want float64
	}{
		{"measured", 50, eventloop.Stats{Connected: true}, 50},
		{"paused", 50, eventloop.Stats{Connected: true, Paused: true}, 0},
		{"disconnected", 50, eventloop.Stats{}, 0},
		{"message throttle", 50, eventloop.Stats{Connected: true, MessagesPerSecond: 0.001}, 0.001},
		{"byte throttle", 50, eventloop.Stats{Connected: true, BytesPerSecond: 2048}, 2},
		{"throttle above the rate", 50, eventloop.Stats{Connected: true, MessagesPerSecond: 500}, 50},
		{"nothing sent", 0, eventloop.Stats{Connected: true, MessagesPerSecond: 10}, 0},
	}
	for _, tc := range cases {
		if got := drainRate(tc.out, tc.loop, queue); got != tc.want {
			t.Errorf("%s: drainRate = %g, want %g", tc.name, got, tc.want)
		}
	}
}
