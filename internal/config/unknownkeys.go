package config

import (
	"fmt"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// valuelessUnknownKeys reports the unknown keys in the YAML config file
// data that set no value: a key with no value (YAML null) or with an
// empty mapping, such as "brokr: {}", or with only such keys below it.
// Viper leaves these keys out of what it decodes, so the decoder's
// unknown-key check never gets them. It reads data with the YAML library
// that viper uses, so both see the same keys.
func valuelessUnknownKeys(data []byte) []decodeProblem {
	var root map[string]any
	if err := yaml.Unmarshal(data, &root); err != nil {
		// Viper has parsed the same data, and reports any syntax error.
		return nil
	}
	var problems []decodeProblem
	for _, key := range valuelessUnknown("", root) {
		problems = append(problems, unknownKeys("", key)...)
	}
	return problems
}

// valuelessUnknown returns the unknown keys below prefix in section that
// set no value, sorted, each named by its full lower-case key as viper
// names keys. It descends into the sections that hold configuration keys,
// but not into an unknown key, which is reported as a whole.
func valuelessUnknown(prefix string, section map[string]any) []string {
	var keys []string
	for name, value := range section {
		key := strings.ToLower(name)
		if prefix != "" {
			key = prefix + "." + key
		}
		if !knownKey(key) {
			if !setsValue(value) {
				keys = append(keys, key)
			}
			continue
		}
		if sub, ok := asMapping(value); ok && isSection(key) {
			keys = append(keys, valuelessUnknown(key, sub)...)
		}
	}
	sort.Strings(keys)
	return keys
}

// setsValue reports whether value keeps a key in what viper decodes: any
// value other than null and a mapping that holds only such values.
func setsValue(value any) bool {
	if value == nil {
		return false
	}
	sub, ok := asMapping(value)
	if !ok {
		return true
	}
	for _, v := range sub {
		if setsValue(v) {
			return true
		}
	}
	return false
}

// isSection reports whether key holds configuration keys rather than a
// value of its own.
func isSection(key string) bool {
	_, leaf := defaults[key]
	return !leaf && key != "routes" && key != "subscriptions"
}

// asMapping returns value as a map with string keys. The YAML library
// decodes a nested mapping whose keys are not all strings, such as
// "1: x", into a map with keys of any type.
func asMapping(value any) (map[string]any, bool) {
	switch m := value.(type) {
	case map[string]any:
		return m, true
	case map[any]any:
		out := make(map[string]any, len(m))
		for k, v := range m {
			out[fmt.Sprint(k)] = v
		}
		return out, true
	}
	return nil, false
}
