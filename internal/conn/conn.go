// Package conn runs WebSocket connections on gws: it reads frames, hands
// each to a Handler in order, and writes replies and events through a
// bounded queue. An idle connection holds one goroutine (gws's read loop)
// and no writer goroutine: one is started when frames are queued and exits
// when the queue is empty.
package conn

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
	"github.com/streamapi/streamapi"
	"golang.org/x/time/rate"
)

// Close codes this package sends.
const (
	CloseGoingAway     = 1001 // server shutting down
	ClosePolicy        = 1008 // outbound queue overflow (slow consumer), or no pong
	CloseMessageTooBig = 1009 // frame over MaxFrameBytes (sent by gws)
	CloseInternalError = 1011 // the handler panicked
)

// Handler receives a connection's frames, one at a time in arrival order,
// and learns when it closes.
type Handler interface {
	HandleFrame(ctx context.Context, c *Conn, frame []byte)
	Closed(c *Conn)
}

// Options are the per-connection limits. Zero fields take the defaults
// documented on each.
type Options struct {
	// MaxFrameBytes is the largest frame accepted; a bigger one closes the
	// connection with 1009. Default 1 MiB.
	MaxFrameBytes int
	// MaxQueue is how many outbound frames may wait; past it the client is
	// a slow consumer and is closed with 1008. Default 1024.
	MaxQueue int
	// MaxQueueBytes bounds the bytes of the waiting frames in the same
	// way, so that a client behind on large events cannot pin much memory
	// within MaxQueue frames (a single frame may exceed it when nothing
	// else waits). Default 16 MiB.
	MaxQueueBytes int
	// WriteTimeout bounds one frame's write. Default 10 s.
	WriteTimeout time.Duration
	// Rate and Burst limit inbound frames per second. Past the rate the
	// server stops reading until tokens return (backpressure, no errors).
	// Defaults 200/s and 400; a negative Rate disables the limit.
	Rate  float64
	Burst int
	// PingInterval is how long a connection may stay silent before the
	// server pings it; one that then leaves the ping unanswered for
	// PongTimeout is closed with 1008 (a dead peer, or a proxy that
	// dropped it). Defaults 25 s and 10 s; a negative PingInterval
	// disables pings. keepalive.go.
	PingInterval time.Duration
	PongTimeout  time.Duration
	// MaxPending bounds the inbound frames that wait while one is being
	// handled (and their bytes, to MaxFrameBytes); past it the server
	// stops reading the connection until one is done (backpressure).
	// Default 16.
	MaxPending int
	// RequestTimeout bounds the handling of one frame: its context's
	// deadline, which cancels its statements. Default 10 s; negative
	// means none.
	RequestTimeout time.Duration
	// Logger receives connection-level errors. Default slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.MaxFrameBytes <= 0 {
		o.MaxFrameBytes = 1 << 20
	}
	if o.MaxQueue <= 0 {
		o.MaxQueue = 1024
	}
	if o.MaxQueueBytes <= 0 {
		o.MaxQueueBytes = 16 << 20
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.Rate == 0 {
		o.Rate = 200
	}
	if o.Burst <= 0 {
		o.Burst = 400
	}
	if o.PingInterval == 0 {
		o.PingInterval = 25 * time.Second
	}
	if o.PongTimeout <= 0 {
		o.PongTimeout = 10 * time.Second
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 16
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Upgrader accepts WebSocket connections and tracks them until they close.
type Upgrader struct {
	gws.BuiltinEventHandler
	opts     Options
	h        Handler
	upgrader *gws.Upgrader
	bearer   *gws.Upgrader // for handshakes offering the "bearer" subprotocol

	mu       sync.Mutex
	conns    map[*Conn]struct{}
	draining bool
	inflight sync.WaitGroup

	keepalive sync.Once     // starts the pinger on the first connection
	stop      chan struct{} // closed by Shutdown: the pinger exits
	stopped   chan struct{} // closed when the pinger has exited
	ping      []*Conn       // the scan's buffers (keepalive.go)
	drop      []*Conn

	pings    atomic.Uint64 // pings sent by the keep-alive
	timeouts atomic.Uint64 // connections it closed
}

const sessionKey = "c"

// NewUpgrader returns an Upgrader handing frames to h.
func NewUpgrader(h Handler, opts Options) *Upgrader {
	u := &Upgrader{opts: opts.withDefaults(), h: h, conns: make(map[*Conn]struct{}),
		stop: make(chan struct{}), stopped: make(chan struct{})}
	opt := func(protocols []string) *gws.ServerOption {
		return &gws.ServerOption{
			ReadMaxPayloadSize: u.opts.MaxFrameBytes,
			CheckUtf8Enabled:   true,
			ReadBufferSize:     2048,
			WriteBufferSize:    2048,
			SubProtocols:       protocols,
		}
	}
	u.upgrader = gws.NewUpgrader(u, opt(nil))
	// A browser that sends its token as the subprotocols ["bearer", TOKEN]
	// needs "bearer" echoed back, or it drops the socket; gws refuses a
	// handshake that offers none of its SubProtocols, hence two upgraders.
	u.bearer = gws.NewUpgrader(u, opt([]string{BearerProtocol}))
	return u
}

// BearerProtocol is the subprotocol a client offers, followed by its
// token, to authenticate a handshake without the token in the URL.
const BearerProtocol = "bearer"

// offers reports whether the handshake offers subprotocol p.
func offers(r *http.Request, p string) bool {
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, x := range strings.Split(h, ",") {
			if strings.TrimSpace(x) == p {
				return true
			}
		}
	}
	return false
}

// ErrDraining is returned by Accept during Shutdown.
var ErrDraining = errors.New("conn: server is shutting down")

// Accept upgrades the request and starts the connection's read loop. The
// handshake request's context is not kept: the connection lives until
// either side closes it or Shutdown.
func (u *Upgrader) Accept(w http.ResponseWriter, r *http.Request, user *streamapi.User) error {
	u.mu.Lock()
	draining := u.draining
	u.mu.Unlock()
	if draining {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return ErrDraining
	}
	up := u.upgrader
	if offers(r, BearerProtocol) {
		up = u.bearer
	}
	ws, err := up.Upgrade(w, r)
	if err != nil {
		return err
	}
	c := u.newConn(r.Context(), ws, user)
	ws.Session().Store(sessionKey, c)
	go ws.ReadLoop()
	return nil
}

// newConn registers a connection over ws, whose user is user.
func (u *Upgrader) newConn(ctx context.Context, ws socket, user *streamapi.User) *Conn {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c := &Conn{ws: ws, u: u, ctx: ctx, cancel: cancel,
		out: queue{maxFrames: u.opts.MaxQueue, maxBytes: u.opts.MaxQueueBytes}}
	c.room = sync.NewCond(&c.mu)
	c.SetUser(user)
	if u.opts.Rate > 0 {
		c.limiter = rate.NewLimiter(rate.Limit(u.opts.Rate), u.opts.Burst)
	}
	c.seen()
	u.mu.Lock()
	u.conns[c] = struct{}{}
	u.mu.Unlock()
	if u.opts.PingInterval > 0 {
		u.keepalive.Do(func() { go u.pinger() })
	}
	return c
}

// socket is what a connection needs of its WebSocket: gws's Conn, or a
// fake in the tests of the writer's interleavings.
type socket interface {
	WriteMessage(opcode gws.Opcode, payload []byte) error
	Writev(opcode gws.Opcode, payloads ...[]byte) error
	WritePing(payload []byte) error
	WriteClose(code uint16, reason []byte) error
	SetWriteDeadline(t time.Time) error
	RemoteAddr() net.Addr
}

func connOf(socket *gws.Conn) *Conn {
	v, _ := socket.Session().Load(sessionKey)
	c, _ := v.(*Conn)
	return c
}

// OnMessage implements gws.Event. It runs on the read loop's goroutine:
// after the rate limit (which pauses reading: backpressure), the frame goes
// to the connection's inbox and the read loop goes back to reading, so
// that it sees pongs, and a close, while the frame is handled. The frames
// are handled one at a time, in order, by the connection's worker.
func (u *Upgrader) OnMessage(socket *gws.Conn, msg *gws.Message) {
	c := connOf(socket)
	if c == nil {
		msg.Close()
		return
	}
	c.receive(msg.Bytes(), msg)
}

// receive takes one inbound frame; release, when not nil, is closed once
// the frame's bytes are no longer needed (gws pools them).
func (c *Conn) receive(b []byte, release io.Closer) {
	u := c.u
	c.seen()
	u.mu.Lock()
	if u.draining {
		u.mu.Unlock()
		if release != nil {
			_ = release.Close()
		}
		return // the connection is about to be closed with 1001
	}
	u.inflight.Add(1)
	u.mu.Unlock()
	if c.limiter != nil {
		c.held.Add(1)
		err := c.limiter.Wait(c.ctx)
		c.seen() // a wait is ours, not the peer's silence
		c.held.Add(-1)
		if err != nil {
			c.dropped(release)
			return
		}
	}
	c.mu.Lock()
	if len(c.inbox) > 0 && (len(c.inbox) >= u.opts.MaxPending || c.inboxBytes+len(b) > u.opts.MaxFrameBytes) {
		// Full: stop reading until the worker takes one.
		c.held.Add(1)
		for !c.closed && len(c.inbox) > 0 && (len(c.inbox) >= u.opts.MaxPending || c.inboxBytes+len(b) > u.opts.MaxFrameBytes) {
			c.room.Wait()
		}
		c.held.Add(-1)
		c.seen()
	}
	if c.closed {
		c.mu.Unlock()
		c.dropped(release)
		return
	}
	c.inbox = append(c.inbox, inFrame{b: b, release: release})
	c.inboxBytes += len(b)
	if c.idle == nil {
		c.idle = make(chan struct{})
		go c.work(c.idle)
	}
	c.mu.Unlock()
}

// dropped forgets a frame that will not be handled.
func (c *Conn) dropped(release io.Closer) {
	if release != nil {
		_ = release.Close()
	}
	c.u.inflight.Done()
}

// inFrame is an inbound frame waiting for the worker.
type inFrame struct {
	b       []byte
	release io.Closer
}

// work handles the inbox's frames in order until it is empty, then exits:
// an idle connection has no worker. A frame that arrives after the
// connection closed is not handled; one being handled when it closes has
// its context cancelled (and so its statements).
func (c *Conn) work(idle chan struct{}) {
	for {
		c.mu.Lock()
		if len(c.inbox) == 0 || c.closed {
			rest := c.inbox
			c.inbox, c.inboxBytes = nil, 0
			c.idle = nil
			c.room.Broadcast()
			c.mu.Unlock()
			for _, f := range rest {
				c.dropped(f.release)
			}
			close(idle)
			return
		}
		f := c.inbox[0]
		c.inbox[0] = inFrame{}
		c.inbox = c.inbox[1:]
		c.inboxBytes -= len(f.b)
		c.room.Signal()
		c.mu.Unlock()
		c.handle(f)
	}
}

// handle hands one frame to the handler, with the request's deadline. A
// panic is the handler's bug: it is logged and closes this connection
// (1011), not the process.
func (c *Conn) handle(f inFrame) {
	defer c.dropped(f.release)
	defer func() {
		if v := recover(); v != nil {
			c.u.opts.Logger.Error("panic handling a frame", "panic", v, "remote", c.ws.RemoteAddr().String())
			go c.closeNow(CloseInternalError, "internal error")
		}
	}()
	ctx := c.uctx.Load().Context
	if d := c.u.opts.RequestTimeout; d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	c.u.h.HandleFrame(ctx, c, f.b)
}

// OnPing implements gws.Event: the pong echoes the ping's payload, as RFC
// 6455 §5.5.3 requires (gws's built-in handler sends an empty one).
func (u *Upgrader) OnPing(socket *gws.Conn, payload []byte) {
	c := connOf(socket)
	if c == nil {
		return
	}
	c.seen()
	c.writeControl(func() error { return socket.WritePong(payload) })
}

// writeControl writes a ping or pong with a fresh write deadline: the
// socket's deadline is the last frame's, long past on an idle connection,
// and a write past it fails and closes the connection.
func (c *Conn) writeControl(write func() error) {
	_ = c.ws.SetWriteDeadline(time.Now().Add(c.u.opts.WriteTimeout))
	_ = write()
}

// OnPong implements gws.Event: a pong is a sign of life.
func (u *Upgrader) OnPong(socket *gws.Conn, _ []byte) {
	if c := connOf(socket); c != nil {
		c.seen()
	}
}

// OnClose implements gws.Event. The handler may already have been told (a
// slow consumer's subscriptions go at once); it is told again once the
// frame being handled, whose context is cancelled now, is done, so that a
// subscription that frame registered goes too.
func (u *Upgrader) OnClose(socket *gws.Conn, err error) {
	if c := connOf(socket); c != nil {
		c.closed0()
	}
}

// closed0 is OnClose for c.
func (c *Conn) closed0() {
	c.cancel()
	c.mu.Lock()
	c.closed = true
	c.out.reset()
	if c.expiry != nil {
		c.expiry.Stop() // no timer outlives its connection
		c.expiry = nil
	}
	c.room.Broadcast()
	idle := c.idle
	c.mu.Unlock()
	if idle != nil {
		<-idle
	}
	c.u.mu.Lock()
	delete(c.u.conns, c)
	c.u.mu.Unlock()
	c.u.h.Closed(c)
}

// Len returns the number of open connections.
func (u *Upgrader) Len() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.conns)
}

// Shutdown stops accepting connections and frames, waits for frames being
// handled to finish and for every queued frame to be written, then closes
// each connection with 1001. It returns when all are closed or ctx ends.
func (u *Upgrader) Shutdown(ctx context.Context) error {
	u.mu.Lock()
	first := !u.draining
	u.draining = true
	u.mu.Unlock()
	if first {
		close(u.stop)
		u.keepalive.Do(func() { close(u.stopped) }) // never started
		<-u.stopped
	}
	done := make(chan struct{})
	go func() { u.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	u.mu.Lock()
	conns := make([]*Conn, 0, len(u.conns))
	for c := range u.conns {
		conns = append(conns, c)
	}
	u.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() { defer wg.Done(); c.closeAfterDrain(ctx, CloseGoingAway, "server shutting down") }()
	}
	wg.Wait()
	for u.Len() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// Conn is one client connection. It implements streamapi.Peer.
type Conn struct {
	ws      socket
	u       *Upgrader
	user    atomic.Pointer[streamapi.User]
	uctx    atomic.Pointer[userCtx] // ctx carrying the current user, made once per SetUser
	expiry  *time.Timer             // closes the connection when the user's credentials expire
	ctx     context.Context
	cancel  context.CancelFunc
	limiter *rate.Limiter

	mu      sync.Mutex
	out     queue // outbound frames
	writing bool  // a writer (goroutine, or an inline Reply) owns the socket
	closing bool  // no more frames accepted
	closed  bool
	drained chan struct{} // closed when the queue empties, if waited for

	inbox      []inFrame     // inbound frames waiting for the worker
	inboxBytes int           // their bytes
	idle       chan struct{} // while a worker runs: closed when it exits
	room       *sync.Cond    // on mu: the reader waits for room in the inbox

	overflow atomic.Bool // the queue overflowed: drop everything, close with 1008

	sent     atomic.Uint64
	lastSeen atomic.Int64 // nanotime of the last frame, ping or pong received
	pingedAt atomic.Int64 // nanotime of the last keep-alive ping (0: none)
	held     atomic.Int32 // >0 while the server itself holds off reading
}

func (c *Conn) seen() { c.lastSeen.Store(nanotime()) }

var _ streamapi.Peer = (*Conn)(nil)

// User returns the authenticated user, nil for anonymous.
func (c *Conn) User() *streamapi.User { return c.user.Load() }

// userCtx is the context handed to the handler: the connection's, carrying
// its current user (resources read it with streamapi.UserFrom).
type userCtx struct{ context.Context }

// setUser stores u and the context that carries it.
func (c *Conn) setUser(u *streamapi.User) {
	c.user.Store(u)
	c.uctx.Store(&userCtx{streamapi.WithUser(c.ctx, u)})
}

// CloseTokenExpired is the close code of a connection whose user's
// credentials expired without being renewed (as graphql-ws's 4401).
const CloseTokenExpired = 4401

// SetUser makes u the connection's user (an in-band "authenticate" renews
// it). When u's credentials expire, the connection closes with 4401
// "token expired" unless SetUser is called again before.
func (c *Conn) SetUser(u *streamapi.User) {
	c.mu.Lock() // orders renewals with the expiry timer
	defer c.mu.Unlock()
	c.setUser(u)
	if c.expiry != nil {
		c.expiry.Stop()
		c.expiry = nil
	}
	if u == nil || u.Expires.IsZero() || c.closed {
		return
	}
	c.expiry = time.AfterFunc(time.Until(u.Expires), func() {
		c.mu.Lock()
		expired := c.user.Load() == u // not renewed meanwhile
		if expired {
			// Frames still arriving are the anonymous user's.
			c.setUser(nil)
		}
		c.mu.Unlock()
		if expired {
			c.u.h.Closed(c) // the subscriptions go at once
			c.closeNow(CloseTokenExpired, "token expired")
		}
	})
}

// Sent returns the number of frames written so far.
func (c *Conn) Sent() uint64 { return c.sent.Load() }

// Send queues f for writing and returns at once. A client whose queue is
// full is disconnected with 1008: it never slows anyone else down.
func (c *Conn) Send(f streamapi.Frame) { c.send(f, nil) }

// SendBatch queues fs as Send does, bounded by MaxQueueBytes only: a
// visibility burst (hub.BatchSender) of more frames than MaxQueue does not
// make a client that reads a slow consumer.
func (c *Conn) SendBatch(fs []streamapi.Frame) { c.send(streamapi.Frame{}, fs) }

func (c *Conn) send(f streamapi.Frame, fs []streamapi.Frame) {
	c.mu.Lock()
	if c.closing || c.closed {
		c.mu.Unlock()
		return
	}
	var ok bool
	if fs != nil {
		ok = c.out.pushBatch(fs)
	} else {
		ok = c.out.push(f)
	}
	if !ok {
		c.closing = true
		c.overflow.Store(true)
		c.out.reset()
		c.mu.Unlock()
		c.u.opts.Logger.Warn("closing slow consumer", "remote", c.ws.RemoteAddr().String(), "max_queue", c.u.opts.MaxQueue, "max_queue_bytes", c.u.opts.MaxQueueBytes)
		go c.closeSlow()
		return
	}
	if !c.writing {
		c.writing = true
		go c.flush()
	}
	c.mu.Unlock()
}

// closeSlow closes a slow consumer: its subscriptions go at once (and again
// on close, in case a frame being handled added one), the frame
// being written (if any) may finish, then the close frame follows, so that
// a client that reads again finds 1008 right after the last whole frame.
// The writer drops the rest of its batch.
func (c *Conn) closeSlow() {
	c.u.h.Closed(c)
	c.closeNow(ClosePolicy, "slow consumer: outbound queue full")
}

// Reply writes f from the calling goroutine, the worker handling the
// connection's frames, when nothing is queued or being written: a reply
// then costs no goroutine hand-off, and a client that does not read its
// replies holds up only its own requests. Otherwise f is queued behind the
// rest, as Send does. Frames queued while f is written go to the writer
// goroutine afterwards.
func (c *Conn) Reply(f streamapi.Frame) {
	c.mu.Lock()
	if c.closing || c.closed || c.writing || c.out.len() > 0 {
		c.mu.Unlock()
		c.Send(f)
		return
	}
	c.writing = true
	c.mu.Unlock()
	c.write(f)
	c.mu.Lock()
	if c.out.len() > 0 && !c.closed {
		c.mu.Unlock()
		go c.flush() // c.writing stays set: the writer takes over
		return
	}
	c.idleLocked()
	c.mu.Unlock()
}

// idleLocked records that nothing is being written any more. c.mu is held.
func (c *Conn) idleLocked() {
	c.writing = false
	c.out.reset()
	if c.drained != nil {
		close(c.drained)
		c.drained = nil
	}
}

// flush writes queued frames until the queue is empty.
func (c *Conn) flush() {
	var batch []streamapi.Frame
	for {
		c.mu.Lock()
		if c.out.len() == 0 || c.closed { // an overflow empties the queue
			c.idleLocked()
			c.mu.Unlock()
			return
		}
		batch = c.out.take(batch)
		c.mu.Unlock()
		for i, f := range batch {
			batch[i] = streamapi.Frame{}
			c.write(f)
		}
	}
}

// write writes one frame, unless the client is being closed as a slow
// consumer.
func (c *Conn) write(f streamapi.Frame) {
	if c.overflow.Load() {
		return // dropped: the client is being closed
	}
	_ = c.ws.SetWriteDeadline(time.Now().Add(c.u.opts.WriteTimeout))
	var err error
	if len(f.Mid) == 0 && len(f.Tail) == 0 {
		err = c.ws.WriteMessage(gws.OpcodeText, f.Head)
	} else {
		err = c.ws.Writev(gws.OpcodeText, f.Head, f.Mid, f.Tail)
	}
	if err != nil {
		// gws closes the connection on a write error; OnClose follows.
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		return
	}
	c.sent.Add(1)
}

// closeAfterDrain stops taking frames, waits until the queue is written
// (or ctx ends), then sends a close frame.
func (c *Conn) closeAfterDrain(ctx context.Context, code uint16, reason string) {
	c.mu.Lock()
	c.closing = true
	var wait chan struct{}
	if c.writing && !c.closed {
		if c.drained == nil { // a second caller waits on the same drain
			c.drained = make(chan struct{})
		}
		wait = c.drained
	}
	c.mu.Unlock()
	if wait != nil {
		select {
		case <-wait:
		case <-ctx.Done():
		}
	}
	c.closeNow(code, reason)
}

// closeGrace bounds the wait for the frame in flight and the close frame.
const closeGrace = 2 * time.Second

// closeNow sends a close frame, waiting at most closeGrace for the frame
// being written and for the close frame itself, then closes the socket (gws
// does not wait for the client's close reply).
func (c *Conn) closeNow(code uint16, reason string) {
	_ = c.ws.SetWriteDeadline(time.Now().Add(closeGrace))
	_ = c.ws.WriteClose(code, []byte(reason))
}

// Close closes the connection with code and reason, after the frames
// already queued.
func (c *Conn) Close(code uint16, reason string) {
	c.closeAfterDrain(c.ctx, code, reason)
}
