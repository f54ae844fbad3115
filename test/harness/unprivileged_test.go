package harness

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// childEnv marks the run of the test binary inside a user namespace.
const childEnv = "MQSPOOL_TEST_IN_USERNS"

// Where the tests run as root but may not switch to uid 65534, as in a
// user namespace that maps only root, a permission test cannot run and
// is skipped with the reason, instead of failing.
func TestRunUnprivileged_SkipsWithoutSetuid(t *testing.T) {
	if os.Getenv(childEnv) == "1" {
		if RunUnprivileged(t) {
			t.Fatal("test body ran as root")
		}
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root, to enter a user namespace that maps only root")
	}
	if err := exec.Command("unshare", "-U", "-r", "true").Run(); err != nil {
		t.Skipf("cannot create a user namespace with unshare -U -r: %v", err)
	}

	cmd := exec.Command("unshare", "-U", "-r", os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("test failed where uid 65534 cannot be set: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- SKIP") {
		t.Errorf("test not skipped where uid 65534 cannot be set:\n%s", out)
	}
}

func TestRanTest(t *testing.T) {
	cases := []struct {
		out  string
		want bool
	}{
		{"=== RUN   TestA\n--- PASS: TestA (0.01s)\nPASS\n", true},
		{"=== RUN   TestA\n--- SKIP: TestA (0.00s)\n", true},
		{"testing: warning: no tests to run\nPASS\n", false},
		{"=== RUN   TestAB\n--- PASS: TestAB (0.01s)\n", false},
	}
	for _, c := range cases {
		if got := ranTest(c.out, "TestA"); got != c.want {
			t.Errorf("ranTest(%q, TestA) = %v, want %v", c.out, got, c.want)
		}
	}
}
