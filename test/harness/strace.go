package harness

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// straceCalls are the system calls a trace records: every one that makes
// data or a directory entry durable, moves or removes a file, or carries
// MQTT bytes.
const straceCalls = "openat,rename,renameat,renameat2,unlink,unlinkat,link,linkat,mkdirat," +
	"fsync,fdatasync,sync_file_range,write,pwrite64,writev,sendto,sendmsg,ftruncate,close," +
	"read,readv,recvfrom,recvmsg,fchmod,fchmodat,fchown,fchownat"

// RequireStrace skips the test when strace is not installed or cannot
// trace here (ptrace denied in a container, for example). Under CI a
// missing strace fails the test, because .ci/run installs it.
func RequireStrace(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: runs the mqspool binary under strace; run without -short")
	}
	if _, err := exec.LookPath("strace"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("strace not found in PATH; .ci/run must install it: %v", err)
		}
		t.Skip("strace not installed: apt-get install strace")
	}
	out, err := exec.Command("strace", "-f", "-o", os.DevNull, "true").CombinedOutput()
	if err != nil {
		t.Skipf("strace cannot trace here (ptrace not permitted?): %v\n%s", err, out)
	}
}

// StraceCommand returns the strace command line that runs a program with
// its threads and children traced into file: one line per call, with the
// path or socket behind each descriptor and whole buffers up to 64 KiB.
// With detached set, strace runs as a grandchild, so the traced program
// keeps the PID of the process started (for Daemon.Wrap).
func StraceCommand(file string, detached bool) []string {
	args := []string{"strace", "-f", "-tt", "-y", "-s", "65536", "-e", "trace=" + straceCalls, "-o", file}
	if detached {
		args = append(args, "-D")
	}
	return args
}

// Syscall is one completed system call of a trace. Start and End are the
// line numbers where strace saw it begin and return, so a call whose
// Start is greater than another's End began after that one returned.
type Syscall struct {
	PID        int
	Name       string
	Args       []string // raw, as strace printed them
	Ret        string   // raw return value, "0" or "13</path>" or "-1 ENOENT (...)"
	Start, End int
}

// OK reports whether the call succeeded.
func (c Syscall) OK() bool {
	return !strings.HasPrefix(c.Ret, "-") && !strings.HasPrefix(c.Ret, "?")
}

var fdArg = regexp.MustCompile(`^(-?\d+|AT_FDCWD)<(.*?)>(\(deleted\))?$`)

// FDPath returns the path or "socket:[inode]" behind the descriptor in
// argument i, or "" when the argument is no annotated descriptor.
func (c Syscall) FDPath(i int) string {
	if i >= len(c.Args) {
		return ""
	}
	m := fdArg.FindStringSubmatch(c.Args[i])
	if m == nil {
		return ""
	}
	return m[2]
}

// RetPath returns the path behind a returned descriptor (openat).
func (c Syscall) RetPath() string {
	m := fdArg.FindStringSubmatch(c.Ret)
	if m == nil {
		return ""
	}
	return m[2]
}

// Strings returns the decoded quoted strings in argument i, in order (one
// for write, one per iovec for writev). truncated is set when strace cut
// one of them at its -s limit.
func (c Syscall) Strings(i int) (strs [][]byte, truncated bool) {
	if i >= len(c.Args) {
		return nil, false
	}
	s := c.Args[i]
	for {
		q := strings.IndexByte(s, '"')
		if q < 0 {
			return strs, truncated
		}
		b, n := decodeQuoted(s[q:])
		strs = append(strs, b)
		s = s[q+n:]
		if strings.HasPrefix(s, "...") {
			truncated = true
		}
	}
}

// Path returns the path named by the descriptor argument dirArg and the
// string argument nameArg, resolved as an *at call resolves it.
func (c Syscall) Path(dirArg, nameArg int) string {
	strs, _ := c.Strings(nameArg)
	if len(strs) == 0 {
		return ""
	}
	name := string(strs[0])
	if strings.HasPrefix(name, "/") {
		return name
	}
	return strings.TrimSuffix(c.FDPath(dirArg), "/") + "/" + name
}

// Exit is the end of a traced process.
type Exit struct {
	PID, Line int
	Status    string // "exited with 0", "killed by SIGKILL"
}

// Trace is a parsed strace output file.
type Trace struct {
	Calls []Syscall
	Exits []Exit
}

var traceLine = regexp.MustCompile(`^(\d+)\s+\d\d:\d\d:\d\d\.\d+\s+(.*)$`)

// ParseTrace reads a file written by strace with StraceCommand's options.
// An unfinished call is joined with its resumption; signals are skipped.
func ParseTrace(path string) (*Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open trace: %w", err)
	}
	defer f.Close()

	type pending struct {
		text  string
		start int
	}
	open := map[int]pending{}
	tr := &Trace{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for line := 1; sc.Scan(); line++ {
		m := traceLine.FindStringSubmatch(sc.Text())
		if m == nil {
			return nil, fmt.Errorf("trace line %d: unexpected format: %q", line, sc.Text())
		}
		pid, _ := strconv.Atoi(m[1])
		rest := m[2]
		switch {
		case strings.HasPrefix(rest, "--- "):
			continue
		case strings.HasPrefix(rest, "+++ "):
			tr.Exits = append(tr.Exits, Exit{PID: pid, Line: line,
				Status: strings.TrimSuffix(strings.TrimPrefix(rest, "+++ "), " +++")})
			continue
		case strings.HasPrefix(rest, "<... "):
			p, ok := open[pid]
			if !ok {
				return nil, fmt.Errorf("trace line %d: resumption without a start: %q", line, rest)
			}
			delete(open, pid)
			rest = p.text + rest[strings.Index(rest, ">")+1:]
			c, err := parseCall(rest)
			if err != nil {
				return nil, fmt.Errorf("trace line %d: %w", line, err)
			}
			c.PID, c.Start, c.End = pid, p.start, line
			tr.Calls = append(tr.Calls, c)
			continue
		}
		if text, ok := strings.CutSuffix(rest, " <unfinished ...>"); ok {
			open[pid] = pending{text: text, start: line}
			continue
		}
		c, err := parseCall(rest)
		if err != nil {
			return nil, fmt.Errorf("trace line %d: %w", line, err)
		}
		c.PID, c.Start, c.End = pid, line, line
		tr.Calls = append(tr.Calls, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read trace: %w", err)
	}
	return tr, nil
}

// parseCall splits "name(arg, arg) = ret" at top-level commas, skipping
// quoted strings, brackets and descriptor annotations.
func parseCall(text string) (Syscall, error) {
	open := strings.IndexByte(text, '(')
	if open < 0 {
		return Syscall{}, fmt.Errorf("no argument list in %q", text)
	}
	c := Syscall{Name: text[:open]}
	depth, argStart := 0, open+1
	for i := open + 1; i < len(text); i++ {
		switch text[i] {
		case '"':
			_, n := decodeQuoted(text[i:])
			i += n - 1
		case '<':
			if j := strings.IndexByte(text[i:], '>'); j > 0 {
				i += j
			}
		case '[', '{', '(':
			depth++
		case ']', '}':
			depth--
		case ',':
			if depth == 0 {
				c.Args = append(c.Args, strings.TrimSpace(text[argStart:i]))
				argStart = i + 1
			}
		case ')':
			if depth > 0 {
				depth--
				continue
			}
			if arg := strings.TrimSpace(text[argStart:i]); arg != "" {
				c.Args = append(c.Args, arg)
			}
			ret, ok := strings.CutPrefix(strings.TrimSpace(text[i+1:]), "= ")
			if !ok {
				return Syscall{}, fmt.Errorf("no return value in %q", text)
			}
			c.Ret = ret
			return c, nil
		}
	}
	return Syscall{}, fmt.Errorf("unterminated argument list in %q", text)
}

// decodeQuoted decodes the C-escaped string that s starts with (at its
// opening quote) and returns its bytes and the length of its source.
func decodeQuoted(s string) ([]byte, int) {
	var b []byte
	for i := 1; i < len(s); i++ {
		switch ch := s[i]; ch {
		case '"':
			return b, i + 1
		case '\\':
			i++
			if i >= len(s) {
				return b, len(s)
			}
			switch e := s[i]; e {
			case 'n':
				b = append(b, '\n')
			case 't':
				b = append(b, '\t')
			case 'r':
				b = append(b, '\r')
			case 'v':
				b = append(b, '\v')
			case 'f':
				b = append(b, '\f')
			case 'x':
				v, _ := strconv.ParseUint(s[i+1:i+3], 16, 8)
				b = append(b, byte(v))
				i += 2
			case '0', '1', '2', '3', '4', '5', '6', '7':
				j := i
				for j < len(s) && j < i+3 && s[j] >= '0' && s[j] <= '7' {
					j++
				}
				v, _ := strconv.ParseUint(s[i:j], 8, 8)
				b = append(b, byte(v))
				i = j - 1
			default:
				b = append(b, e)
			}
		default:
			b = append(b, ch)
		}
	}
	return b, len(s)
}

// WaitTraceEnd waits until the trace in file records the exit of its
// first process, so that strace, which a detached run leaves behind, has
// written all of it.
func WaitTraceEnd(t testing.TB, file string, timeout time.Duration) {
	t.Helper()
	WaitFor(t, timeout, "strace to finish "+file, func() bool {
		data, err := os.ReadFile(file)
		if err != nil {
			return false
		}
		first, _, _ := strings.Cut(string(data), " ")
		// strace pads a short PID with spaces.
		return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(first) + `\s+\S+ \+\+\+ `).Match(data)
	})
}
