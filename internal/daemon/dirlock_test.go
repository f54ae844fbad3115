package daemon

import (
	"strings"
	"testing"
)

func TestLockSpoolDir_SecondLockFails(t *testing.T) {
	dir := t.TempDir()
	first, err := lockSpoolDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockSpoolDir(dir); err == nil || !strings.Contains(err.Error(), "in use by another mqspool daemon") {
		t.Errorf("second lock: %v, want an in-use error", err)
	}
	first.Close()
	again, err := lockSpoolDir(dir)
	if err != nil {
		t.Errorf("lock after release: %v", err)
	}
	again.Close()
}

func TestDeriveClientID_DiffersBySpool(t *testing.T) {
	a, err := deriveClientID("/var/lib/mqspool/a.db")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := deriveClientID("/var/lib/mqspool/b.db")
	again, _ := deriveClientID("/var/lib/mqspool/a.db")
	if a == b {
		t.Errorf("two databases on one host share client id %s", a)
	}
	if a != again {
		t.Errorf("client id not stable: %s then %s", a, again)
	}
	if len(a) > 23 {
		t.Errorf("client id %s is longer than 23 characters", a)
	}
}
