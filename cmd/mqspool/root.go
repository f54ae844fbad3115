package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mqspool/mqspool/internal/config"
)

// Exit statuses that scripts rely on.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitWaitTimeout = 3
	exitRejected    = 4
)

// exitError carries an exit status through cobra's error return.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageError(err error) error { return &exitError{code: exitUsage, err: err} }

// execute runs the command line and returns the exit status.
func execute(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)

	err := root.ExecuteContext(context.Background())
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "mqspool:", err)
	return exitCode(err)
}

func exitCode(err error) int {
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, config.ErrInvalid):
		return exitUsage
	case isFlagError(err):
		return exitUsage
	case strings.HasPrefix(err.Error(), "unknown command "):
		// cobra's error for a command name it does not know; it has no
		// type of its own.
		return exitUsage
	default:
		return exitFailure
	}
}

// flagError marks errors cobra returns for bad flags and arguments.
type flagError struct{ error }

func isFlagError(err error) bool {
	var fe flagError
	return errors.As(err, &fe)
}

// numberFlagError matches pflag's error for a number flag whose value
// does not parse, which otherwise ends in strconv's own words.
var numberFlagError = regexp.MustCompile(`^invalid argument "(.*)" for "(.*)" flag: strconv\.Parse(Uint|Int): `)

// flagRange returns the range of values of the integer flag named as in
// pflag's errors ("--expiry" or "-e, --expiry"), such as "0 to 65535".
func flagRange(c *cobra.Command, named string) (string, bool) {
	name := strings.TrimLeft(named[strings.LastIndex(named, " ")+1:], "-")
	f := c.Flags().Lookup(name)
	if f == nil {
		return "", false
	}
	switch f.Value.Type() {
	case "uint8":
		return "0 to 255", true
	case "uint16":
		return "0 to 65535", true
	case "uint32":
		return "0 to 4294967295", true
	case "int16":
		return "-32768 to 32767", true
	case "int32":
		return "-2147483648 to 2147483647", true
	}
	return "", false
}

// negativeNumberArg reports whether err is pflag's unknown shorthand
// error for an argument such as -5 or -5/s, and returns that argument.
func negativeNumberArg(err error) (string, bool) {
	_, arg, ok := strings.Cut(err.Error(), "unknown shorthand flag: ")
	if !ok {
		return "", false
	}
	_, arg, ok = strings.Cut(arg, " in ")
	if !ok || len(arg) < 2 || arg[0] != '-' || arg[1] < '0' || arg[1] > '9' {
		return "", false
	}
	return arg, true
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "mqspool",
		Short: "Forward files from a spool directory to an MQTT broker, durably",
		Long: `mqspool takes files that other programs drop into a spool directory, stores
their messages in a bbolt database and forwards them to an MQTT 5 broker,
surviving network outages, broker restarts, SIGTERM, kill -9 and power loss.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		if arg, ok := negativeNumberArg(err); ok {
			return flagError{fmt.Errorf("%s is read as a flag, and no value here may be negative: see '%s --help'", arg, c.CommandPath())}
		}
		if m := numberFlagError.FindStringSubmatch(err.Error()); m != nil {
			want := "a whole number"
			if m[3] == "Uint" {
				want = "a whole number of 0 or more"
			}
			if r, ok := flagRange(c, m[2]); ok && strings.HasSuffix(err.Error(), "value out of range") {
				want = "a whole number from " + r
			}
			return flagError{fmt.Errorf("invalid value %q for %s: use %s: see '%s --help'", m[1], m[2], want, c.CommandPath())}
		}
		return flagError{fmt.Errorf("%w: see '%s --help'", err, c.CommandPath())}
	})
	root.AddCommand(
		newRunCommand(),
		newPublishCommand(),
		newConfigCommand(),
		newSpoolCommand(),
		newStatusCommand(),
		newCtlCommand(),
		newVersionCommand(),
	)
	requireSubcommands(root)
	return root
}

// requireSubcommands makes every command that only groups subcommands
// reject a missing or unknown subcommand with exit status 2, instead of
// printing its help and exiting 0. A group ignores unknown flags, so in
// "ctl bogus --config FILE" the error names "bogus" and the valid
// subcommands, not --config, which only the subcommands define.
func requireSubcommands(c *cobra.Command) {
	for _, sub := range c.Commands() {
		requireSubcommands(sub)
	}
	if c.HasSubCommands() && c.RunE == nil && c.Run == nil && c.HasParent() {
		c.Args = cobra.ArbitraryArgs
		c.FParseErrWhitelist.UnknownFlags = true
		c.RunE = func(c *cobra.Command, args []string) error {
			names := make([]string, 0, len(c.Commands()))
			for _, sub := range c.Commands() {
				if sub.IsAvailableCommand() {
					names = append(names, sub.Name())
				}
			}
			what := "missing subcommand"
			if len(args) > 0 {
				what = fmt.Sprintf("unknown subcommand %q", args[0])
			}
			return usageError(fmt.Errorf("%s for %s: use one of %s", what, c.CommandPath(), strings.Join(names, ", ")))
		}
	}
}

// configFlags is the --config flag shared by the commands that read the
// configuration.
type configFlags struct {
	file string
}

func (f *configFlags) register(c *cobra.Command) {
	c.Flags().StringVarP(&f.file, "config", "c", "", "config file (default "+config.DefaultFile+")")
}

func (f *configFlags) load(c *cobra.Command, flagKeys map[string]string) (*config.Loaded, error) {
	return config.Load(config.LoadOptions{File: f.file, Flags: c.Flags(), FlagKeys: flagKeys})
}

// loadOffline loads the configuration for a command that never connects
// to the broker, so broker.urls may be missing.
func (f *configFlags) loadOffline(c *cobra.Command) (*config.Loaded, error) {
	return config.Load(config.LoadOptions{File: f.file, Flags: c.Flags(), Offline: true})
}

// exactArgs wraps cobra.ExactArgs so that a wrong count exits with status 2.
func exactArgs(n int) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(c, args); err != nil {
			return usageError(fmt.Errorf("%w: see '%s --help'", err, c.CommandPath()))
		}
		return nil
	}
}

func maxArgs(n int) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if err := cobra.MaximumNArgs(n)(c, args); err != nil {
			return usageError(fmt.Errorf("%w: see '%s --help'", err, c.CommandPath()))
		}
		return nil
	}
}
