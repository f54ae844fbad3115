package inbox

import "strings"

// Match reports whether an MQTT topic filter matches a topic name. '+'
// matches one level and '#' the rest, including the parent level itself
// ("a/#" matches "a"). A wildcard in the first level does not match a
// topic that starts with '$'. A shared subscription filter
// ("$share/group/filter") matches like its filter.
func Match(filter, topic string) bool {
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		_, filter, ok = strings.Cut(rest, "/")
		if !ok {
			return false
		}
	}
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}

	fs := strings.Split(filter, "/")
	ts := strings.Split(topic, "/")
	for i, f := range fs {
		switch {
		case f == "#":
			return i == len(fs)-1
		case i >= len(ts):
			return false
		case f != "+" && f != ts[i]:
			return false
		}
	}
	return len(fs) == len(ts)
}
