package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// EnvPrefix is the prefix of environment variables: broker.keep_alive is
// read from MQSPOOL_BROKER_KEEP_ALIVE.
const EnvPrefix = "MQSPOOL"

// PasswordEnv carries the broker password. It is read from the
// environment only.
const PasswordEnv = "MQSPOOL_BROKER_PASSWORD"

// Source is the origin of an effective value.
type Source string

// The sources of a value, lowest precedence first.
const (
	SourceDefault Source = "default"
	SourceFile    Source = "file"
	SourceEnv     Source = "env"
	SourceFlag    Source = "flag"
)

// Loaded is a configuration with the origin of each key.
type Loaded struct {
	Config *Config
	// File is the config file that was read, or empty.
	File string
	// Sources maps each scalar key to where its value came from.
	Sources map[string]Source
	// Values maps each scalar key to its effective value as viper holds it.
	Values map[string]any
	// Warnings name MQSPOOL_ environment variables that set nothing.
	Warnings []string
}

// LoadOptions locate the config file, the flags and the environment.
type LoadOptions struct {
	// File is the config file. Empty means DefaultFile if it exists.
	File string
	// Flags holds command-line flags; a flag overrides the key named in
	// FlagKeys when it was set on the command line.
	Flags *pflag.FlagSet
	// FlagKeys maps flag names to config keys.
	FlagKeys map[string]string
	// LookupEnv replaces os.LookupEnv in tests.
	LookupEnv func(string) (string, bool)
	// Environ replaces os.Environ in tests, for the check of unknown
	// MQSPOOL_ variables. With LookupEnv set and Environ nil there is
	// no check.
	Environ func() []string
	// Offline is set by commands that never connect to the broker, such
	// as publish and the spool commands: for them broker.urls may be
	// missing.
	Offline bool
}

// ErrInvalid wraps every validation and parse failure, so the commands can
// exit with status 2 for it.
var ErrInvalid = errors.New("invalid configuration")

// Load reads the file, the environment and the flags, and validates the
// result. Every error wraps ErrInvalid.
func Load(opts LoadOptions) (*Loaded, error) {
	lookup := opts.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}

	v := viper.New()
	for key, value := range defaults {
		v.SetDefault(key, value)
	}
	file, err := readFile(v, opts.File)
	if err != nil {
		return nil, err
	}
	env := bindEnv(v, lookup)
	warnings := unknownEnv(opts.environ())
	flags, err := bindFlags(v, opts.Flags, opts.FlagKeys)
	if err != nil {
		return nil, err
	}

	cfg, err := decode(v)
	if err != nil {
		return nil, withWarnings(err, warnings)
	}
	if pw, ok := lookup(PasswordEnv); ok {
		cfg.Broker.Password = pw
	}
	if err := cfg.validate(opts.Offline); err != nil {
		return nil, withWarnings(err, warnings)
	}

	loaded := &Loaded{Config: cfg, File: file, Sources: map[string]Source{}, Values: map[string]any{},
		Warnings: warnings}
	for _, key := range Keys() {
		loaded.Values[key] = v.Get(key)
		loaded.Sources[key] = sourceOf(key, v, env, flags)
	}
	return loaded, nil
}

func readFile(v *viper.Viper, file string) (string, error) {
	explicit := file != ""
	if !explicit {
		file = DefaultFile
	}
	v.SetConfigFile(file)
	v.SetConfigType("yaml")

	err := v.ReadInConfig()
	var pathErr *fs.PathError
	switch {
	case err == nil:
		return file, nil
	case !explicit && errors.As(err, &pathErr) && errors.Is(pathErr.Err, fs.ErrNotExist):
		return "", nil
	case errors.As(err, &pathErr):
		return "", fmt.Errorf("%w: read config file %s: %w: check the path given with --config", ErrInvalid, file, pathErr.Err)
	default:
		return "", fmt.Errorf("%w: parse config file %s: %w: fix the YAML syntax", ErrInvalid, file, err)
	}
}

// bindEnv maps each MQSPOOL_ variable onto its key and returns the keys
// set from the environment.
func bindEnv(v *viper.Viper, lookup func(string) (string, bool)) map[string]bool {
	set := map[string]bool{}
	for key := range defaults {
		name := EnvName(key)
		value, ok := lookup(name)
		if !ok {
			continue
		}
		if _, isList := defaults[key].([]string); isList {
			v.Set(key, splitList(value))
		} else {
			v.Set(key, value)
		}
		set[key] = true
	}
	return set
}

// EnvName returns the environment variable for a key.
func EnvName(key string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

func bindFlags(v *viper.Viper, flags *pflag.FlagSet, keys map[string]string) (map[string]bool, error) {
	set := map[string]bool{}
	if flags == nil {
		return set, nil
	}
	for name, key := range keys {
		f := flags.Lookup(name)
		if f == nil || !f.Changed {
			continue
		}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			v.Set(key, sv.GetSlice())
		} else {
			v.Set(key, f.Value.String())
		}
		set[key] = true
	}
	return set, nil
}

func decode(v *viper.Viper) (*Config, error) {
	var cfg Config
	hook := mapstructure.ComposeDecodeHookFunc(
		durationHook,
		mapstructure.StringToSliceHookFunc(","),
		byteSizeHook,
	)
	err := v.Unmarshal(&cfg, viper.DecodeHook(hook), func(dc *mapstructure.DecoderConfig) {
		dc.ErrorUnused = true
	})
	if err != nil {
		return nil, fmt.Errorf("%w:\n  %s", ErrInvalid, decodeProblems(err))
	}
	applySubscriptionDefaults(v, &cfg)
	return &cfg, nil
}

// durationHook decodes durations written as "500ms", "30s" or "24h". A
// bare number is rejected: YAML reads 30 as an integer, which would
// otherwise become 30 nanoseconds.
// decodeProblems rewrites mapstructure's decoding errors as one line per
// problem, naming the key and the fix.
func decodeProblems(err error) string {
	text := strings.TrimPrefix(err.Error(), "decoding failed due to the following error(s):")
	var lines []string
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if head, keys, ok := strings.Cut(line, " has invalid keys: "); ok {
			prefix := strings.Trim(head, "'")
			for _, k := range strings.Split(keys, ", ") {
				if prefix != "" {
					k = prefix + "." + k
				}
				lines = append(lines, k+": unknown key: check its spelling against configs/mqspool.yaml")
			}
			continue
		}
		if key, rest, ok := strings.Cut(line, "' "); ok && strings.HasPrefix(key, "'") {
			line = strings.TrimPrefix(key, "'") + ": " + rest
		}
		lines = append(lines, line)
	}
	return strings.Join(lines, "\n  ")
}

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

func byteSizeHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeOf(ByteSize(0)) {
		return data, nil
	}
	switch d := data.(type) {
	case string:
		return ParseByteSize(d)
	case int:
		return ByteSize(d), nil
	case int64:
		return ByteSize(d), nil
	case float64:
		return ByteSize(d), nil
	}
	return data, nil
}

func sourceOf(key string, v *viper.Viper, env, flags map[string]bool) Source {
	switch {
	case flags[key]:
		return SourceFlag
	case env[key]:
		return SourceEnv
	case v.InConfig(key):
		return SourceFile
	default:
		return SourceDefault
	}
}

func sortKeys(keys []string) { sort.Strings(keys) }
