package e2e_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/streamapi/streamapi/client"
	"github.com/streamapi/streamapi/resource"
	"github.com/streamapi/streamapi/server"
)

// TestKeepalive_RealSockets: with 1 s ping intervals and a 400 ms pong
// timeout (the defaults' ratio, 25 times faster), 20 idle clients that
// answer pings (the Go client's read loop does) stay connected through
// 30 intervals; a client that never reads, so never answers, is closed
// with 1008 between PingInterval+PongTimeout and one scan (200 ms) later
// than that after it was last heard, plus the machine's scheduling slack,
// three times. (Before the keep-alive was fixed, the healthy clients were
// closed within two intervals.)
func TestKeepalive_RealSockets(t *testing.T) {
	t.Parallel()
	const interval, timeout = time.Second, 400 * time.Millisecond
	e := start(t, func(s *server.Config, _ *resource.Config[Note]) {
		s.Conn.PingInterval, s.Conn.PongTimeout = interval, timeout
	})
	var healthy []*client.Client
	for i := 0; i < 20; i++ {
		c := e.dial("")
		if _, err := c.Subscribe(tctx(t), "questions", "create", nil); err != nil {
			t.Fatal(err)
		}
		healthy = append(healthy, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var silentClose time.Duration
	for round := 0; round < 3; round++ {
		// A client that completes the handshake and then never reads: it
		// cannot answer a ping.
		silent, _, err := websocket.Dial(ctx, e.ws, nil)
		if err != nil {
			t.Fatal(err)
		}
		heard := time.Now()
		eventually := time.Now().Add(5 * time.Second)
		// The server counts a socket once its handshake's answer is
		// written, so the dial can return before it is counted: wait for
		// it, or the wait below ends at once, and the Read after it,
		// which answers pings, keeps the client alive.
		for e.srv.Connections() <= len(healthy) {
			if time.Now().After(eventually) {
				t.Fatal("the silent client is not counted after 5 s")
			}
			time.Sleep(time.Millisecond)
		}
		for e.srv.Connections() > len(healthy) {
			if time.Now().After(eventually) {
				t.Fatal("the silent client is still connected after 5 s")
			}
			time.Sleep(5 * time.Millisecond)
		}
		silentClose = time.Since(heard)
		// From PingInterval+PongTimeout, less half a scan for the
		// ticker's jitter, to one scan more, plus 250 ms of scheduling
		// slack on a loaded machine.
		if lo, hi := interval+timeout-100*time.Millisecond, interval+timeout+200*time.Millisecond; silentClose < lo || silentClose > hi+250*time.Millisecond {
			t.Errorf("round %d: the silent client was closed %v after it was last heard (want %v to %v, plus slack)", round, silentClose, lo, hi)
		}
		_, _, err = silent.Read(ctx) // the pings, then the close frame
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || ce.Reason != "no pong within the timeout" {
			t.Errorf("round %d: the silent client read %v, want 1008 \"no pong within the timeout\"", round, err)
		}
		silent.CloseNow()
	}
	// The rest of 30 intervals, idle.
	time.Sleep(30*interval - 3*(interval+timeout))
	for i, c := range healthy {
		select {
		case <-c.Done():
			t.Fatalf("healthy client %d closed: %v (%v)", i, c.CloseStatus(), c.Err())
		default:
		}
		if _, err := c.Request(tctx(t), "questions", client.Payload{Action: "list"}); err != nil {
			t.Fatalf("healthy client %d after 30 intervals: %v", i, err)
		}
	}
	if n := e.srv.Connections(); n != len(healthy) {
		t.Fatalf("%d connections, want the %d healthy ones", n, len(healthy))
	}
	t.Logf("the silent client was closed %v after it was last heard (last round)", silentClose)
}
