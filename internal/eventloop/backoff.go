package eventloop

import (
	"math/rand/v2"
	"time"
)

// stableAfter is how long a connection must last before its end resets
// the backoff. A broker that closes the connection sooner (a session
// takeover, a rejected will, an overloaded broker) counts as a failed
// attempt, so the loop does not reconnect at full speed.
const stableAfter = 5 * time.Second

// backoff computes reconnect delays. The n-th retry (n from 0) waits
// min + random[0, min(max, min*2^n) - min], so consecutive attempts are
// always at least min apart and clients that lost the same broker spread
// out instead of reconnecting in lockstep.
type backoff struct {
	min, max time.Duration
	attempt  int
	rand     func(n int64) int64 // random value in [0, n); replaced in tests
}

func newBackoff(min, max time.Duration) *backoff {
	return &backoff{min: min, max: max, rand: rand.Int64N}
}

// next returns the delay before the next attempt and counts the attempt.
func (b *backoff) next() time.Duration {
	d := b.delay(b.attempt)
	if b.attempt < 62 {
		b.attempt++
	}
	return d
}

// delay returns the jittered delay of the n-th retry.
func (b *backoff) delay(n int) time.Duration {
	ceiling := b.max
	if shifted := b.min << n; n < 62 && shifted > 0 && shifted < b.max && shifted>>n == b.min {
		ceiling = shifted
	}
	spread := ceiling - b.min
	if spread <= 0 {
		return b.min
	}
	return b.min + time.Duration(b.rand(int64(spread)+1))
}

// rejected returns the delay after a CONNACK that a quick retry cannot
// fix: from half the max delay to the max delay, and at least the min
// delay. The jitter keeps a fleet whose credentials were revoked from
// retrying in lockstep.
func (b *backoff) rejected() time.Duration {
	low := max(b.max/2, b.min)
	if b.max <= low {
		return low
	}
	return low + time.Duration(b.rand(int64(b.max-low)+1))
}

// reset starts the sequence again after a connection that lasted.
func (b *backoff) reset() { b.attempt = 0 }
