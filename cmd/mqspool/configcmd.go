package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mqspool/mqspool/internal/config"
)

func newConfigCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "config",
		Short: "Check or show the effective configuration",
	}
	c.AddCommand(newConfigValidateCommand(), newConfigPrintCommand())
	return c
}

func newConfigValidateCommand() *cobra.Command {
	var flags configFlags
	c := &cobra.Command{
		Use:   "validate",
		Short: "Check the configuration and exit 0 when it is valid, 2 when not",
		Args:  exactArgs(0),
		RunE: func(c *cobra.Command, _ []string) error {
			loaded, err := config.Load(config.LoadOptions{File: flags.file, Flags: c.Flags(), FlagKeys: runFlagKeys,
				CheckFiles: true})
			if err != nil {
				return err
			}
			for _, w := range loaded.Warnings {
				fmt.Fprintf(c.ErrOrStderr(), "warning: %s\n", w)
			}
			fmt.Fprintf(c.OutOrStdout(), "configuration is valid (%s)\n", describeFile(loaded.File))
			return nil
		},
	}
	flags.register(c)
	registerRunFlags(c)
	return c
}

func newConfigPrintCommand() *cobra.Command {
	var flags configFlags
	c := &cobra.Command{
		Use:   "print",
		Short: "Print every key with its effective value and where it came from",
		Args:  exactArgs(0),
		RunE: func(c *cobra.Command, _ []string) error {
			// Offline, so that a file without broker.urls can be shown.
			loaded, err := config.Load(config.LoadOptions{File: flags.file, Flags: c.Flags(), FlagKeys: runFlagKeys,
				Offline: true})
			if err != nil {
				return err
			}
			printConfig(c, loaded)
			if len(loaded.Config.Broker.URLs) == 0 {
				fmt.Fprintln(c.OutOrStdout(), "# broker.urls is missing: mqspool run refuses to start; set it in the file or MQSPOOL_BROKER_URLS")
			}
			return nil
		},
	}
	flags.register(c)
	registerRunFlags(c)
	return c
}

func describeFile(file string) string {
	if file == "" {
		return "no config file; defaults and environment"
	}
	return file
}

func printConfig(c *cobra.Command, loaded *config.Loaded) {
	out := c.OutOrStdout()
	fmt.Fprintf(out, "# config file: %s\n", describeFile(loaded.File))
	for _, key := range config.Keys() {
		fmt.Fprintf(out, "%-30s %-40s # %s\n", key+":", formatValue(loaded.Values[key]), loaded.Sources[key])
	}
	pw := "(not set)"
	if loaded.Config.Broker.Password != "" {
		pw = "(set, hidden)"
	}
	fmt.Fprintf(out, "%-30s %-40s # env\n", "broker.password:", pw)
	fmt.Fprintf(out, "routes: %d, subscriptions: %d (file only)\n", len(loaded.Config.Routes), len(loaded.Config.Subscriptions))
	for i, r := range loaded.Config.Routes {
		fmt.Fprintf(out, "  routes[%d]: match=%q topic=%q qos=%s retain=%s allow_dollar=%t\n",
			i, r.Match, r.Topic, optional(r.QoS), optional(r.Retain), r.AllowDollar)
	}
	for i, s := range loaded.Config.Subscriptions {
		fmt.Fprintf(out, "  subscriptions[%d]: filter=%q qos=%d dir=%q max_files=%d max_bytes=%s\n",
			i, s.Filter, s.QoS, s.Dir, s.MaxFiles, s.MaxBytes)
	}
}

func formatValue(v any) string {
	switch t := v.(type) {
	case []string:
		return "[" + strings.Join(t, ", ") + "]"
	case []any:
		parts := make([]string, len(t))
		for i, p := range t {
			parts[i] = fmt.Sprint(p)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case string:
		if t == "" {
			return `""`
		}
		return t
	default:
		return fmt.Sprint(v)
	}
}

func optional[T any](p *T) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprint(*p)
}
