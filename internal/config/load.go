package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

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
	// CheckFiles adds the problems of the password and TLS files that the
	// keys name ([Config.FileProblems]) to the validation, so that
	// "config validate" reports them with every other problem.
	CheckFiles bool
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
	file, data, err := readFile(v, opts.File)
	if err != nil {
		return nil, err
	}
	env := bindEnv(v, lookup)
	warnings := unknownEnv(opts.environ())
	flags, err := bindFlags(v, opts.Flags, opts.FlagKeys)
	if err != nil {
		return nil, err
	}

	cfg, failed := decode(v, data)
	if pw, ok := lookup(PasswordEnv); ok {
		cfg.Broker.Password = pw
	}
	if err := cfg.validate(opts.Offline, opts.CheckFiles, fromEnv(env, flags), failed...); err != nil {
		if file == "" {
			err = fmt.Errorf("%w\n  no config file was found at %s: give the file with --config, "+
				"or install it there", err, DefaultFile)
		}
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

// ControlSocket returns control.socket from file (DefaultFile when empty)
// or the environment, without validating the other keys, so that status
// and ctl can reach a running daemon while its file has an error that a
// reload rejected. It reports false when the file cannot be read or
// parsed, or the socket is not an absolute path.
func ControlSocket(file string) (string, bool) {
	v := viper.New()
	v.SetDefault("control.socket", DefaultControlSocket)
	if _, _, err := readFile(v, file); err != nil {
		return "", false
	}
	socket := v.GetString("control.socket")
	// An empty variable counts as unset, as in Load.
	if env := os.Getenv(EnvName("control.socket")); env != "" {
		socket = env
	}
	return socket, filepath.IsAbs(socket)
}

// readFile reads the config file into v and returns its path and its
// data. With file empty it reads DefaultFile, and returns an empty path
// and no data when DefaultFile does not exist.
func readFile(v *viper.Viper, file string) (string, []byte, error) {
	explicit := file != ""
	if !explicit {
		file = DefaultFile
	}
	v.SetConfigType("yaml")

	// The data is read once for viper and for the check of the keys
	// viper drops, so that both see the same version of the file.
	data, err := os.ReadFile(file)
	var pathErr *fs.PathError
	switch {
	case err == nil:
	case !explicit && errors.As(err, &pathErr) && errors.Is(pathErr.Err, fs.ErrNotExist):
		return "", nil, nil
	case errors.As(err, &pathErr):
		return "", nil, fmt.Errorf("%w: read config file %s: %w: check the path given with --config", ErrInvalid, file, pathErr.Err)
	default:
		return "", nil, fmt.Errorf("%w: read config file %s: %w: check the path given with --config", ErrInvalid, file, err)
	}

	if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
		// viper prefixes the YAML error with "While parsing config:",
		// which repeats the start of this message.
		var parseErr viper.ConfigParseError
		if errors.As(err, &parseErr) && parseErr.Unwrap() != nil {
			err = parseErr.Unwrap()
		}
		return "", nil, fmt.Errorf("%w: parse config file %s: %s: fix the YAML syntax", ErrInvalid, file, yamlErrorText(err))
	}
	return file, data, nil
}

// yamlParserError matches the errors of go-yaml's parser, as opposed to
// its scanner. The parser counts lines from 0 in them (the scanner from
// 1), so "line 1" would point at the line above the one that opens the
// unclosed bracket or block.
var yamlParserError = regexp.MustCompile(`^yaml: line (\d+): (did not find expected .*)$`)

// yamlErrorText returns the text of a YAML syntax error with the line
// counted from 1, as editors count.
func yamlErrorText(err error) string {
	m := yamlParserError.FindStringSubmatch(err.Error())
	if m == nil {
		return err.Error()
	}
	line, convErr := strconv.Atoi(m[1])
	if convErr != nil {
		return err.Error()
	}
	return fmt.Sprintf("yaml: line %d: %s", line+1, m[2])
}

// bindEnv maps each MQSPOOL_ variable onto its key and returns the keys
// set from the environment. A variable set to the empty string counts as
// unset, so the file's value stays, because systemd sets a variable to ""
// for a line such as Environment=MQSPOOL_BROKER_URLS= in a drop-in.
func bindEnv(v *viper.Viper, lookup func(string) (string, bool)) map[string]bool {
	set := map[string]bool{}
	for key := range defaults {
		name := EnvName(key)
		value, ok := lookup(name)
		if !ok || value == "" {
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

// fromEnv returns the keys whose value came from the environment: those in
// env that no flag overrides.
func fromEnv(env, flags map[string]bool) map[string]bool {
	keys := map[string]bool{}
	for key := range env {
		if !flags[key] {
			keys[key] = true
		}
	}
	return keys
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
		switch sv, ok := f.Value.(pflag.SliceValue); {
		case ok:
			v.Set(key, sv.GetSlice())
		case pathKeys[key]:
			v.Set(key, absFlagPath(f.Value.String()))
		default:
			v.Set(key, f.Value.String())
		}
		set[key] = true
	}
	return set, nil
}

// pathKeys are the keys whose values are paths that validation requires
// to be absolute.
var pathKeys = map[string]bool{"spool.dir": true, "spool.db": true, "control.socket": true}

// absFlagPath makes a path given on the command line absolute. It is
// relative to the directory the command runs in, which the user can see,
// unlike a relative path in a config file read by a daemon that systemd
// starts in /.
func absFlagPath(path string) string {
	if path == "" {
		return path
	}
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
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
