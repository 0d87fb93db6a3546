// Package conn runs WebSocket connections on gws: it reads frames, hands
// each to a Handler in order, and writes replies and events through a
// bounded queue. An idle connection holds one goroutine (gws's read loop)
// and no writer goroutine: one is started when frames are queued and exits
// when the queue is empty.
package conn

import (
	"context"
	"errors"
	"log/slog"
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
	ClosePolicy        = 1008 // outbound queue overflow: slow consumer
	CloseMessageTooBig = 1009 // frame over MaxFrameBytes (sent by gws)
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
	// server pings it; one that stays silent for PingInterval+PongTimeout
	// is closed with 1008 (a dead peer, or a proxy that dropped it).
	// Defaults 25 s and 10 s; a negative PingInterval disables pings.
	PingInterval time.Duration
	PongTimeout  time.Duration
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
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	c := &Conn{ws: ws, u: u, ctx: ctx, cancel: cancel}
	c.SetUser(user)
	if u.opts.Rate > 0 {
		c.limiter = rate.NewLimiter(rate.Limit(u.opts.Rate), u.opts.Burst)
	}
	c.seen()
	ws.Session().Store(sessionKey, c)
	u.mu.Lock()
	u.conns[c] = struct{}{}
	u.mu.Unlock()
	if u.opts.PingInterval > 0 {
		u.keepalive.Do(func() { go u.pinger() })
	}
	go ws.ReadLoop()
	return nil
}

func connOf(socket *gws.Conn) *Conn {
	v, _ := socket.Session().Load(sessionKey)
	c, _ := v.(*Conn)
	return c
}

// OnMessage implements gws.Event: frames are handled in order on the read
// loop's goroutine.
func (u *Upgrader) OnMessage(socket *gws.Conn, msg *gws.Message) {
	defer msg.Close()
	c := connOf(socket)
	if c == nil {
		return
	}
	c.seen()
	u.mu.Lock()
	if u.draining {
		u.mu.Unlock()
		return // the connection is about to be closed with 1001
	}
	u.inflight.Add(1)
	u.mu.Unlock()
	defer u.inflight.Done()
	if c.limiter != nil {
		if err := c.limiter.Wait(c.ctx); err != nil {
			return
		}
	}
	u.h.HandleFrame(c.uctx.Load().Context, c, msg.Bytes())
}

// OnPing implements gws.Event: the pong echoes the ping's payload, as RFC
// 6455 §5.5.3 requires (gws's built-in handler sends an empty one).
func (u *Upgrader) OnPing(socket *gws.Conn, payload []byte) {
	if c := connOf(socket); c != nil {
		c.seen()
	}
	_ = socket.WritePong(payload)
}

// OnPong implements gws.Event: a pong is a sign of life.
func (u *Upgrader) OnPong(socket *gws.Conn, _ []byte) {
	if c := connOf(socket); c != nil {
		c.seen()
	}
}

// pinger wakes every half PingInterval: it pings the connections silent
// for PingInterval and closes those silent for PingInterval+PongTimeout.
// One goroutine serves every connection; a connection holds no timer.
func (u *Upgrader) pinger() {
	defer close(u.stopped)
	t := time.NewTicker(u.opts.PingInterval / 2)
	defer t.Stop()
	var silent []*Conn
	for {
		select {
		case <-u.stop:
			return
		case now := <-t.C:
			silent = silent[:0]
			u.mu.Lock()
			for c := range u.conns {
				if now.Sub(time.Unix(0, c.lastSeen.Load())) >= u.opts.PingInterval {
					silent = append(silent, c)
				}
			}
			u.mu.Unlock()
			for _, c := range silent {
				if now.Sub(time.Unix(0, c.lastSeen.Load())) >= u.opts.PingInterval+u.opts.PongTimeout {
					go c.closeNow(ClosePolicy, "no pong within the timeout")
				} else {
					go c.ws.WritePing(nil) // on a closed socket gws just returns an error
				}
			}
		}
	}
}

// OnClose implements gws.Event. The handler may already have been told (a
// slow consumer's subscriptions go at once); telling it again also drops
// anything a frame in progress registered meanwhile.
func (u *Upgrader) OnClose(socket *gws.Conn, err error) {
	c := connOf(socket)
	if c == nil {
		return
	}
	c.cancel()
	c.mu.Lock()
	c.closed = true
	c.queue = nil
	if c.expiry != nil {
		c.expiry.Stop() // no timer outlives its connection
		c.expiry = nil
	}
	c.mu.Unlock()
	u.mu.Lock()
	delete(u.conns, c)
	u.mu.Unlock()
	u.h.Closed(c)
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
	ws      *gws.Conn
	u       *Upgrader
	user    atomic.Pointer[streamapi.User]
	uctx    atomic.Pointer[userCtx] // ctx carrying the current user, made once per SetUser
	expiry  *time.Timer             // closes the connection when the user's credentials expire
	ctx     context.Context
	cancel  context.CancelFunc
	limiter *rate.Limiter

	mu         sync.Mutex
	queue      []streamapi.Frame
	queueBytes int // the bytes of the frames in queue
	writing    bool
	closing    bool // no more frames accepted
	closed     bool
	drained    chan struct{} // closed when the queue empties, if waited for

	overflow atomic.Bool // the queue overflowed: drop everything, close with 1008

	sent     atomic.Uint64
	lastSeen atomic.Int64 // unix nanoseconds of the last frame or pong received
}

func (c *Conn) seen() { c.lastSeen.Store(time.Now().UnixNano()) }

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
func (c *Conn) Send(f streamapi.Frame) {
	c.mu.Lock()
	if c.closing || c.closed {
		c.mu.Unlock()
		return
	}
	size := len(f.Head) + len(f.Mid) + len(f.Tail)
	// One frame bigger than the byte bound still goes out when nothing
	// waits: the bound is on backlog, not on a reply's size.
	if len(c.queue) >= c.u.opts.MaxQueue || c.queueBytes > 0 && c.queueBytes+size > c.u.opts.MaxQueueBytes {
		c.closing = true
		c.overflow.Store(true)
		c.queue, c.queueBytes = nil, 0
		c.mu.Unlock()
		c.u.opts.Logger.Warn("closing slow consumer", "remote", c.ws.RemoteAddr().String(), "max_queue", c.u.opts.MaxQueue, "max_queue_bytes", c.u.opts.MaxQueueBytes)
		go c.closeSlow()
		return
	}
	c.queue = append(c.queue, f)
	c.queueBytes += size
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

// Reply writes f from the calling goroutine, the connection's reader, when
// nothing is queued or being written: a reply then costs no goroutine
// hand-off, and a client that does not read its replies holds up only its
// own reads. Otherwise f is queued behind the rest, as Send does. Frames
// queued while f is written go to the writer goroutine afterwards.
func (c *Conn) Reply(f streamapi.Frame) {
	c.mu.Lock()
	if c.closing || c.closed || c.writing || len(c.queue) > 0 {
		c.mu.Unlock()
		c.Send(f)
		return
	}
	c.writing = true
	c.mu.Unlock()
	c.write(f)
	c.mu.Lock()
	if len(c.queue) > 0 && !c.closed {
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
	c.queue, c.queueBytes = nil, 0
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
		if len(c.queue) == 0 || c.closed { // an overflow empties the queue
			c.idleLocked()
			c.mu.Unlock()
			return
		}
		batch, c.queue, c.queueBytes = c.queue, batch[:0], 0
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
