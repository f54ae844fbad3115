package inbox

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNamer_Next_SortsInArrivalOrder(t *testing.T) {
	var n namer
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var names []string
	for i := range 50 {
		// The clock stops and then jumps back, and names still rise.
		at := now
		if i > 25 {
			at = now.Add(-time.Hour)
		}
		names = append(names, n.next(at, ""))
	}
	if !slices.IsSorted(names) {
		t.Errorf("names do not sort in arrival order: %v", names)
	}
	if len(slices.Compact(slices.Clone(names))) != len(names) {
		t.Errorf("names repeat: %v", names)
	}
	for _, name := range names {
		if !strings.HasSuffix(name, ".msg") || strings.HasPrefix(name, ".") {
			t.Errorf("name %q is not a visible .msg name", name)
		}
	}
}

func TestFlowKey_StableForSameFlow(t *testing.T) {
	a := FlowKey(7, "t/1", []byte("x"))
	if b := FlowKey(7, "t/1", []byte("x")); a != b {
		t.Errorf("same flow gives %q and %q", a, b)
	}
	for _, other := range []string{
		FlowKey(8, "t/1", []byte("x")),
		FlowKey(7, "t/2", []byte("x")),
		FlowKey(7, "t/1", []byte("y")),
		FlowKey(7, "t/1x", nil),
	} {
		if other == a {
			t.Errorf("different flow gives the same key %q", a)
		}
	}
	var n namer
	name := n.next(time.Now(), a)
	if got := flowKeyOf(name); got != a {
		t.Errorf("flowKeyOf(%q) = %q, want %q", name, got, a)
	}
	if got := flowKeyOf(n.next(time.Now(), "")); got != "" {
		t.Errorf("flowKeyOf of a QoS 1 name = %q, want none", got)
	}
}
