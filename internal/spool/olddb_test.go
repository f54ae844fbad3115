package spool

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/mqspool/mqspool/internal/state"
)

// The fixture was written by the first build with a bbolt spool and an
// event loop, which deleted a QoS 2 message at PUBREC. testdata/README
// describes how it was made.
const (
	oldFixture = "testdata/open-flows-6ad2473.db.gz"

	oldMessages     = 44 // queued messages, those of open flows included
	oldQoS1Publish  = 7  // QoS 1 flows waiting for PUBACK
	oldQoS2Publish  = 4  // QoS 2 flows waiting for PUBREC
	oldQoS2Pubrel   = 9  // QoS 2 flows waiting for PUBCOMP, message deleted
	oldWithoutFlows = oldMessages - oldQoS1Publish - oldQoS2Publish
)

// openOldFixture decompresses the fixture into a temporary directory and
// opens it with the current code.
func openOldFixture(t *testing.T) *Spool {
	t.Helper()
	opts := testOptions(t)
	in, err := os.Open(oldFixture)
	if err != nil {
		t.Fatalf("open fixture: %v", err)
	}
	defer in.Close()
	zr, err := gzip.NewReader(in)
	if err != nil {
		t.Fatalf("read fixture %s: %v", oldFixture, err)
	}
	out, err := os.Create(opts.Path)
	if err != nil {
		t.Fatalf("create %s: %v", opts.Path, err)
	}
	if _, err := io.Copy(out, zr); err != nil {
		t.Fatalf("decompress fixture into %s: %v", opts.Path, err)
	}
	if err := out.Close(); err != nil {
		t.Fatalf("close %s: %v", opts.Path, err)
	}
	return openSpool(t, opts)
}

// checkFixtureMessage checks that a message of the fixture has the topic
// and payload written for its QoS: topic up/q1 or up/q2 and a payload
// starting with f-.
func checkFixtureMessage(t *testing.T, r Record) {
	t.Helper()
	if want := fmt.Sprintf("up/q%d", r.Message.QoS); r.Message.Topic != want {
		t.Errorf("seq %d: topic %q, want %q", r.Seq, r.Message.Topic, want)
	}
	if !strings.HasPrefix(string(r.Message.Payload), "f-") {
		t.Errorf("seq %d: payload %q, want the prefix f-", r.Seq, r.Message.Payload)
	}
}

func TestOldDatabaseLoadsFlowsAndMessages(t *testing.T) {
	s := openOldFixture(t)

	st, err := s.LoadState()
	if err != nil {
		t.Fatalf("LoadState: %v", err)
	}
	if !st.Session {
		t.Errorf("Session = false, want the old session resumed")
	}
	stages := map[string]int{}
	for _, f := range st.Outgoing {
		stages[fmt.Sprintf("qos %d stage %d", f.QoS, f.Stage)]++
	}
	equal(t, "flows by QoS and stage", stages, map[string]int{
		"qos 1 stage 1": oldQoS1Publish,
		"qos 2 stage 1": oldQoS2Publish,
		"qos 2 stage 2": oldQoS2Pubrel,
	})
	for _, f := range st.Outgoing {
		if f.Order >= st.NextOrder {
			t.Errorf("flow of packet id %d has order %d, want below NextOrder %d", f.PacketID, f.Order, st.NextOrder)
		}
		r, err := s.Load(f.Seq)
		if f.Stage == state.StagePubrel {
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("Load(%d) of a flow past PUBREC: error %v, want ErrNotFound", f.Seq, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Load(%d) of packet id %d: %v", f.Seq, f.PacketID, err)
			continue
		}
		if r.Message.QoS != f.QoS {
			t.Errorf("seq %d: QoS %d, want the flow's %d", f.Seq, r.Message.QoS, f.QoS)
		}
		checkFixtureMessage(t, r)
	}

	recs, err := s.List(0, 1000)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(recs) != oldMessages {
		t.Fatalf("List returned %d messages, want %d", len(recs), oldMessages)
	}
	payloads := map[string]bool{}
	for _, r := range recs {
		checkFixtureMessage(t, r)
		if payloads[string(r.Message.Payload)] {
			t.Errorf("payload %q is stored twice", r.Message.Payload)
		}
		payloads[string(r.Message.Payload)] = true
	}
	stats := s.Stats()
	if stats.Messages != oldMessages {
		t.Errorf("Stats().Messages = %d, want %d", stats.Messages, oldMessages)
	}
	if stats.Flows != len(st.Outgoing) {
		t.Errorf("Stats().Flows = %d, want %d", stats.Flows, len(st.Outgoing))
	}
}

// The flows of an old database end with the changes of the current event
// loop. A flow past PUBREC ends without a message to delete, because the
// old build deleted it at PUBREC.
func TestOldDatabaseCompletesOpenFlows(t *testing.T) {
	s := openOldFixture(t)
	st, err := s.LoadState()
	if err != nil {
		t.Fatalf("LoadState: %v", err)
	}

	var changes []state.Change
	for _, f := range st.Sorted().Outgoing {
		c := state.Change{PacketID: f.PacketID, Seq: f.Seq, QoS: f.QoS, Order: f.Order}
		switch {
		case f.QoS == 1:
			c.Kind = state.ChangeAcked
		case f.Stage == state.StagePublish:
			c.Kind = state.ChangePubrec
			changes = append(changes, c)
			c.Kind = state.ChangeCompleted
		default:
			c.Kind = state.ChangeCompleted
		}
		changes = append(changes, c)
	}
	if err := s.Commit(changes); err != nil {
		t.Fatalf("Commit of %d changes: %v", len(changes), err)
	}

	st, err = s.LoadState()
	if err != nil {
		t.Fatalf("LoadState after the commit: %v", err)
	}
	if len(st.Outgoing) != 0 {
		t.Errorf("%d flows are still open, want none", len(st.Outgoing))
	}
	recs, err := s.List(0, 1000)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(recs) != oldWithoutFlows {
		t.Errorf("List returned %d messages, want the %d without a flow", len(recs), oldWithoutFlows)
	}
	if got := s.Stats().Messages; got != oldWithoutFlows {
		t.Errorf("Stats().Messages = %d, want %d", got, oldWithoutFlows)
	}
}
