package config

import (
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
)

// otherEnv lists MQSPOOL_ variables that are not configuration keys but
// are read elsewhere: the password, the crash points of the durability
// tests, and the variable that makes the binary the database check's
// child process.
var otherEnv = map[string]bool{PasswordEnv: true, "MQSPOOL_CRASHPOINT": true, "MQSPOOL_SPOOL_CHECK": true}

// unknownEnv returns a warning for each MQSPOOL_ variable in environ that
// names no key, with the closest known name when one is near. Such a
// variable is ignored, like a misspelt one.
func unknownEnv(environ []string) []string {
	known := []string{PasswordEnv}
	for key := range defaults {
		known = append(known, EnvName(key))
	}

	var warnings []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, EnvPrefix+"_") || otherEnv[name] || slices.Contains(known, name) {
			continue
		}
		if list := envListKey(name); list != "" {
			warnings = append(warnings, fmt.Sprintf("environment variable %s is ignored: "+
				"%s is a list and can only be set in the configuration file", name, list))
			continue
		}
		w := fmt.Sprintf("environment variable %s names no setting and is ignored", name)
		if near := closest(name, known); near != "" {
			w += fmt.Sprintf(": did you mean %s?", near)
		} else {
			w += ": use MQSPOOL_ and the key path in upper snake case, as listed by mqspool config print"
		}
		warnings = append(warnings, w)
	}
	sort.Strings(warnings)
	return warnings
}

// envListKey returns "routes" or "subscriptions" when name is the variable
// of that list or of an entry in it, and "" otherwise. Lists of
// mappings have no environment form.
func envListKey(name string) string {
	for _, key := range []string{"routes", "subscriptions"} {
		env := EnvName(key)
		if name == env || strings.HasPrefix(name, env+"_") {
			return key
		}
	}
	return ""
}

// withWarnings adds the warnings to a configuration error, since a
// misspelt variable is often its cause: MQSPOOL_BROKER_URL leaves
// broker.urls missing.
func withWarnings(err error, warnings []string) error {
	if len(warnings) == 0 {
		return err
	}
	return fmt.Errorf("%w\n  %s", err, strings.Join(warnings, "\n  "))
}

// closest returns the name in names within two edits of name, or "".
func closest(name string, names []string) string {
	best, bestDist := "", 3
	for _, n := range names {
		if d := editDistance(name, n); d < bestDist || (d == bestDist && n < best) {
			best, bestDist = n, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// environ returns the environment to check: opts.Environ, or the
// process's when neither it nor LookupEnv is set.
func (opts LoadOptions) environ() []string {
	switch {
	case opts.Environ != nil:
		return opts.Environ()
	case opts.LookupEnv == nil:
		return os.Environ()
	}
	return nil
}

// nameEnv adds the environment variable to each problem of a key that
// was set from the environment, so that the user does not look for the
// value in the file.
func (v *validator) nameEnv(env map[string]bool) {
	for i, p := range v.problems {
		key, _, ok := strings.Cut(p, ": ")
		if ok && env[listKey(key)] {
			v.problems[i] = fmt.Sprintf("%s (the value is from the environment variable %s)", p, EnvName(listKey(key)))
		}
	}
}
