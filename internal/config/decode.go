package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
)

// decodeProblem is one message from decoding, with the key whose value
// could not be decoded. key is empty for a problem that leaves no field
// unset, such as an unknown key.
type decodeProblem struct {
	key, text string
}

// decode fills a Config from v, which has read the config file data.
// Every key that decodes is set even when others fail, so their problems
// can be reported together with those of the validation. A key that
// failed keeps its zero value.
func decode(v *viper.Viper, data []byte) (*Config, []decodeProblem) {
	var cfg Config
	hook := mapstructure.ComposeDecodeHookFunc(
		durationHook,
		mapstructure.StringToSliceHookFunc(","),
		byteSizeHook,
		integerHook,
	)
	err := v.Unmarshal(&cfg, viper.DecodeHook(hook), func(dc *mapstructure.DecoderConfig) {
		dc.ErrorUnused = true
	})
	applySubscriptionDefaults(v, &cfg)
	raw, lists := rawProblems(data)
	problems := append(decodeProblems(err), raw...)
	if len(lists) > 0 {
		problems = append(withoutItemsOf(problems, lists), lists...)
	}
	return &cfg, problems
}

// withoutItemsOf drops the problems of list items, such as routes[0].a,
// under a list key that lists reports as a whole.
func withoutItemsOf(problems, lists []decodeProblem) []decodeProblem {
	return slices.DeleteFunc(problems, func(p decodeProblem) bool {
		for _, l := range lists {
			if strings.HasPrefix(p.key, l.key+"[") || strings.HasPrefix(p.text, l.key+"[") {
				return true
			}
		}
		return false
	})
}

// knownKey reports whether key is a configuration key or a section that
// holds some.
func knownKey(key string) bool {
	if _, ok := defaults[key]; ok || key == "routes" || key == "subscriptions" {
		return true
	}
	for k := range defaults {
		if strings.HasPrefix(k, key+".") {
			return true
		}
	}
	return false
}

// decodeProblems rewrites mapstructure's decoding errors as one problem
// per key, naming the key, the value and the fix.
func decodeProblems(err error) []decodeProblem {
	var problems []decodeProblem
	for _, e := range leafErrors(err) {
		var de *mapstructure.DecodeError
		if !errors.As(e, &de) {
			problems = append(problems, decodeProblem{text: e.Error()})
			continue
		}
		problems = append(problems, describeDecodeError(de)...)
	}
	return problems
}

// leafErrors flattens the tree of joined errors that mapstructure returns,
// stopping at the first DecodeError on each branch.
func leafErrors(err error) []error {
	switch e := err.(type) {
	case nil:
		return nil
	case *mapstructure.DecodeError:
		return []error{e}
	case interface{ Unwrap() []error }:
		var leaves []error
		for _, inner := range e.Unwrap() {
			leaves = append(leaves, leafErrors(inner)...)
		}
		return leaves
	case interface{ Unwrap() error }:
		return leafErrors(e.Unwrap())
	}
	return []error{err}
}

func describeDecodeError(de *mapstructure.DecodeError) []decodeProblem {
	key, cause := de.Name(), de.Unwrap()
	if keys, ok := strings.CutPrefix(cause.Error(), "has invalid keys: "); ok {
		return unknownKeys(key, keys)
	}
	if got, ok := strings.CutPrefix(cause.Error(), "expected a map or struct, got "); ok {
		return []decodeProblem{{key: key, text: fmt.Sprintf("%s: %s is not a mapping: write the keys "+
			"indented below it, as in configs/mqspool.yaml", key, yamlKindOf(strings.Trim(got, `"`)))}}
	}

	var parseErr *mapstructure.ParseError
	var typeErr *mapstructure.UnconvertibleTypeError
	var wrongErr *wrongTypeError
	switch {
	case errors.As(cause, &parseErr):
		return []decodeProblem{wrongType(key, parseErr.Value, parseErr.Expected.Kind())}
	case errors.As(cause, &typeErr):
		return []decodeProblem{wrongType(key, typeErr.Value, typeErr.Expected.Kind())}
	case errors.As(cause, &wrongErr):
		return []decodeProblem{wrongType(key, wrongErr.value, wrongErr.kind)}
	}
	return []decodeProblem{{key: key, text: key + ": " + cause.Error()}}
}

func unknownKeys(prefix, keys string) []decodeProblem {
	var problems []decodeProblem
	for _, k := range strings.Split(keys, ", ") {
		if prefix != "" {
			k = prefix + "." + k
		}
		problems = append(problems, decodeProblem{text: k + ": unknown key: check its spelling against configs/mqspool.yaml"})
	}
	return problems
}

// wrongType describes a value of the wrong type for key, which expects
// the kind want.
func wrongType(key string, value any, want reflect.Kind) decodeProblem {
	var expected, fix string
	switch want {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		expected, fix = "a whole number", "write a whole number such as "+exampleOf(key, "1")
	case reflect.Float32, reflect.Float64:
		expected, fix = "a number", "write a number such as "+exampleOf(key, "100")
	case reflect.Bool:
		expected, fix = "true or false", "write true or false"
	case reflect.Slice, reflect.Array:
		expected, fix = "a list", "write a list such as [a, b]"
	case reflect.Struct, reflect.Map:
		expected, fix = "a mapping", "write the keys indented below it, as in configs/mqspool.yaml"
	default:
		expected, fix = "text", "write a single value"
	}
	return decodeProblem{key: key, text: fmt.Sprintf("%s: %s is not %s: %s", key, describeValue(value), expected, fix)}
}

// exampleOf returns the default of key as an example value, or fallback
// when key has no default other than zero.
func exampleOf(key, fallback string) string {
	if d, ok := defaults[key]; ok && fmt.Sprint(d) != "0" {
		return fmt.Sprint(d)
	}
	return fallback
}

// describeValue shows a value as it was written: a string quoted, a list
// or a mapping by its kind only.
func describeValue(value any) string {
	switch v := value.(type) {
	case string:
		return quoteShort(v)
	case []any, []string:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprint(value)
}

// wrongTypeError is a value that a decode hook rejects for a field of
// the given kind.
type wrongTypeError struct {
	value any
	kind  reflect.Kind
}

func (e *wrongTypeError) Error() string {
	return fmt.Sprintf("%v is not valid for a field of kind %s", e.value, e.kind)
}

// integerHook rejects a number that an integer field cannot hold, since
// mapstructure would change it without an error. It truncates a fraction,
// so qos 1.5 would become 1. It also wraps a value out of range, so
// 18446744073709551615, which YAML reads as an unsigned integer, would
// become -1.
func integerHook(from, to reflect.Type, data any) (any, error) {
	switch to.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
	default:
		return data, nil
	}

	field := reflect.New(to).Elem()
	value := reflect.ValueOf(data)
	switch {
	case value.CanFloat():
		f := value.Float()
		if f != math.Trunc(f) {
			return nil, &wrongTypeError{value: data, kind: to.Kind()}
		}
		if f < math.MinInt64 || f >= math.MaxInt64 || field.OverflowInt(int64(f)) {
			return nil, outOfRange(data, to)
		}
	case value.CanInt():
		if field.OverflowInt(value.Int()) {
			return nil, outOfRange(data, to)
		}
	case value.CanUint():
		if value.Uint() > math.MaxInt64 || field.OverflowInt(int64(value.Uint())) {
			return nil, outOfRange(data, to)
		}
	}
	return data, nil
}

// outOfRange describes a number too large or too small for an integer
// field of type to.
func outOfRange(data any, to reflect.Type) error {
	bits := to.Bits()
	if strings.HasPrefix(fmt.Sprint(data), "-") {
		return fmt.Errorf("%v is too small for a whole number: use at least %d", data, int64(-1)<<(bits-1))
	}
	return fmt.Errorf("%v is too large for a whole number: use at most %d", data, int64(uint64(1)<<(bits-1)-1))
}

// durationHook decodes durations written as "500ms", "30s" or "24h". A
// bare number is rejected: YAML reads 30 as an integer, which would
// otherwise become 30 nanoseconds.
func durationHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeOf(time.Duration(0)) {
		return data, nil
	}
	switch d := data.(type) {
	case string:
		parsed, err := time.ParseDuration(d)
		if err != nil {
			return nil, fmt.Errorf("invalid duration %q: use a number with a unit such as 500ms, 30s or 24h", d)
		}
		return parsed, nil
	case int, int64, float64, uint64:
		if fmt.Sprint(d) == "0" {
			return time.Duration(0), nil
		}
		return nil, fmt.Errorf("duration %v has no unit: write it with one, such as %vs or %vms", d, d, d)
	}
	return data, nil
}

// byteSizeHook decodes a size written as a string ("64MiB") or as a YAML
// number, with the same checks for both, so 1.5 is rejected. A negative
// size is kept, so that validation reports it under its key with what 0
// means there, whether it came from the file, the environment or a flag.
func byteSizeHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeOf(ByteSize(0)) {
		return data, nil
	}
	if d, ok := data.(string); ok {
		return parseSignedByteSize(d)
	}

	value := reflect.ValueOf(data)
	switch {
	case value.CanFloat():
		return parseSignedByteSize(strconv.FormatFloat(value.Float(), 'f', -1, 64))
	case value.CanInt():
		return parseSignedByteSize(strconv.FormatInt(value.Int(), 10))
	case value.CanUint():
		return parseSignedByteSize(strconv.FormatUint(value.Uint(), 10))
	}
	return data, nil
}

// parseSignedByteSize parses s as ParseByteSize does, but returns a
// negative size for a leading minus sign instead of an error.
func parseSignedByteSize(s string) (ByteSize, error) {
	magnitude, negative := strings.CutPrefix(strings.TrimSpace(s), "-")
	if !negative {
		return ParseByteSize(s)
	}
	size, err := ParseByteSize(magnitude)
	if err != nil {
		// Report the value as it was written, with its sign.
		_, err = ParseByteSize(s)
		return 0, err
	}
	return -size, nil
}

// yamlKindOf names, as a YAML file shows it, a value of the Go kind that
// mapstructure names in its errors, such as "slice" or "float64".
func yamlKindOf(kind string) string {
	switch {
	case kind == "slice" || kind == "array":
		return "a list"
	case kind == "bool":
		return "true or false"
	case kind == "string":
		return "a string"
	case strings.HasPrefix(kind, "int") || strings.HasPrefix(kind, "uint") || strings.HasPrefix(kind, "float"):
		return "a number"
	}
	return "a value of type " + kind
}
