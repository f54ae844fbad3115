package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ByteSize is a size in bytes that config files write as "64MiB", "1GiB",
// "500kB" or a plain number of bytes.
type ByteSize int64

var byteUnits = []struct {
	suffix string
	factor int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"kB", 1000}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"TB", 1000 * 1000 * 1000 * 1000}, {"B", 1},
}

// maxByteSize bounds parsed sizes well inside int64.
const maxByteSize = 1 << 60

// ParseByteSize parses a size such as "64MiB", "1.5GiB", "100kB" or
// "4096". Binary units (KiB) count in powers of 1024, decimal ones (kB) in
// powers of 1000.
func ParseByteSize(s string) (ByteSize, error) {
	text := strings.TrimSpace(s)
	factor := int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(text, u.suffix) {
			text = strings.TrimSpace(strings.TrimSuffix(text, u.suffix))
			factor = u.factor
			break
		}
	}

	n, err := strconv.ParseFloat(text, 64)
	if err != nil || n < 0 || math.IsNaN(n) {
		return 0, fmt.Errorf("invalid size %q: use a number of bytes or a number with a unit such as 64KiB, 10MiB or 1GiB", s)
	}
	if factor == 1 && n != math.Trunc(n) {
		return 0, fmt.Errorf("invalid size %q: a number of bytes must be whole; write %d, or use a unit such as KiB", s, int64(math.Ceil(n)))
	}
	bytes := n * float64(factor)
	if bytes >= maxByteSize {
		return 0, fmt.Errorf("invalid size %q: larger than 1EiB", s)
	}
	return ByteSize(bytes), nil
}

// String formats the size with the largest binary unit that divides it.
func (b ByteSize) String() string {
	for _, u := range []struct {
		suffix string
		factor int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if b != 0 && int64(b)%u.factor == 0 {
			return strconv.FormatInt(int64(b)/u.factor, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(b), 10) + "B"
}

// Rate is a throttle setting: a number of messages or of bytes per second.
// Zero in both means unlimited.
type Rate struct {
	MessagesPerSecond float64
	BytesPerSecond    float64
}

// MinMessageRate is the lowest throttle in messages per second. A lower
// rate is taken for a typing error: it would hold back the next message for
// longer than anyone waits, and "ctl pause" does that more plainly.
const MinMessageRate = 0.001

// MaxMessageRate is the highest throttle in messages per second, far
// above what any link carries; "off" is the way to set no limit.
const MaxMessageRate = 1e9

// ParseRate parses "100/s" (messages per second), "64KiB/s" (bytes per
// second) or "off".
func ParseRate(s string) (Rate, error) {
	text := strings.TrimSpace(s)
	if text == "off" || text == "0" {
		return Rate{}, nil
	}

	value, ok := strings.CutSuffix(text, "/s")
	if !ok {
		return Rate{}, fmt.Errorf("invalid rate %q: use messages per second such as 100/s, bytes per second such as 64KiB/s, or off", s)
	}
	value = strings.TrimSpace(value)
	if n, err := strconv.ParseFloat(value, 64); err == nil {
		if math.IsNaN(n) || math.IsInf(n, 0) {
			return Rate{}, fmt.Errorf("invalid rate %q: use a finite number such as 100/s, or off", s)
		}
		if n <= 0 {
			return Rate{}, fmt.Errorf("invalid rate %q: the number must be positive, or use off", s)
		}
		if n > MaxMessageRate {
			return Rate{}, fmt.Errorf("invalid rate %q: above the highest rate of %g/s; use off for no limit", s, float64(MaxMessageRate))
		}
		if n < MinMessageRate {
			return Rate{}, fmt.Errorf("invalid rate %q: below the lowest rate of %g/s (one message in about 17 minutes); use a higher rate, or mqspool ctl pause to stop publishing", s, MinMessageRate)
		}
		return Rate{MessagesPerSecond: n}, nil
	}

	size, err := ParseByteSize(value)
	if err != nil || size <= 0 {
		return Rate{}, fmt.Errorf("invalid rate %q: use messages per second such as 100/s, bytes per second such as 64KiB/s, or off", s)
	}
	return Rate{BytesPerSecond: float64(size)}, nil
}

// String formats the rate the way ParseRate reads it.
func (r Rate) String() string {
	var parts []string
	if r.MessagesPerSecond > 0 {
		parts = append(parts, strconv.FormatFloat(r.MessagesPerSecond, 'f', -1, 64)+"/s")
	}
	if r.BytesPerSecond > 0 {
		parts = append(parts, ByteSize(r.BytesPerSecond).String()+"/s")
	}
	if len(parts) == 0 {
		return "off"
	}
	return strings.Join(parts, ", ")
}
