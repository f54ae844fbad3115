package eventloop

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/mqspool/mqspool/internal/message"
)

var (
	errConnectTimeout = errors.New("connect timed out")
	errShuttingDown   = errors.New("event loop is shutting down")
)

// connackError is a CONNACK with a failure reason code.
type connackError struct {
	code   byte
	reason string
}

func (e *connackError) Error() string {
	msg := "broker rejected the connection with " + reasonName(e.code, "connack")
	if e.reason != "" {
		msg += ": " + e.reason
	}
	return msg
}

// stepOffline waits for the next connect attempt, or makes it.
func (l *Loop) stepOffline(ctx context.Context) {
	if l.connectNow && !l.manualOffline && !l.commitFailing {
		l.connectNow = false
		l.attempt(ctx)
		return
	}
	if l.opts.DropQoS0Offline && !l.manualOffline {
		l.dropOfflineQoS0()
	}
	var ready <-chan struct{}
	if l.opts.DropQoS0Offline && l.srcEmpty {
		ready = l.src.Ready()
	}
	select {
	case <-ctx.Done():
	case <-l.closeCh:
		l.finish()
	case <-l.cmdKick:
	case <-l.journal.done:
	case <-l.reconnect.c():
		l.reconnect.fired()
		l.connectNow = true
	case <-l.retryTimer.c():
		l.retriesDue()
	case <-ready:
		l.srcEmpty = false
	}
}

// scheduleReconnect arms the backoff timer. Callers log the delay with the
// cause, so each attempt costs one log line.
func (l *Loop) scheduleReconnect(d time.Duration) {
	l.reconnect.arm(d)
}

// attempt connects to the next broker url and handles the outcome.
func (l *Loop) attempt(ctx context.Context) {
	url := l.opts.URLs[l.urlIndex]
	cleanStart := !l.session
	l.log.Debug("connecting", "url", url, "clean_start", cleanStart)

	conn, ack, err := l.open(ctx, url, cleanStart)
	if err != nil {
		l.connectFailed(ctx, url, err)
		return
	}
	l.connected(conn, ack, cleanStart)
}

// connectFailed logs a failed attempt and plans the next one, or ends the
// loop when the policy says so.
func (l *Loop) connectFailed(ctx context.Context, url string, err error) {
	l.urlIndex = (l.urlIndex + 1) % len(l.opts.URLs)
	l.stats.update(func(s *Stats) { s.LastError = err.Error() })
	l.closes.reset()

	switch {
	case ctx.Err() != nil:
		l.connectNow = true // retry on the next Poll
		return
	case l.draining || errors.Is(err, errShuttingDown) || errors.Is(err, ErrClosed):
		l.finish()
		return
	case l.fitWill(url, err):
		// The next CONNECT differs, so it is tried under every policy.
		l.scheduleReconnect(l.backoff.next())
		return
	case !l.everUp && l.opts.Reconnect != ReconnectAlways:
		l.log.Error("connect failed", "url", url, "err", err)
		l.fail(fmt.Errorf("connect to %s: %w", url, err))
		return
	case l.everUp && l.opts.Reconnect == ReconnectNever:
		l.fail(fmt.Errorf("connect to %s: %w", url, err))
		return
	}
	delay := l.backoff.next()
	var rejected *connackError
	if errors.As(err, &rejected) && connackWaitsMaxDelay(rejected.code) {
		delay = l.backoff.rejected()
	}
	// Only the operator can fix a broker that breaks MQTT 5, so that is
	// logged as an error, where a rejected or lost connect is a warning.
	level := slog.LevelWarn
	var violation *protocolError
	if errors.As(err, &violation) {
		level = slog.LevelError
	}
	l.log.Log(context.Background(), level, "connect failed", "url", url, "err", err,
		"backoff_ms", delay.Milliseconds(), "next_url", l.opts.URLs[l.urlIndex])
	l.scheduleReconnect(delay)
}

// willFit records what one broker rejected in the Will message.
type willFit struct {
	noRetain bool // CONNACK 0x9A: the broker has no retained messages
	// lowerQoS is set after CONNACK 0x9B, when the broker rejected the
	// Will's QoS, and qos is the QoS the Will is sent with since.
	lowerQoS bool
	qos      byte
}

// fitWill lowers the Will message for the broker at url after its
// CONNACK rejected the Will's retain flag (0x9A) or its QoS (0x9B), and
// reports whether it did. The birth message is lowered to the limits of
// a CONNACK that accepted in the same way. The broker must reject such a
// Will, so without this the daemon could never connect to it. Other
// brokers in the list keep the Will as configured.
func (l *Loop) fitWill(url string, err error) bool {
	var rejected *connackError
	w := l.opts.Will
	if w == nil || !errors.As(err, &rejected) {
		return false
	}
	fit := l.willFits[url]
	switch {
	case rejected.code == 0x9A && w.Retain && !fit.noRetain:
		fit.noRetain = true
		l.log.Warn("broker does not support retained messages, so the will message is sent to it without retain",
			"url", url, "topic", w.Topic, "hint", "subscribers see the offline status only while they are subscribed")
	case rejected.code == 0x9B && l.will(url).QoS > 0:
		// A broker's Maximum QoS is 0 or 1, so a rejected QoS 2 tries 1
		// before 0.
		from := l.will(url).QoS
		fit.lowerQoS, fit.qos = true, from-1
		l.log.Warn("broker rejected the will message's QoS, so it is sent to it with a lower QoS",
			"url", url, "topic", w.Topic, "qos", from, "lowered_to", from-1)
	default:
		return false
	}
	if l.willFits == nil {
		l.willFits = map[string]willFit{}
	}
	l.willFits[url] = fit
	return true
}

// will returns the Will message for CONNECT to url, lowered by fitWill.
func (l *Loop) will(url string) *message.Message {
	w := l.opts.Will
	fit := l.willFits[url]
	if w == nil || fit == (willFit{}) {
		return w
	}
	fitted := *w
	if fit.noRetain {
		fitted.Retain = false
	}
	if fit.lowerQoS {
		fitted.QoS = fit.qos
	}
	return &fitted
}

// open dials url and exchanges CONNECT and CONNACK, all within the connect
// timeout. A Shutdown or Close abandons it.
func (l *Loop) open(ctx context.Context, url string, cleanStart bool) (*connection, *connackPacket, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopWatch := l.watchConnect(cancel)
	defer stopWatch()

	nc, clientCert, err := l.dial(ctx, url)
	if err != nil {
		return nil, nil, connectCause(ctx, err)
	}
	stopDeadline := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Now()) })
	defer stopDeadline()

	br := bufio.NewReader(nc)
	ack, err := l.handshake(nc, br, url, cleanStart)
	if err != nil {
		nc.Close()
		return nil, nil, connectCause(ctx, refusalHint(err, isTLS(url), clientCert))
	}
	if !stopDeadline() || nc.SetDeadline(time.Time{}) != nil {
		nc.Close()
		return nil, nil, connectCause(ctx, errConnectTimeout)
	}

	c := &connection{netConn: nc, url: url, limits: ack}
	c.startReader(l.codec, br)
	return c, ack, nil
}

// connectCause prefers the reason the connect context ended over the
// error it caused.
func connectCause(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil {
		return cause
	}
	return err
}

// watchConnect cancels a connect when the connect timeout passes or the
// loop is shut down or closed. The returned func stops the watch and waits
// for its goroutine.
func (l *Loop) watchConnect(cancel context.CancelCauseFunc) func() {
	t := l.clock.NewTimer(l.opts.ConnectTimeout)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-t.C():
			cancel(fmt.Errorf("%w after %s: check that the broker's address and port are right and reachable, "+
				"or raise broker.connect_timeout if the broker is slow", errConnectTimeout, l.opts.ConnectTimeout))
		case <-l.shutdownCh:
			cancel(errShuttingDown)
		case <-l.closeCh:
			cancel(ErrClosed)
		case <-stop:
		}
	}()
	return func() {
		close(stop)
		<-done
		t.Stop()
	}
}

// dial opens TCP, and TLS for mqtts:// urls. It reports whether the TLS
// configuration offers a client certificate.
func (l *Loop) dial(ctx context.Context, url string) (net.Conn, bool, error) {
	addr, err := brokerAddress(url)
	if err != nil {
		return nil, false, err
	}
	nc, err := l.dialer().DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	if !isTLS(url) {
		return nc, false, nil
	}

	cfg := &tls.Config{}
	if l.opts.TLSConfig != nil {
		if cfg, err = l.opts.TLSConfig(); err != nil {
			nc.Close()
			return nil, false, fmt.Errorf("load tls configuration: %w", err)
		}
		cfg = cfg.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(addr)
	}
	clientCert := len(cfg.Certificates) > 0 || cfg.GetClientCertificate != nil
	tc := tls.Client(nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		err = verificationHint(fmt.Errorf("tls handshake: %w", err))
		return nil, false, plainPortHint(certificateHint(err, clientCert))
	}
	return tc, clientCert, nil
}

// refusalHint adds the likely cause and its fix to an error that ended a
// connect after the dial and before CONNACK. Under TLS 1.3 a broker
// checks the client certificate after the client's handshake is done, so
// its refusal arrives as an alert or a closed connection in place of
// CONNACK.
func refusalHint(err error, overTLS, clientCert bool) error {
	if overTLS && certificateAlert(err) {
		return certificateHint(err, clientCert)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, syscall.ECONNRESET) {
		return err
	}
	switch {
	case overTLS && clientCert:
		return fmt.Errorf("%w: the broker closed the connection before CONNACK; if it checks client certificates, check the one in broker.tls.cert_file, else its log names the cause", err)
	case overTLS:
		return fmt.Errorf("%w: the broker closed the connection before CONNACK; if it requires a client certificate, set broker.tls.cert_file and broker.tls.key_file, else its log names the cause", err)
	default:
		return fmt.Errorf("%w: the broker closed the connection before CONNACK; its log names the cause", err)
	}
}

// certificateHint names the fix when the broker sent a TLS alert about
// the client certificate.
func certificateHint(err error, clientCert bool) error {
	switch {
	case !certificateAlert(err):
		return err
	case clientCert:
		return fmt.Errorf("%w: the broker rejected the client certificate; set broker.tls.cert_file to one that is valid now and signed by a CA the broker trusts", err)
	default:
		return fmt.Errorf("%w: the broker asks for a client certificate; set broker.tls.cert_file and broker.tls.key_file", err)
	}
}

// verificationHint names the fix when the broker's certificate failed
// verification on this side of the handshake.
func verificationHint(err error) error {
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknownAuthority):
		return fmt.Errorf("%w: set broker.tls.ca_file to the CA that signed the broker's certificate "+
			"(empty uses the system roots)", err)
	case errors.As(err, &hostname):
		return fmt.Errorf("%w: use a host of broker.urls that the broker's certificate names, "+
			"or set broker.tls.server_name to one", err)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return fmt.Errorf("%w: renew the broker's certificate, or correct this machine's clock if it is wrong", err)
	default:
		return err
	}
}

// plainPortHint adds a likely cause to a TLS handshake that the broker
// ended without a TLS alert, or whose reply was not TLS: the port serves
// MQTT without TLS.
func plainPortHint(err error) error {
	var header tls.RecordHeaderError
	closed := errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
	if !closed && !errors.As(err, &header) {
		return err
	}
	return fmt.Errorf("%w: if this port serves MQTT without TLS, write the url with mqtt:// instead of mqtts://", err)
}

// certificateAlert reports whether err is a TLS alert from the broker
// about the client certificate. crypto/tls reports alerts from the peer
// as a net.OpError with Op "remote error" around an unexported type, so
// the alert's text is all there is to go by.
func certificateAlert(err error) bool {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || op.Err == nil {
		return false
	}
	return strings.Contains(op.Err.Error(), "certificate")
}

// dialer returns a dialer whose sockets detect a dead peer by themselves
// when MQTT keep alive is off.
func (l *Loop) dialer() *net.Dialer {
	d := &net.Dialer{}
	if l.opts.KeepAliveOff {
		idle := l.opts.KeepAlive
		d.KeepAliveConfig = tcpKeepAlive(idle)
		d.Control = userTimeoutControl(2 * idle)
	}
	return d
}

// tcpKeepAlive returns the TCP keepalive settings that end a connection
// whose peer has been silent for idle and then ignores three probes.
func tcpKeepAlive(idle time.Duration) net.KeepAliveConfig {
	return net.KeepAliveConfig{Enable: true, Idle: idle, Interval: max(idle/3, time.Second), Count: 3}
}

// errNotTCP reports a connection that has no TCP socket to set options on.
var errNotTCP = errors.New("the connection is not TCP")

// socketKeepAlive sets on a connected socket the TCP options that dialer
// sets when keep alive is off. A connection that is neither TCP nor TLS
// over TCP yields errNotTCP.
func socketKeepAlive(nc net.Conn, idle time.Duration) error {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	tcp, ok := nc.(*net.TCPConn)
	if !ok {
		return errNotTCP
	}
	if err := tcp.SetKeepAliveConfig(tcpKeepAlive(idle)); err != nil {
		return fmt.Errorf("set tcp keepalive: %w", err)
	}
	control := userTimeoutControl(2 * idle)
	if control == nil {
		return nil
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		return fmt.Errorf("set tcp user timeout: %w", err)
	}
	if err := control("tcp", "", raw); err != nil {
		return fmt.Errorf("set tcp user timeout: %w", err)
	}
	return nil
}

// handshake writes CONNECT for the broker at url and reads CONNACK.
func (l *Loop) handshake(nc net.Conn, br *bufio.Reader, url string, cleanStart bool) (*connackPacket, error) {
	p, err := l.connectPacket(url, cleanStart)
	if err != nil {
		return nil, err
	}
	data, err := l.codec.encode(p)
	if err != nil {
		return nil, err
	}
	if _, err := nc.Write(data); err != nil {
		return nil, fmt.Errorf("write connect: %w", err)
	}

	reply, err := l.codec.decode(br)
	if err != nil {
		return nil, fmt.Errorf("read connack: %w", err)
	}
	ack, ok := reply.(*connackPacket)
	if !ok {
		return nil, fmt.Errorf("broker sent %s instead of connack", reply.packetName())
	}
	if ack.ReasonCode >= 0x80 {
		return nil, &connackError{code: ack.ReasonCode, reason: ack.ReasonString}
	}
	if ack.PropertyError != nil {
		return nil, l.refuseConnack(nc, ack.PropertyError)
	}
	return ack, nil
}

// refuseConnack ends a connection whose CONNACK accepted it but has a
// property value that breaks MQTT 5. The broker counts the client as
// connected, so the client sends DISCONNECT 0x82 (protocol error) as
// after any protocol error (MQTT 5.0 section 4.13). The returned error
// fails the connect, which is then retried with backoff.
func (l *Loop) refuseConnack(nc net.Conn, cause error) error {
	err := &protocolError{code: reasonProtocolError, err: fmt.Errorf("%w: nothing is published to this "+
		"broker until it sends a valid CONNACK; fix the broker's configuration or upgrade it, "+
		"or list another broker in broker.urls", cause)}
	data, encodeErr := l.codec.encode(&disconnectPacket{ReasonCode: reasonProtocolError})
	if encodeErr != nil {
		return fmt.Errorf("%w (DISCONNECT not sent: %v)", err, encodeErr)
	}
	nc.SetWriteDeadline(time.Now().Add(disconnectWriteTimeout))
	if _, writeErr := nc.Write(data); writeErr != nil {
		return fmt.Errorf("%w (DISCONNECT not sent: %v)", err, writeErr)
	}
	return fmt.Errorf("%w: sent DISCONNECT with %s", err, reasonName(reasonProtocolError, "disconnect"))
}

func (l *Loop) connectPacket(url string, cleanStart bool) (*connectPacket, error) {
	keepAlive := uint16(l.opts.KeepAlive / time.Second)
	if l.opts.KeepAliveOff {
		keepAlive = 0
	}
	p := &connectPacket{
		ClientID:       l.opts.ClientID,
		CleanStart:     cleanStart,
		KeepAlive:      keepAlive,
		SessionExpiry:  uint32(l.opts.SessionExpiry / time.Second),
		ReceiveMaximum: l.opts.ReceiveMaximum,
		Username:       l.opts.Username,
		Will:           l.will(url),
	}
	if l.opts.Password != nil {
		password, err := l.opts.Password()
		if err != nil {
			return nil, fmt.Errorf("read password: %w", err)
		}
		p.Password, p.HasPassword = password, true
	}
	return p, nil
}
