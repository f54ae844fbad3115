package test

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/mqspool/mqspool/test/harness"
)

// The checks below read a trace written with harness.StraceCommand and
// report each durable step that a later step depends on and that did not
// complete before it. A step "completes before" another when strace saw
// its return before the other call began (Syscall.End < Syscall.Start).

// describe prints a call for a failure message.
func describe(c harness.Syscall) string {
	return "line " + strconv.Itoa(c.Start) + ": " + c.Name + "(" + strings.Join(c.Args, ", ") + ") = " + c.Ret
}

// byStart returns the successful calls ordered by the line they began on.
func byStart(tr *harness.Trace) []harness.Syscall {
	var calls []harness.Syscall
	for _, c := range tr.Calls {
		if c.OK() {
			calls = append(calls, c)
		}
	}
	sort.SliceStable(calls, func(i, j int) bool { return calls[i].Start < calls[j].Start })
	return calls
}

// span is a bbolt commit: from its first write to the return of the sync
// that follows the write of a meta page.
type span struct{ start, end int }

// commits returns the bbolt commits to db in order. bbolt writes the
// changed pages, syncs, writes one of the two meta pages (page 0 or 1)
// and syncs again. The second sync makes the transaction durable.
func commits(tr *harness.Trace, db string) []span {
	page := os.Getpagesize()
	var out []span
	start, meta := 0, false
	for _, c := range byStart(tr) {
		if c.FDPath(0) != db {
			continue
		}
		switch c.Name {
		case "pwrite64", "ftruncate":
			if start == 0 {
				start = c.Start
			}
			if c.Name == "pwrite64" && len(c.Args) == 4 {
				size, _ := strconv.Atoi(c.Args[2])
				offset, _ := strconv.Atoi(c.Args[3])
				if offset == 0 || (offset == page && size == page) {
					meta = true
				}
			}
		case "fdatasync", "fsync":
			if meta {
				out = append(out, span{start, c.End})
				start, meta = 0, false
			}
		}
	}
	return out
}

// commitsBetween counts the commits that began after line after and were
// durable before line before.
func commitsBetween(cs []span, after, before int) int {
	n := 0
	for _, c := range cs {
		if c.start > after && c.end < before {
			n++
		}
	}
	return n
}

// findCall returns the first successful call, by start, that matches.
func findCall(tr *harness.Trace, match func(harness.Syscall) bool) (harness.Syscall, bool) {
	for _, c := range byStart(tr) {
		if match(c) {
			return c, true
		}
	}
	return harness.Syscall{}, false
}

// lastRead returns the end line of the last read of path before line.
func lastRead(tr *harness.Trace, path string, before int) int {
	end := 0
	for _, c := range tr.Calls {
		if c.OK() && c.Name == "read" && c.FDPath(0) == path && c.End < before && c.End > end {
			end = c.End
		}
	}
	return end
}

// isSync reports whether c is an fsync or fdatasync of path.
func isSync(c harness.Syscall, path string) bool {
	return (c.Name == "fsync" || c.Name == "fdatasync") && c.FDPath(0) == path
}

// syncAfter returns the first sync of path that began after line.
func syncAfter(tr *harness.Trace, path string, after int) (harness.Syscall, bool) {
	return findCall(tr, func(c harness.Syscall) bool { return c.Start > after && isSync(c, path) })
}

// renamePaths returns the old and new path of a successful rename call.
func renamePaths(c harness.Syscall) (from, to string, ok bool) {
	switch c.Name {
	case "rename":
		a, _ := c.Strings(0)
		b, _ := c.Strings(1)
		if len(a) == 1 && len(b) == 1 {
			return string(a[0]), string(b[0]), true
		}
	case "renameat", "renameat2":
		return c.Path(0, 1), c.Path(2, 3), true
	}
	return "", "", false
}

// unlinkPath returns the path a successful unlink or unlinkat removed.
func unlinkPath(c harness.Syscall) (string, bool) {
	switch c.Name {
	case "unlink":
		s, _ := c.Strings(0)
		if len(s) == 1 {
			return string(s[0]), true
		}
	case "unlinkat":
		return c.Path(0, 1), true
	}
	return "", false
}

// underDir reports whether path lies below dir.
func underDir(path, dir string) bool {
	return strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
}

// checkDirsSynced requires that each directory the traced program
// created has its parent synced after the mkdirat, and before anything is
// created in it or renamed into it, so the entries below survive a power
// cut. Only directories for which durable(dir) holds are checked (the
// control socket's needs none). before, when positive, is a line the sync
// must also precede (the exit of a command).
func checkDirsSynced(t *testing.T, tr *harness.Trace, durable func(dir string) bool, before int) {
	t.Helper()
	for _, mk := range byStart(tr) {
		if mk.Name != "mkdirat" || !durable(mk.Path(0, 1)) {
			continue
		}
		dir := mk.Path(0, 1)
		deadline := before
		if use, ok := findCall(tr, func(c harness.Syscall) bool {
			_, to, isRename := renamePaths(c)
			created := c.Name == "openat" && strings.Contains(c.Args[2], "O_CREAT") && underDir(c.RetPath(), dir)
			return c.Start > mk.End && ((isRename && underDir(to, dir)) || created)
		}); ok && (deadline <= 0 || use.Start < deadline) {
			deadline = use.Start
		}
		sync, ok := syncAfter(tr, filepath.Dir(dir), mk.End)
		switch {
		case !ok:
			t.Errorf("directory %s was created (%s) but its parent was never synced: a power cut can "+
				"remove it with every file in it", dir, describe(mk))
		case deadline > 0 && sync.End > deadline:
			t.Errorf("directory %s was created (%s) but its parent was synced only at %s, after line %d "+
				"that depends on it", dir, describe(mk), describe(sync), deadline)
		}
	}
}

// checkDurableMoves requires, for each rename of a file from below
// fromDir to below toDir, that the file's data was synced before it (when
// syncFile is set) and toDir's directory was synced after it and before
// line before. It returns how many moves it checked.
func checkDurableMoves(t *testing.T, tr *harness.Trace, fromDir, toDir string, syncFile bool, before int) int {
	t.Helper()
	n := 0
	for _, rn := range byStart(tr) {
		from, to, ok := renamePaths(rn)
		if !ok || !underDir(from, fromDir) || !underDir(to, toDir) {
			continue
		}
		n++
		if syncFile {
			written := 0
			for _, c := range tr.Calls {
				if c.OK() && c.Name == "write" && c.FDPath(0) == from && c.End < rn.Start {
					written = max(written, c.End)
				}
			}
			if _, ok := findCall(tr, func(c harness.Syscall) bool {
				return isSync(c, from) && c.Start > written && c.End < rn.Start
			}); !ok {
				t.Errorf("%s was renamed into place (%s) without an fsync of its data after the last "+
					"write: a power cut can leave an empty or short file", to, describe(rn))
			}
		}
		sync, ok := syncAfter(tr, filepath.Dir(to), rn.End)
		if !ok || sync.End > before {
			t.Errorf("%s was renamed into place (%s) but its directory was not synced before line %d: "+
				"a power cut can undo the rename after success was reported", to, describe(rn), before)
		}
	}
	return n
}

// exitLine returns the line of the first traced process's exit and
// requires that it exited with status 0.
func exitLine(t *testing.T, tr *harness.Trace) int {
	t.Helper()
	if len(tr.Calls) == 0 {
		t.Fatal("the trace records no call")
	}
	main := tr.Calls[0].PID
	for _, e := range tr.Exits {
		if e.PID == main {
			if e.Status != "exited with 0" {
				t.Errorf("the command %s", e.Status)
			}
			return e.Line
		}
	}
	t.Fatal("the trace records no exit of the command")
	return 0
}

// packet is one MQTT control packet on the broker connection, with the
// call that wrote its first byte or read its last byte.
type packet struct {
	typ     byte // upper four bits of the fixed header
	qos     byte // PUBLISH only
	id      uint16
	payload []byte // PUBLISH only
	call    harness.Syscall
}

// chunk is the bytes one call wrote or read on a socket.
type chunk struct {
	data []byte
	call harness.Syscall
}

// mqttTraffic decodes the packets written to and read from every socket
// whose first bytes written are an MQTT CONNECT.
func mqttTraffic(t *testing.T, tr *harness.Trace) (out, in []packet) {
	t.Helper()
	written, read := map[string][]chunk{}, map[string][]chunk{}
	for _, c := range byStart(tr) {
		sock := c.FDPath(0)
		if !strings.HasPrefix(sock, "socket:") {
			continue
		}
		var streams map[string][]chunk
		switch c.Name {
		case "write", "writev", "sendto", "sendmsg":
			streams = written
		case "read", "readv", "recvfrom", "recvmsg":
			streams = read
		default:
			continue
		}
		strs, truncated := c.Strings(1)
		if truncated {
			t.Fatalf("strace cut a socket buffer at its -s limit, so the stream cannot be decoded: %s", describe(c))
		}
		data := bytes.Join(strs, nil)
		if n, err := strconv.Atoi(c.Ret); err == nil && n < len(data) {
			data = data[:n]
		}
		streams[sock] = append(streams[sock], chunk{data, c})
	}
	for sock, chunks := range written {
		if len(chunks) == 0 || len(chunks[0].data) == 0 || chunks[0].data[0] != 0x10 {
			continue
		}
		out = append(out, decodePackets(t, chunks, true)...)
		in = append(in, decodePackets(t, read[sock], false)...)
	}
	return out, in
}

// decodePackets splits a byte stream into packets. An outgoing packet
// takes the call of its first byte, an incoming one that of its last.
func decodePackets(t *testing.T, chunks []chunk, outgoing bool) []packet {
	t.Helper()
	var stream []byte
	var owner []int // index into chunks of each byte
	for i, ch := range chunks {
		stream = append(stream, ch.data...)
		for range ch.data {
			owner = append(owner, i)
		}
	}
	var pkts []packet
	for at := 0; at < len(stream); {
		length, size, complete := 0, 0, false
		for shift := 0; at+1+size < len(stream) && size < 4; shift += 7 {
			b := stream[at+1+size]
			size++
			length |= int(b&0x7f) << shift
			if b < 0x80 {
				complete = true
				break
			}
		}
		end := at + 1 + size + length
		if !complete || end > len(stream) {
			break // the trace ended in the middle of a packet
		}
		p := packet{typ: stream[at] >> 4}
		body := stream[at+1+size : end]
		if outgoing {
			p.call = chunks[owner[at]].call
		} else {
			p.call = chunks[owner[end-1]].call
		}
		decodeBody(&p, stream[at]&0x0f, body)
		pkts = append(pkts, p)
		at = end
	}
	return pkts
}

// MQTT control packet types.
const (
	typePublish = 3
	typePuback  = 4
	typePubrec  = 5
	typePubrel  = 6
	typePubcomp = 7
)

// decodeBody reads the packet identifier, and for a PUBLISH the QoS and
// payload, from an MQTT 5 packet body.
func decodeBody(p *packet, flags byte, body []byte) {
	switch p.typ {
	case typePuback, typePubrec, typePubrel, typePubcomp:
		if len(body) >= 2 {
			p.id = binary.BigEndian.Uint16(body)
		}
	case typePublish:
		p.qos = flags >> 1 & 3
		if len(body) < 2 {
			return
		}
		topicEnd := 2 + int(binary.BigEndian.Uint16(body))
		if topicEnd+2 > len(body) {
			return
		}
		rest := body[topicEnd:]
		if p.qos > 0 {
			p.id = binary.BigEndian.Uint16(rest)
			rest = rest[2:]
		}
		props, shift, i := 0, 0, 0
		for ; i < len(rest); i++ {
			props |= int(rest[i]&0x7f) << shift
			shift += 7
			if rest[i] < 0x80 {
				break
			}
		}
		if i+1+props <= len(rest) {
			p.payload = rest[i+1+props:]
		}
	}
}

// nextPacket returns the first packet of type typ with identifier id
// whose call began after line after.
func nextPacket(pkts []packet, typ byte, id uint16, after int) (packet, bool) {
	for _, p := range pkts {
		if p.typ == typ && p.id == id && p.call.Start > after {
			return p, true
		}
	}
	return packet{}, false
}

// prevPacket returns the last packet of type typ with identifier id whose
// call returned before line before.
func prevPacket(pkts []packet, typ byte, id uint16, before int) (packet, bool) {
	var found packet
	ok := false
	for _, p := range pkts {
		if p.typ == typ && p.id == id && p.call.End < before {
			found, ok = p, true
		}
	}
	return found, ok
}

// packetName returns the MQTT name of a packet type.
func packetName(typ byte) string {
	return map[byte]string{typePublish: "PUBLISH", typePuback: "PUBACK", typePubrec: "PUBREC",
		typePubrel: "PUBREL", typePubcomp: "PUBCOMP"}[typ]
}

// checkAckAfterCommit requires, for each packet of type ack written, that
// the packet of type cause with the same identifier, read before it, was
// followed by a commit that was durable before the ack was written. It
// returns how many it checked.
func checkAckAfterCommit(t *testing.T, out, in []packet, cs []span, ack, cause byte) int {
	t.Helper()
	n := 0
	for _, p := range out {
		if p.typ != ack {
			continue
		}
		c, ok := prevPacket(in, cause, p.id, p.call.Start)
		if !ok {
			continue
		}
		n++
		if commitsBetween(cs, c.call.End, p.call.Start) == 0 {
			t.Errorf("%s %d was written (%s) with no spool.db commit after its %s was read (%s): "+
				"a power cut loses the state the %s depends on",
				packetName(ack), p.id, describe(p.call), packetName(cause), describe(c.call), packetName(ack))
		}
	}
	return n
}
