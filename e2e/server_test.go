package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/streamapi/streamapi/client"
	"github.com/streamapi/streamapi/resource"
	"github.com/streamapi/streamapi/server"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServer_DebuggerAndHealth(t *testing.T) {
	e := start(t)
	if code, body := get(t, e.base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("healthz %d %q", code, body)
	}
	code, body := get(t, e.base+"/channels-api/")
	if code != 200 || !strings.Contains(body, "window.ws") || !strings.Contains(body, `"questions"`) {
		t.Errorf("debugger page %d, %d bytes", code, len(body))
	}
	e = start(t, func(s *server.Config, _ *resource.Config[Note]) { s.Debug = false })
	if code, _ := get(t, e.base+"/channels-api/"); code != 404 {
		t.Errorf("debugger page with Debug off: %d", code)
	}
}

func TestServer_ShutdownClosesWith1001(t *testing.T) {
	e := start(t)
	c := e.dial("")
	sub, err := c.Subscribe(tctx(t), "questions", "create", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, c)
	if got := c.CloseStatus(); got != websocket.StatusGoingAway {
		t.Fatalf("close status %v (%v), want 1001", got, c.Err())
	}
	if _, ok := <-sub.C; ok {
		t.Error("subscription still open")
	}
	if code, _ := get(t, e.base+"/healthz"); code != 503 {
		t.Errorf("healthz while shut down: %d", code)
	}
	// New handshakes are refused.
	if _, _, err := websocket.Dial(ctx, e.ws, nil); err == nil {
		t.Error("handshake accepted after shutdown")
	}
}

// The server answers pings with pongs that echo the payload (RFC 6455
// §5.5.3), which is what coder/websocket's Ping waits for.
func TestServer_PingPong(t *testing.T) {
	e := start(t)
	ctx := tctx(t)
	c, _, err := websocket.Dial(ctx, e.ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.CloseRead(ctx) // a reader must run for pongs to be seen
	for i := 0; i < 3; i++ {
		if err := c.Ping(ctx); err != nil {
			t.Fatalf("ping %d: %v", i, err)
		}
	}
}

// The server pings silent connections: a live client (one that reads, so
// its library answers pings) stays connected; a dead one (never answers)
// is closed after PingInterval+PongTimeout.
func TestServer_KeepAlive(t *testing.T) {
	e := start(t, func(s *server.Config, _ *resource.Config[Note]) {
		s.Conn.PingInterval = 100 * time.Millisecond
		s.Conn.PongTimeout = 100 * time.Millisecond
	})
	ctx := tctx(t)
	live, _, err := websocket.Dial(ctx, e.ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer live.CloseNow()
	live.CloseRead(ctx) // reads, and so answers pings
	dead, _, err := websocket.Dial(ctx, e.ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dead.CloseNow() // never reads: never answers a ping
	// A dial can return before the server counts the socket.
	eventually(t, "both peers counted", func() bool { return e.srv.Connections() == 2 })
	eventually(t, "the dead peer to be closed", func() bool { return e.srv.Connections() == 1 })
	// The live one outlives many intervals.
	time.Sleep(600 * time.Millisecond)
	if n := e.srv.Connections(); n != 1 {
		t.Fatalf("%d connections, want the live one", n)
	}
	if err := live.Ping(ctx); err != nil {
		t.Fatalf("live connection: %v", err)
	}
}

// One client that stops reading, among many that read: it is closed with
// 1008 once its queue fills, while every other client keeps receiving
// every event, in order, and stays connected.
// The queue's bound is in frames, or in bytes.
func TestServer_SlowConsumerIsClosed(t *testing.T) {
	t.Run("frames", func(t *testing.T) {
		slowConsumer(t, func(c *server.ConnLimits) { c.MaxQueue = 64 })
	})
	t.Run("bytes", func(t *testing.T) {
		slowConsumer(t, func(c *server.ConnLimits) { c.MaxQueue, c.MaxQueueBytes = 1<<20, 24<<10 })
	})
}

func slowConsumer(t *testing.T, limits func(*server.ConnLimits)) {
	e := start(t, func(s *server.Config, _ *resource.Config[Note]) { limits(&s.Conn) })
	ctx := tctx(t)
	// The stalled client: a raw socket with a modest receive buffer (a tiny
	// one would make it read too slowly once it reads again) that
	// subscribes to one object under many request_ids (one event frame each
	// per change) and never reads.
	slow, _, err := websocket.Dial(ctx, e.ws, &websocket.DialOptions{HTTPClient: stalledHTTP()})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.CloseNow()
	w := e.dial("")
	id := do(t, w, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "q"}}).id(t)
	const subs = 50 // their replies fit in the queue even if none is written
	for i := 0; i < subs; i++ {
		frame := fmt.Sprintf(`{"stream":"questions","payload":{"action":"subscribe_instance","pk":%d,"request_id":%d}}`, id, i)
		if err := slow.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
			t.Fatal(err)
		}
	}
	// The many: clients that read everything, each in its own goroutine.
	const fast = 100
	got := make([][]string, fast)
	counts := make([]atomic.Int64, fast)
	var wg sync.WaitGroup
	clients := make([]*client.Client, fast)
	for k := range fast {
		clients[k] = e.dial("")
		sub, err := clients[k].Subscribe(ctx, "questions", "update", nil)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ev := range sub.C {
				var q struct {
					Text string `json:"question_text"`
				}
				_ = json.Unmarshal(ev.Data, &q)
				got[k] = append(got[k], q.Text)
				counts[k].Add(1)
			}
		}()
	}
	// Every subscribe frame read, so the close leaves no unread input (which
	// would make the kernel answer with a reset instead of the close frame).
	eventually(t, "all subscribed", func() bool { return e.srv.Subscriptions() == subs+fast })
	big := strings.Repeat("x", 200)
	var sent []string
	for i := 0; e.srv.Subscribers() == fast+1; i++ {
		if i == 2000 {
			t.Fatal("the slow consumer was not dropped after 2000 writes")
		}
		text := fmt.Sprintf("%d %s", i, big[:100+i%90]) // under the 200 the field allows
		if rep := do(t, w, "questions", client.Payload{Action: "patch", PK: id, Data: map[string]any{"question_text": text}}); rep.Status != 200 {
			t.Fatalf("write %d: %d %s", i, rep.Status, rep.Errors)
		}
		sent = append(sent, text)
	}
	// The one dropped is the stalled client: every reader is still there.
	if n := e.srv.Subscribers(); n != fast {
		t.Fatalf("%d subscribed connections after the drop, want the %d readers", n, fast)
	}
	for k, c := range clients {
		if err := c.Err(); err != nil {
			t.Fatalf("reader %d was disconnected: %v", k, err)
		}
	}
	// A few more writes after the drop: the others must get them too.
	for i := range 5 {
		text := fmt.Sprintf("after %d", i)
		do(t, w, "questions", client.Payload{Action: "patch", PK: id, Data: map[string]any{"question_text": text}})
		sent = append(sent, text)
	}
	eventually(t, "every fast client to receive every event", func() bool {
		for _, c := range clients {
			if c.Dropped() != 0 {
				t.Fatalf("a fast client's own buffer dropped %d events", c.Dropped())
			}
		}
		for k := range counts {
			if counts[k].Load() < int64(len(sent)) {
				return false
			}
		}
		return true
	})
	for _, c := range clients {
		c.Close()
	}
	wg.Wait()
	for k := range got {
		if !slices.Equal(got[k], sent) {
			t.Fatalf("fast client %d received %d events, not the %d sent in order", k, len(got[k]), len(sent))
		}
	}
	t.Logf("%d fast clients received all %d events in order", fast, len(sent))
	// Reading the stalled socket now ends with the policy close.
	rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	frames, bytes := 0, 0
	for {
		_, b, err := slow.Read(rctx)
		if err != nil {
			if got := websocket.CloseStatus(err); got != websocket.StatusPolicyViolation {
				t.Fatalf("slow client ended with %v (%v) after %d frames, %d bytes, want 1008", got, err, frames, bytes)
			}
			break
		}
		frames++
		bytes += len(b)
	}
	t.Logf("the slow client read %d frames (%d bytes), then the close frame", frames, bytes)
	eventually(t, "the server to forget the slow consumer", func() bool { return e.srv.Connections() == 1 })
}

// TestNode_DCRFClient runs the unmodified npm dcrf-client against a real
// server. It needs Node and `npm ci` in e2e/node; .ci/run sets
// STREAMAPI_TEST_NODE=1 after installing them.
func TestNode_DCRFClient(t *testing.T) {
	if os.Getenv("STREAMAPI_TEST_NODE") == "" {
		t.Skip("STREAMAPI_TEST_NODE is unset: skipping the dcrf-client test (run `npm ci` in e2e/node and set it; .ci/run does)")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("STREAMAPI_TEST_NODE is set but node is not on PATH: %v", err)
	}
	if _, err := os.Stat(filepath.Join("node", "node_modules", "dcrf-client")); err != nil {
		t.Fatalf("dcrf-client is not installed: run `npm ci` in e2e/node (%v)", err)
	}
	e := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "dcrf.test.js", e.ws)
	cmd.Dir = "node"
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dcrf-client test failed: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "# fail 0") || strings.Contains(string(out), "# pass 0") {
		t.Fatalf("unexpected output:\n%s", out)
	}
	t.Logf("dcrf-client: %s", lastLines(string(out), 9))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestBrowser_Debugger opens the debugger page in headless Chromium
// (e2e/node/debugger.test.js, playwright-core): window.ws is open, frames
// sent from the console and from the form are logged with their replies and
// events. STREAMAPI_TEST_BROWSER names the chromium binary; .ci/run installs
// Debian's chromium and sets it.
func TestBrowser_Debugger(t *testing.T) {
	chromium := os.Getenv("STREAMAPI_TEST_BROWSER")
	if chromium == "" {
		t.Skip("STREAMAPI_TEST_BROWSER is unset: skipping the browser test of the debugger page (set it to a chromium binary after `npm ci` in e2e/node; .ci/run does)")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not on PATH: %v", err)
	}
	e := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "debugger.test.js", e.base+"/channels-api/", chromium)
	cmd.Dir = "node"
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), " 0 failed") {
		t.Fatalf("debugger page test: %v\n%s", err, out)
	}
	t.Logf("debugger page: %s", lastLines(string(out), 1))
}

// stalledHTTP is an HTTP client for a stalled WebSocket client: its
// sockets have a modest receive buffer (64 KiB).
func stalledHTTP() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(64 << 10)
		}
		return conn, err
	}}}
}
