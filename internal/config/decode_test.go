package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/spf13/pflag"
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

// Every size that must not be negative is rejected with the same message
// from the file, the environment and a flag.
func TestLoad_NegativeSizes(t *testing.T) {
	cases := []struct {
		section, key, want string
	}{
		{"spool", "max_bytes", "spool.max_bytes: -1B is negative: use 0 for unlimited"},
		{"spool", "min_free_bytes", "spool.min_free_bytes: -1B is negative: use 0 to never pause ingest"},
		{"spool", "failed_warn_bytes", "spool.failed_warn_bytes: -1B is negative: use 0 to turn the warning off"},
		{"throttle", "bytes_per_second", "throttle.bytes_per_second: -1B is invalid: use 0 (unlimited)"},
		{"publish", "max_message_bytes", "publish.max_message_bytes: -1B is out of range"},
	}
	for _, tc := range cases {
		key := tc.section + "." + tc.key
		sources := map[string]LoadOptions{
			"file": {File: writeFile(t, minimal+tc.section+":\n  "+tc.key+": -1\n"), LookupEnv: noEnv},
			"env":  {File: writeFile(t, minimal), LookupEnv: envOf(map[string]string{EnvName(key): "-1"})},
			"flag": flagOptions(t, key, "-1"),
		}
		for source, opts := range sources {
			t.Run(key+"/"+source, func(t *testing.T) {
				_, err := Load(opts)
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("Load error %v, want ErrInvalid", err)
				}
				if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("error %q does not contain %q", err, tc.want)
				}
			})
		}
	}
}

// flagOptions returns options that load the minimal file with a flag
// --value=value set on the command line for key.
func flagOptions(t *testing.T, key, value string) LoadOptions {
	t.Helper()
	flags := pflag.NewFlagSet("t", pflag.ContinueOnError)
	flags.String("value", "", "")
	if err := flags.Parse([]string{"--value=" + value}); err != nil {
		t.Fatal(err)
	}
	return LoadOptions{File: writeFile(t, minimal), LookupEnv: noEnv, Flags: flags,
		FlagKeys: map[string]string{"value": key}}
}

// A number that the field cannot hold is rejected, not wrapped: YAML
// reads 18446744073709551615 as an unsigned integer, which would become
// -1, and 1e30 as a float.
func TestLoad_NumberOutOfRange(t *testing.T) {
	cases := []struct {
		name, file, want string
	}{
		{"unsigned size", minimal + "spool:\n  min_free_bytes: 18446744073709551615\n",
			`spool.min_free_bytes: invalid size "18446744073709551615": larger than 1EiB`},
		{"signed size", minimal + "spool:\n  max_bytes: 9223372036854775807\n",
			`spool.max_bytes: invalid size "9223372036854775807": larger than 1EiB`},
		{"unsigned count", minimal + "spool:\n  max_messages: 18446744073709551615\n",
			"spool.max_messages: 18446744073709551615 is too large for a whole number: use at most 9223372036854775807"},
		{"float count", minimal + "spool:\n  max_messages: 1e30\n",
			"spool.max_messages: 1e+30 is too large for a whole number"},
		{"negative float count", minimal + "spool:\n  max_messages: -1e30\n",
			"spool.max_messages: -1e+30 is too small for a whole number"},
		{"unsigned inbox count", minimal + "subscriptions:\n  - {filter: a/#, dir: /tmp/in, max_files: 18446744073709551615}\n",
			"subscriptions[0].max_files: 18446744073709551615 is too large for a whole number"},
		{"unsigned inbox size", minimal + "subscriptions:\n  - {filter: a/#, dir: /tmp/in, max_bytes: 18446744073709551615}\n",
			`subscriptions[0].max_bytes: invalid size "18446744073709551615": larger than 1EiB`},
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
			if strings.Contains(err.Error(), "-1 ") || strings.Contains(err.Error(), "-1B") {
				t.Errorf("error %q reports a wrapped value", err)
			}
		})
	}
}

// A size keeps its value whichever numeric type YAML gives it.
func TestLoad_SizeAsNumber(t *testing.T) {
	l, err := Load(LoadOptions{File: writeFile(t, minimal+"spool:\n  min_free_bytes: 0\n  max_bytes: 1048576\n"), LookupEnv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Config.Spool.MinFreeBytes; got != 0 {
		t.Errorf("min_free_bytes = %s, want 0", got)
	}
	if got := l.Config.Spool.MaxBytes; got != 1<<20 {
		t.Errorf("max_bytes = %s, want 1MiB", got)
	}
}

// A key set twice with different case is reported, because viper keeps
// only one of the values, chosen in Go's map order.
func TestLoad_KeyRepeatedInOtherCase(t *testing.T) {
	cases := []struct {
		name, file, want string
	}{
		{"leaf", minimal + "  client_id: a\n  Client_ID: b\n",
			"broker.client_id: set 2 times, as Client_ID, client_id, but keys ignore case"},
		{"section", minimal + "Broker:\n  client_id: a\n",
			"broker: set 2 times, as Broker, broker"},
		{"three", minimal + "pickup:\n  settle: 1s\n  Settle: 2s\n  SETTLE: 3s\n",
			"pickup.settle: set 3 times, as SETTLE, Settle, settle"},
		{"list item", minimal + "subscriptions:\n  - {filter: a/#, dir: /tmp/in, max_files: 5, Max_Files: 7}\n",
			"subscriptions[0].max_files: set 2 times, as Max_Files, max_files"},
		{"list", minimal + "routes: []\nRoutes:\n  - {match: a, topic: b}\n",
			"routes: set 2 times, as Routes, routes"},
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
