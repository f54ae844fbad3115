package message

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// Errors returned by ValidateFilter. Callers wrap them with the filter.
var (
	// ErrFilterEmpty reports a zero-length topic filter.
	ErrFilterEmpty = errors.New("topic filter is empty")
	// ErrFilterTooLong reports a topic filter over MaxTopicBytes.
	ErrFilterTooLong = errors.New("topic filter is longer than 65535 bytes")
	// ErrFilterNotUTF8 reports a topic filter that is not valid UTF-8.
	ErrFilterNotUTF8 = errors.New("topic filter is not valid UTF-8")
	// ErrFilterNUL reports a topic filter containing U+0000.
	ErrFilterNUL = errors.New("topic filter contains U+0000")
	// ErrFilterHash reports a # that is not the whole last level.
	ErrFilterHash = errors.New("# must be the whole last level, as in a/#")
	// ErrFilterPlus reports a + that is not a whole level.
	ErrFilterPlus = errors.New("+ must be a whole level, as in a/+/b")
	// ErrShareName reports a shared subscription with an empty share
	// name or one containing + or #.
	ErrShareName = errors.New("a shared subscription needs a share name without +, # or /, as in $share/group/a/#")
	// ErrShareFilter reports a shared subscription without a topic
	// filter after its share name.
	ErrShareFilter = errors.New("a shared subscription needs a topic filter after the share name, as in $share/group/a/#")
)

// sharePrefix starts an MQTT 5 shared subscription: $share/NAME/FILTER.
const sharePrefix = "$share/"

// ValidateFilter checks that filter is a valid topic filter for a
// SUBSCRIBE, by the rules of the OASIS MQTT 5.0 standard for topic
// filters (section 4.7) and shared subscriptions (section 4.8.2). A
// broker treats an invalid filter as a malformed packet (reason code
// 0x81) and closes the connection.
func ValidateFilter(filter string) error {
	switch {
	case filter == "":
		return ErrFilterEmpty
	case len(filter) > MaxTopicBytes:
		return ErrFilterTooLong
	case !utf8.ValidString(filter):
		return ErrFilterNotUTF8
	case strings.IndexByte(filter, 0) >= 0:
		return ErrFilterNUL
	}

	if rest, ok := strings.CutPrefix(filter, sharePrefix); ok {
		name, shared, found := strings.Cut(rest, "/")
		if name == "" || strings.ContainsAny(name, "+#") {
			return ErrShareName
		}
		if !found || shared == "" {
			return ErrShareFilter
		}
		filter = shared
	}
	return validateLevels(filter)
}

// validateLevels checks that the wildcards of filter fill whole levels
// and that # is the last one.
func validateLevels(filter string) error {
	levels := strings.Split(filter, "/")
	for i, level := range levels {
		switch {
		case level == "+":
		case level == "#" && i == len(levels)-1:
		case strings.Contains(level, "#"):
			return ErrFilterHash
		case strings.Contains(level, "+"):
			return ErrFilterPlus
		}
	}
	return nil
}
