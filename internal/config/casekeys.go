package config

import (
	"fmt"
	"sort"
	"strings"
)

// caseRepeatedKeys reports each key set more than once with different
// upper and lower case in one mapping below root, the config file's top
// level, such as "client_id" and "Client_ID". Viper (v1.21.0,
// insensitiviseMap) lower-cases the keys of each mapping in Go's map
// order, so only one of the values takes effect, and which one can change
// from run to run.
func caseRepeatedKeys(root map[string]any) []decodeProblem {
	problems := caseRepeatsInMapping("", root)
	sort.Slice(problems, func(i, j int) bool { return problems[i].text < problems[j].text })
	return problems
}

// caseRepeatsInMapping reports the repeated keys of section, whose keys
// are named below prefix, and those of the mappings and lists inside it.
func caseRepeatsInMapping(prefix string, section map[string]any) []decodeProblem {
	var problems []decodeProblem
	spellings := map[string][]string{}
	for name, value := range section {
		key := strings.ToLower(name)
		if prefix != "" {
			key = prefix + "." + key
		}
		spellings[key] = append(spellings[key], name)
		problems = append(problems, caseRepeatsInValue(key, value)...)
	}
	for key, names := range spellings {
		if len(names) < 2 {
			continue
		}
		sort.Strings(names)
		problems = append(problems, decodeProblem{text: fmt.Sprintf("%s: set %d times, as %s, but keys "+
			"ignore case, so only one value takes effect: keep one of them", key, len(names),
			strings.Join(names, ", "))})
	}
	return problems
}

// caseRepeatsInValue reports the repeated keys inside value, the value
// of key: in a mapping, or in the mappings of a list such as routes.
func caseRepeatsInValue(key string, value any) []decodeProblem {
	if section, ok := asMapping(value); ok {
		return caseRepeatsInMapping(key, section)
	}
	list, _ := value.([]any)
	var problems []decodeProblem
	for i, item := range list {
		if section, ok := asMapping(item); ok {
			problems = append(problems, caseRepeatsInMapping(fmt.Sprintf("%s[%d]", key, i), section)...)
		}
	}
	return problems
}
