package config

import (
	"errors"
	"strings"
	"testing"
)

func TestLoad_WrongType(t *testing.T) {
	cases := []struct {
		name, file, want string
	}{
		{"float", minimal + "throttle:\n  messages_per_second: fast\n",
			`throttle.messages_per_second: "fast" is not a number: write a number such as 100`},
		{"int", minimal + "  receive_maximum: abc\n",
			`broker.receive_maximum: "abc" is not a whole number: write a whole number such as 64`},
		{"qos", minimal + "publish:\n  qos: x\n",
			`publish.qos: "x" is not a whole number: write a whole number such as 1`},
		{"fraction", minimal + "publish:\n  qos: 1.5\n",
			`publish.qos: 1.5 is not a whole number`},
		{"list for int", minimal + "publish:\n  max_inflight: [1]\n",
			`publish.max_inflight: a list is not a whole number`},
		// YAML 1.2, which viper reads, takes yes as a string, not true.
		{"yes", minimal + "subscriptions:\n  - {filter: a/#, dir: /tmp/in, no_local: yes}\n",
			`subscriptions[0].no_local: "yes" is not true or false: write true or false`},
		{"route qos", minimal + "routes:\n  - {match: a, qos: y}\n",
			`routes[0].qos: "y" is not a whole number`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(LoadOptions{File: writeFile(t, tc.file), LookupEnv: noEnv})
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Load error %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestLoad_WrongTypeFromEnv(t *testing.T) {
	env := envOf(map[string]string{"MQSPOOL_PUBLISH_QOS": "abc"})
	_, err := Load(LoadOptions{File: writeFile(t, minimal), LookupEnv: env})
	want := `publish.qos: "abc" is not a whole number`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v does not contain %q", err, want)
	}
}

// A value of the wrong type is reported with every other problem, and
// the zero value it leaves behind is not reported as a second problem.
func TestLoad_WrongTypeWithOtherProblems(t *testing.T) {
	file := writeFile(t, minimal+"  session_expiry: soon\n  receive_maximum: abc\n"+
		"publish:\n  qos: 3\nthrottle:\n  messages_per_second: fast\nbrokr: 1\n")
	_, err := Load(LoadOptions{File: file, LookupEnv: noEnv})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("Load error %v, want ErrInvalid", err)
	}
	for _, want := range []string{
		`broker.session_expiry: invalid duration "soon"`,
		`broker.receive_maximum: "abc" is not a whole number`,
		`throttle.messages_per_second: "fast" is not a number`,
		"publish.qos: 3 is invalid",
		"brokr: unknown key",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not contain %q:\n%v", want, err)
		}
	}
	for _, notWant := range []string{"must be greater than zero", "0 is out of range"} {
		if strings.Contains(err.Error(), notWant) {
			t.Errorf("error reports the zero value of a key that failed to decode (%q):\n%v", notWant, err)
		}
	}
}
