package config

import "github.com/spf13/viper"

// Defaults of the inbox limits of a subscription.
const (
	DefaultInboxMaxFiles = 10000
	DefaultInboxMaxBytes = 256 << 20
)

// applySubscriptionDefaults fills max_files and max_bytes where a
// subscription omits them or gives them no value (YAML null), as a null
// key outside the list gets its default. Viper's defaults cannot reach
// into list elements, so the raw list shows which keys the file set.
func applySubscriptionDefaults(v *viper.Viper, cfg *Config) {
	raw, _ := v.Get("subscriptions").([]any)
	for i := range cfg.Subscriptions {
		var set map[string]any
		if i < len(raw) {
			set, _ = raw[i].(map[string]any)
		}
		if set["max_files"] == nil {
			cfg.Subscriptions[i].MaxFiles = DefaultInboxMaxFiles
		}
		if set["max_bytes"] == nil {
			cfg.Subscriptions[i].MaxBytes = DefaultInboxMaxBytes
		}
	}
}
