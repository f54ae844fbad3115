package config

import (
	"fmt"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// rawProblems checks the YAML config file data for what viper hides from
// its decoder: keys that set no value, keys repeated in another case, and
// lists written as something else. It reads data with the YAML library
// that viper uses, so both see the same keys. lists holds the problems of
// list keys, which stand for the problems of their items.
func rawProblems(data []byte) (problems, lists []decodeProblem) {
	var root map[string]any
	if err := yaml.Unmarshal(data, &root); err != nil {
		// Viper has parsed the same data, and reports any syntax error.
		return nil, nil
	}
	problems = append(valuelessUnknownKeys(root), caseRepeatedKeys(root)...)
	return problems, notLists(root)
}

// valuelessUnknownKeys reports the unknown keys in the config file's root
// mapping that set no value: a key with no value (YAML null) or with an
// empty mapping, such as "brokr: {}", or with only such keys below it.
// Viper leaves these keys out of what it decodes, so the decoder's
// unknown-key check never gets them.
func valuelessUnknownKeys(root map[string]any) []decodeProblem {
	var problems []decodeProblem
	for _, key := range valuelessUnknown("", root) {
		problems = append(problems, unknownKeys("", key)...)
	}
	return problems
}

// listItems names, for each key whose value is a list of mappings, the
// key that starts each item in configs/mqspool.yaml.
var listItems = map[string]string{"routes": "match", "subscriptions": "filter"}

// notLists reports a list key written as anything but a list, such as
// "routes: {}", or "routes:" with keys indented below it and no "- ".
// The decoder would take a mapping with keys or a single value as a list
// of one item, and drop an empty mapping, so the mistake would go
// unreported or be reported as a problem of that item.
func notLists(root map[string]any) []decodeProblem {
	var problems []decodeProblem
	for name, value := range root {
		key := strings.ToLower(name)
		first, ok := listItems[key]
		if _, list := value.([]any); !ok || list || value == nil {
			continue
		}
		problems = append(problems, decodeProblem{key: key, text: fmt.Sprintf("%s: %s where a list "+
			"belongs: start each item with \"- %s:\", as in configs/mqspool.yaml, or write %s: [] for none",
			key, yamlKind(value), first, key)})
	}
	sort.Slice(problems, func(i, j int) bool { return problems[i].key < problems[j].key })
	return problems
}

// yamlKind names the kind of a decoded YAML value for a message.
func yamlKind(value any) string {
	if _, ok := asMapping(value); ok {
		return "a mapping"
	}
	switch value.(type) {
	case string:
		return "a string"
	case bool:
		return "true or false"
	}
	return "a number"
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
