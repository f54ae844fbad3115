package eventloop

import (
	"slices"
	"testing"
)

func TestIDTable_CountsAndVisitsEntries(t *testing.T) {
	var tab idTable[uint64]
	if tab.get(7) != 0 || tab.len() != 0 {
		t.Fatal("empty table reports an entry")
	}
	tab.set(65535, 3)
	tab.set(1, 1)
	tab.set(1, 2) // replaces, does not count twice
	tab.delete(9) // absent: no change
	if tab.len() != 2 || tab.get(1) != 2 || tab.get(65535) != 3 {
		t.Fatalf("len %d, get(1) %d, get(65535) %d; want 2, 2, 3", tab.len(), tab.get(1), tab.get(65535))
	}

	var ids []uint16
	tab.each(func(id uint16, _ uint64) bool { ids = append(ids, id); return true })
	if !slices.Equal(ids, []uint16{1, 65535}) {
		t.Errorf("each visited %v, want [1 65535]", ids)
	}

	tab.delete(1)
	tab.delete(1)
	if tab.len() != 1 || tab.get(1) != 0 {
		t.Errorf("after delete: len %d, get(1) %d; want 1, 0", tab.len(), tab.get(1))
	}
	tab.clear()
	if tab.len() != 0 || tab.get(65535) != 0 {
		t.Errorf("after clear: len %d, get(65535) %d; want 0, 0", tab.len(), tab.get(65535))
	}
}
