package format

import "github.com/mqspool/mqspool/internal/message"

// props builds user properties from key, value pairs.
func props(kv ...string) []message.UserProperty {
	var ps []message.UserProperty
	for i := 0; i+1 < len(kv); i += 2 {
		ps = append(ps, message.UserProperty{Key: kv[i], Value: kv[i+1]})
	}
	return ps
}
