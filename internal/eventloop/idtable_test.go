package eventloop

import (
	"slices"
	"testing"
)

func TestIDTable_CountsAndVisitsEntries(t *testing.T) {
	var tab idTable[uint64]
	if tab.get(7) != 0 {
		t.Error("empty table returns a value")
	}
	if tab.len() != 0 {
		t.Errorf("empty table has len %d, want 0", tab.len())
	}

	tab.set(65535, 3)
	tab.set(1, 1)
	tab.set(1, 2) // replaces, does not count twice
	tab.delete(9) // absent: no change
	if tab.len() != 2 {
		t.Errorf("len %d, want 2", tab.len())
	}
	if got := tab.get(1); got != 2 {
		t.Errorf("get(1) = %d, want 2", got)
	}
	if got := tab.get(65535); got != 3 {
		t.Errorf("get(65535) = %d, want 3", got)
	}

	var ids []uint16
	tab.each(func(id uint16, _ uint64) bool { ids = append(ids, id); return true })
	if !slices.Equal(ids, []uint16{1, 65535}) {
		t.Errorf("each visited %v, want [1 65535]", ids)
	}

	tab.delete(1)
	tab.delete(1)
	if tab.len() != 1 {
		t.Errorf("after deleting 1: len %d, want 1", tab.len())
	}
	if got := tab.get(1); got != 0 {
		t.Errorf("after deleting 1: get(1) = %d, want 0", got)
	}

	tab.clear()
	if tab.len() != 0 {
		t.Errorf("after clear: len %d, want 0", tab.len())
	}
	if got := tab.get(65535); got != 0 {
		t.Errorf("after clear: get(65535) = %d, want 0", got)
	}
}

// SUBSCRIBE, UNSUBSCRIBE and the birth PUBLISH take packet identifiers
// outside the session state. MQTT 5 forbids reusing an identifier
// while its packet waits for an acknowledgement, and the loop would match
// that acknowledgement to the wrong packet.
func TestAllocate_SkipsSubscribeAndBirthIDs(t *testing.T) {
	l, err := New(testOptions(newFakeBroker(t, brokerScript{})), newMemSource(), &testJournal{}, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer l.Close()
	l.st.LastPacketID = 4
	l.birthIDs[5] = true
	l.subIDs[6] = subRequest{}

	id, err := l.allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	if id != 7 {
		t.Errorf("allocate returned packet identifier %d with 5 held by the birth message and 6 by a SUBSCRIBE, want 7", id)
	}
}
