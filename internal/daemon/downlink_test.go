package daemon

import (
	"testing"

	"github.com/mqspool/mqspool/internal/config"
	"github.com/mqspool/mqspool/internal/eventloop"
	"github.com/mqspool/mqspool/internal/message"
)

func TestDownlink_Route(t *testing.T) {
	dl := &downlink{subs: loopSubscriptions([]config.Subscription{
		{Filter: "cmd/#"}, {Filter: "cmd/special/+"}, {Filter: "other/+"},
	})}
	cases := []struct {
		name      string
		topic     string
		ids       []int
		wantIndex int
		wantID    int
	}{
		{"identifier wins over first match", "cmd/special/x", []int{2}, 1, 2},
		{"first match without identifier", "cmd/special/x", nil, 0, 0},
		{"identifier out of range", "other/a", []int{9}, 2, 0},
		{"identifier whose filter does not match", "other/a", []int{1}, 2, 0},
		{"no match", "nothing/here", nil, -1, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := &eventloop.Incoming{Message: message.Message{Topic: c.topic}, SubscriptionIdentifiers: c.ids}
			index, id := dl.route(in)
			if index != c.wantIndex {
				t.Errorf("index = %d, want %d", index, c.wantIndex)
			}
			if id != c.wantID {
				t.Errorf("identifier = %d, want %d", id, c.wantID)
			}
		})
	}
}
