package conn

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/streamapi/streamapi"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeSocket records what a connection writes. While gate is set, every
// write waits for a value on it (the test holds the write in progress).
type fakeSocket struct {
	mu      sync.Mutex
	frames  []string
	closes  []uint16
	reasons []string
	pings   int
	gate    chan struct{}
	writing chan struct{} // receives when a write starts waiting on gate
	fail    error         // every write fails with it
}

func (s *fakeSocket) wait() error {
	s.mu.Lock()
	gate, writing, fail := s.gate, s.writing, s.fail
	s.mu.Unlock()
	if gate != nil {
		if writing != nil {
			writing <- struct{}{}
		}
		<-gate
	}
	return fail
}

func (s *fakeSocket) record(b []byte) error {
	if err := s.wait(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frames = append(s.frames, string(b))
	return nil
}

func (s *fakeSocket) WriteMessage(_ gws.Opcode, b []byte) error { return s.record(b) }
func (s *fakeSocket) Writev(_ gws.Opcode, bs ...[]byte) error {
	var all []byte
	for _, b := range bs {
		all = append(all, b...)
	}
	return s.record(all)
}
func (s *fakeSocket) WritePing([]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pings++
	return nil
}
func (s *fakeSocket) WriteClose(code uint16, reason []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closes = append(s.closes, code)
	s.reasons = append(s.reasons, string(reason))
	return nil
}
func (s *fakeSocket) SetWriteDeadline(time.Time) error { return nil }
func (s *fakeSocket) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

func (s *fakeSocket) written() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.frames...)
}

func (s *fakeSocket) closed() []uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint16(nil), s.closes...)
}

// hold makes the next writes wait until release; started receives when
// each begins.
func (s *fakeSocket) hold() (started <-chan struct{}, release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	gate, writing := make(chan struct{}), make(chan struct{}, 64)
	s.gate, s.writing = gate, writing
	return writing, func() {
		s.mu.Lock()
		s.gate, s.writing = nil, nil
		s.mu.Unlock()
		close(gate)
	}
}

// recorder is a Handler that records frames and closes, and runs fn (if
// set) for each frame.
type recorder struct {
	mu     sync.Mutex
	frames []string
	closed int
	after  []string // frames handled after the first Closed
	fn     func(ctx context.Context, c *Conn, frame string)
}

func (r *recorder) HandleFrame(ctx context.Context, c *Conn, frame []byte) {
	if r.fn != nil {
		r.fn(ctx, c, string(frame))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.frames = append(r.frames, string(frame))
	if r.closed > 0 {
		r.after = append(r.after, string(frame))
	}
}

func (r *recorder) Closed(*Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed++
}

func (r *recorder) handled() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.frames...)
}

func (r *recorder) closes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// newTestConn returns a connection over a fake socket, its pings off.
func newTestConn(t *testing.T, h Handler, opts Options) (*Conn, *fakeSocket) {
	t.Helper()
	opts.PingInterval = -1
	if opts.Rate == 0 {
		opts.Rate = -1
	}
	u := NewUpgrader(h, opts)
	s := &fakeSocket{}
	c := u.newConn(context.Background(), s, nil)
	t.Cleanup(func() {
		c.closed0()
		_ = u.Shutdown(context.Background())
	})
	return c, s
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A reply on an idle connection is written by the calling goroutine: Reply
// returns only once the frame is written.
func TestConn_ReplyInlineWhenIdle(t *testing.T) {
	c, s := newTestConn(t, &recorder{}, Options{})
	started, release := s.hold()
	done := make(chan struct{})
	go func() { c.Reply(frame("r1")); close(done) }()
	<-started
	select {
	case <-done:
		t.Fatal("Reply returned before its write finished: not written inline")
	case <-time.After(20 * time.Millisecond):
	}
	release()
	<-done
	if got := s.written(); !equal(got, []string{"r1"}) {
		t.Fatalf("written %v", got)
	}
}

// Frames queued while an inline reply is being written go out after it,
// in order, from a writer goroutine that takes over.
func TestConn_SendDuringInlineReply(t *testing.T) {
	c, s := newTestConn(t, &recorder{}, Options{})
	started, release := s.hold()
	go c.Reply(frame("reply"))
	<-started
	c.Send(frame("e1"))
	c.Send(frame("e2"))
	c.Reply(frame("reply2")) // busy: queued, returns at once
	release()
	eventually(t, "the queued frames", func() bool { return len(s.written()) == 4 })
	if got := s.written(); !equal(got, []string{"reply", "e1", "e2", "reply2"}) {
		t.Fatalf("written %v", got)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writing || c.out.len() != 0 {
		t.Fatal("the connection is not idle after its queue drained")
	}
}

// A Send that overflows the queue while a reply is being written inline:
// the client is a slow consumer. Its subscriptions go at once, the frame
// in flight finishes, nothing queued is written after it, and the close
// is 1008.
func TestConn_OverflowDuringInlineReply(t *testing.T) {
	h := &recorder{}
	c, s := newTestConn(t, h, Options{MaxQueue: 2})
	started, release := s.hold()
	go c.Reply(frame("reply"))
	<-started
	c.Send(frame("e1"))
	c.Send(frame("e2"))
	c.Send(frame("e3")) // the third: over the bound of 2
	eventually(t, "the handler told of the close", func() bool { return h.closes() == 1 })
	c.Send(frame("e4")) // after the overflow: dropped
	release()
	eventually(t, "the 1008 close", func() bool { return len(s.closed()) == 1 })
	time.Sleep(20 * time.Millisecond)
	if got := s.written(); !equal(got, []string{"reply"}) {
		t.Fatalf("written %v; want only the frame in flight", got)
	}
	if got := s.closed(); got[0] != ClosePolicy {
		t.Fatalf("closed with %v", got)
	}
}

// The byte bound closes a slow consumer as the frame bound does.
func TestConn_OverflowByBytes(t *testing.T) {
	h := &recorder{}
	c, s := newTestConn(t, h, Options{MaxQueue: 100, MaxQueueBytes: 10})
	started, release := s.hold()
	go c.Send(frame("in flight"))
	<-started
	c.Send(frame("12345"))
	c.Send(frame("67890"))
	if h.closes() != 0 {
		t.Fatal("closed at exactly the byte bound")
	}
	c.Send(frame("x"))
	eventually(t, "the close", func() bool { return h.closes() == 1 })
	release()
	eventually(t, "the 1008 close", func() bool { return len(s.closed()) == 1 })
}

// closeAfterDrain writes every queued frame, then the close; a second call
// waits for the same drain; frames sent after it are dropped.
func TestConn_CloseAfterDrain(t *testing.T) {
	c, s := newTestConn(t, &recorder{}, Options{})
	started, release := s.hold()
	c.Send(frame("a"))
	<-started
	c.Send(frame("b"))
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); c.closeAfterDrain(context.Background(), CloseGoingAway, "bye") }()
	}
	eventually(t, "closing", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.closing })
	c.Send(frame("late"))
	time.Sleep(10 * time.Millisecond)
	if len(s.closed()) != 0 {
		t.Fatal("closed before the queue drained")
	}
	release()
	wg.Wait()
	if got := s.written(); !equal(got, []string{"a", "b"}) {
		t.Fatalf("written %v", got)
	}
	if got := s.closed(); len(got) != 2 || got[0] != CloseGoingAway {
		t.Fatalf("close frames %v", got)
	}
}

// closeAfterDrain gives up waiting when its context ends.
func TestConn_CloseAfterDrainBounded(t *testing.T) {
	c, s := newTestConn(t, &recorder{}, Options{})
	started, release := s.hold()
	defer release()
	c.Send(frame("stuck"))
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	c.closeAfterDrain(ctx, CloseGoingAway, "bye")
	if got := s.closed(); len(got) != 1 {
		t.Fatalf("close frames %v", got)
	}
}

// A write error closes the connection: later frames are dropped, and the
// writer exits.
func TestConn_WriteErrorCloses(t *testing.T) {
	c, s := newTestConn(t, &recorder{}, Options{})
	s.fail = errors.New("broken pipe")
	c.Send(frame("a"))
	eventually(t, "closed", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.closed && !c.writing })
	c.Send(frame("b"))
	c.Reply(frame("c"))
	if c.Sent() != 0 || len(s.written()) != 0 {
		t.Fatalf("%d frames counted as sent", c.Sent())
	}
}

// Inbound frames are handled one at a time, in order, by one worker, off
// the reader: receive returns before the frame is handled.
func TestConn_InboxInOrderOneAtATime(t *testing.T) {
	var active, most int
	var mu sync.Mutex
	h := &recorder{fn: func(context.Context, *Conn, string) {
		mu.Lock()
		active++
		most = max(most, active)
		mu.Unlock()
		time.Sleep(time.Millisecond)
		mu.Lock()
		active--
		mu.Unlock()
	}}
	c, _ := newTestConn(t, h, Options{MaxPending: 64})
	want := make([]string, 50)
	for i := range want {
		want[i] = string(rune('A' + i))
		c.receive([]byte(want[i]), nil)
	}
	eventually(t, "every frame handled", func() bool { return len(h.handled()) == len(want) })
	if got := h.handled(); !equal(got, want) || most != 1 {
		t.Fatalf("handled %v with up to %d at once", got, most)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.idle != nil {
		t.Fatal("the worker did not exit with the inbox empty")
	}
}

// A full inbox stops the reader (backpressure) until the frame being
// handled is done; the reader counts as held meanwhile, so the keep-alive
// does not take the server's own pause for the peer's silence.
func TestConn_InboxFullHoldsTheReader(t *testing.T) {
	gate := make(chan struct{})
	h := &recorder{fn: func(_ context.Context, _ *Conn, f string) {
		if f == "slow" {
			<-gate
		}
	}}
	c, _ := newTestConn(t, h, Options{MaxPending: 2})
	c.receive([]byte("slow"), nil)
	eventually(t, "the slow frame taken", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.inbox) == 0 })
	c.receive([]byte("p1"), nil)
	c.receive([]byte("p2"), nil)
	returned := make(chan struct{})
	go func() { c.receive([]byte("p3"), nil); close(returned) }()
	eventually(t, "the reader held", func() bool { return c.held.Load() == 1 })
	select {
	case <-returned:
		t.Fatal("a third frame was taken past MaxPending 2")
	case <-time.After(20 * time.Millisecond):
	}
	close(gate)
	<-returned
	eventually(t, "all handled", func() bool { return len(h.handled()) == 4 })
	if got := h.handled(); !equal(got, []string{"slow", "p1", "p2", "p3"}) || c.held.Load() != 0 {
		t.Fatalf("handled %v, held %d", got, c.held.Load())
	}
}

// The inbox is bounded in bytes too, at one frame's maximum.
func TestConn_InboxByteBound(t *testing.T) {
	gate := make(chan struct{})
	h := &recorder{fn: func(_ context.Context, _ *Conn, f string) {
		if f == "slow" {
			<-gate
		}
	}}
	c, _ := newTestConn(t, h, Options{MaxPending: 100, MaxFrameBytes: 8})
	c.receive([]byte("slow"), nil)
	eventually(t, "the slow frame taken", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.inbox) == 0 })
	c.receive([]byte("12345"), nil)
	c.receive([]byte("678"), nil) // 8 bytes waiting: at the bound
	returned := make(chan struct{})
	go func() { c.receive([]byte("9"), nil); close(returned) }()
	eventually(t, "the reader held", func() bool { return c.held.Load() == 1 })
	close(gate)
	<-returned
	eventually(t, "all handled", func() bool { return len(h.handled()) == 4 })
}

// A connection that closes while a frame is being handled: the frame's
// context is cancelled (its statements stop), the frames waiting behind
// it are not handled, and the handler is told of the close only after the
// frame being handled is done, so that a subscription it made goes too.
func TestConn_CloseCancelsTheFrameInProgress(t *testing.T) {
	inside := make(chan struct{})
	var sawCancel bool
	h := &recorder{}
	h.fn = func(ctx context.Context, _ *Conn, f string) {
		if f != "slow" {
			return
		}
		close(inside)
		<-ctx.Done()
		time.Sleep(10 * time.Millisecond) // finishing up after the cancel
		sawCancel = errors.Is(ctx.Err(), context.Canceled)
	}
	c, _ := newTestConn(t, h, Options{})
	c.receive([]byte("slow"), nil)
	<-inside
	c.receive([]byte("behind"), nil)
	c.closed0() // the read loop saw the close
	if got := h.handled(); !equal(got, []string{"slow"}) || !sawCancel {
		t.Fatalf("handled %v, cancelled %v", got, sawCancel)
	}
	if h.closes() != 1 || len(h.after) != 0 {
		t.Fatalf("Closed %d times, frames after it %v", h.closes(), h.after)
	}
	c.receive([]byte("after close"), nil)
	if got := h.handled(); len(got) != 1 {
		t.Fatalf("a frame received after the close was handled: %v", got)
	}
}

// Each frame's context has the request deadline.
func TestConn_RequestTimeout(t *testing.T) {
	var left time.Duration
	h := &recorder{fn: func(ctx context.Context, _ *Conn, _ string) {
		d, ok := ctx.Deadline()
		if ok {
			left = time.Until(d)
		}
	}}
	c, _ := newTestConn(t, h, Options{RequestTimeout: 3 * time.Second})
	c.receive([]byte("x"), nil)
	eventually(t, "handled", func() bool { return len(h.handled()) == 1 })
	if left <= 2*time.Second || left > 3*time.Second {
		t.Fatalf("deadline %v away, want about 3 s", left)
	}
}

// A handler that panics closes its connection with 1011; the next
// connection (and the process) carry on.
func TestConn_HandlerPanicClosesOnlyItsConnection(t *testing.T) {
	h := &recorder{fn: func(_ context.Context, _ *Conn, f string) {
		if f == "boom" {
			panic("bug")
		}
	}}
	c, s := newTestConn(t, h, Options{})
	c.receive([]byte("boom"), nil)
	eventually(t, "the 1011 close", func() bool { return len(s.closed()) == 1 })
	if s.closed()[0] != CloseInternalError {
		t.Fatalf("closed with %v", s.closed())
	}
	// The worker survived the panic: in-flight accounting is balanced.
	done := make(chan struct{})
	go func() { c.u.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("the panicking frame is still counted in flight")
	}
}

// Shutdown waits for the frames being handled, then writes what they
// queued, then closes with 1001.
func TestConn_ShutdownWaitsForFramesInFlight(t *testing.T) {
	gate := make(chan struct{})
	h := &recorder{fn: func(_ context.Context, c *Conn, f string) {
		<-gate
		c.Reply(frame("reply to " + f))
	}}
	opts := Options{PingInterval: -1, Rate: -1}
	u := NewUpgrader(h, opts)
	s := &fakeSocket{}
	c := u.newConn(context.Background(), s, nil)
	c.receive([]byte("req"), nil)
	done := make(chan error)
	go func() { done <- u.Shutdown(context.Background()) }()
	eventually(t, "draining", func() bool { u.mu.Lock(); defer u.mu.Unlock(); return u.draining })
	c.receive([]byte("during shutdown"), nil) // refused: not handled
	close(gate)
	eventually(t, "the close", func() bool { return len(s.closed()) == 1 })
	c.closed0() // the read loop ends after the close
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := s.written(); !equal(got, []string{"reply to req"}) || s.closed()[0] != CloseGoingAway {
		t.Fatalf("written %v, closed %v", got, s.closed())
	}
}

// An expired user's connection: subscriptions go at once, the close is
// 4401, and frames after the expiry are the anonymous user's.
func TestConn_TokenExpiry(t *testing.T) {
	h := &recorder{}
	c, s := newTestConn(t, h, Options{})
	c.SetUser(&streamapi.User{ID: "u", Expires: time.Now().Add(20 * time.Millisecond)})
	if c.User() == nil {
		t.Fatal("no user")
	}
	eventually(t, "the 4401 close", func() bool { return len(s.closed()) == 1 })
	if s.closed()[0] != CloseTokenExpired || c.User() != nil || h.closes() != 1 {
		t.Fatalf("closed %v, user %v, Closed %d", s.closed(), c.User(), h.closes())
	}
}

// The keep-alive's scan over real connection state: it pings a silent
// connection once, closes it one timeout later unless heard from, and
// leaves a held one alone.
func TestConn_ScanPingsThenCloses(t *testing.T) {
	h := &recorder{}
	u := NewUpgrader(h, Options{PingInterval: 100 * time.Second, PongTimeout: 10 * time.Second, Rate: -1})
	quiet, talker := &fakeSocket{}, &fakeSocket{}
	a := u.newConn(context.Background(), quiet, nil)
	b := u.newConn(context.Background(), talker, nil)
	t.Cleanup(func() { a.closed0(); b.closed0(); _ = u.Shutdown(context.Background()) })
	t0 := nanotime()
	second := int64(time.Second)
	if p, c := u.scan(t0 + 100*second); p != 2 || c != 0 {
		t.Fatalf("first scan: %d pinged, %d closed", p, c)
	}
	if p, c := u.scan(t0 + 101*second); p != 0 || c != 0 {
		t.Fatalf("a scan before the timeout: %d pinged, %d closed", p, c)
	}
	b.lastSeen.Store(t0 + 105*second) // b answers
	a.held.Add(1)                     // a's frames wait on the server
	if p, c := u.scan(t0 + 110*second); p != 0 || c != 0 {
		t.Fatalf("held and answered: %d pinged, %d closed", p, c)
	}
	a.held.Add(-1)
	if p, c := u.scan(t0 + 110*second); p != 0 || c != 1 {
		t.Fatalf("at the timeout: %d pinged, %d closed", p, c)
	}
	eventually(t, "the close", func() bool { return len(quiet.closed()) == 1 })
	if quiet.closed()[0] != ClosePolicy || len(talker.closed()) != 0 {
		t.Fatalf("quiet closed %v, talker %v", quiet.closed(), talker.closed())
	}
	eventually(t, "the pings", func() bool {
		quiet.mu.Lock()
		defer quiet.mu.Unlock()
		return quiet.pings == 1
	})
}
