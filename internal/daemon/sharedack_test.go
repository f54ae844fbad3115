package daemon

import "testing"

func TestSharedAck_Outcomes(t *testing.T) {
	cases := []struct {
		name         string
		calls        string // pairs of an action (r release, d decline) and the index of the copy
		wantReleases int
		wantDeclines int
	}{
		{"all copies released", "r0r1r2", 1, 0},
		{"one copy missing", "r0r1", 0, 0},
		{"same copy released twice counts once", "r0r0r1", 0, 0},
		{"decline before the last release", "r0d1r2", 0, 1},
		{"decline after the last release", "r0r1r2d0", 1, 0},
		{"two declines", "d0d1", 0, 1},
		{"decline then release of the same copy", "d0r0r1r2", 0, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			releases, declines := 0, 0
			ack := newSharedAck(3, func() { releases++ }, func() { declines++ })
			var release, decline [3]func()
			for i := range 3 {
				release[i], decline[i] = ack.part()
			}
			for i := 0; i < len(c.calls); i += 2 {
				copyIndex := int(c.calls[i+1] - '0')
				if c.calls[i] == 'r' {
					release[copyIndex]()
				} else {
					decline[copyIndex]()
				}
			}
			if releases != c.wantReleases {
				t.Errorf("released %d times, want %d", releases, c.wantReleases)
			}
			if declines != c.wantDeclines {
				t.Errorf("declined %d times, want %d", declines, c.wantDeclines)
			}
			if got, want := ack.declined(), c.wantDeclines > 0; got != want {
				t.Errorf("declined() = %v, want %v", got, want)
			}
		})
	}
}
