package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/streamapi/streamapi/client"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"))
}

func TestParseFlags_DefaultsAndEnv(t *testing.T) {
	m := NewMain()
	if err := m.ParseFlags(nil); err != nil {
		t.Fatal(err)
	}
	f := m.Flags
	if f.Addr != "127.0.0.1:8000" || f.DB != "sqlite:./streamapi.db" || f.PageSize != 25 || !f.Debug || f.Broker != "memory" {
		t.Fatalf("defaults %+v", f)
	}
	t.Setenv("STREAMAPI_ADDR", "127.0.0.1:9")
	t.Setenv("STREAMAPI_PAGE_SIZE", "7")
	t.Setenv("STREAMAPI_DEBUG", "false")
	m = NewMain()
	if err := m.ParseFlags([]string{"--db", "sqlite:/tmp/x.db"}); err != nil {
		t.Fatal(err)
	}
	if f := m.Flags; f.Addr != "127.0.0.1:9" || f.PageSize != 7 || f.Debug || f.DB != "sqlite:/tmp/x.db" {
		t.Fatalf("env and flags %+v", f)
	}
	m = NewMain()
	m.Stderr = io.Discard
	if err := m.ParseFlags([]string{"--page-size", "many"}); err == nil {
		t.Fatal("accepted --page-size many")
	}
}

// --app picks the example (default polls, STREAMAPI_APP too); boards
// needs --jwt-secret.
func TestParseFlags_App(t *testing.T) {
	m := NewMain()
	if err := m.ParseFlags(nil); err != nil || m.Flags.App != "polls" {
		t.Fatalf("default app %q, %v", m.Flags.App, err)
	}
	m = NewMain()
	m.Stderr = io.Discard
	if err := m.ParseFlags([]string{"--app", "chess"}); err == nil || !strings.Contains(err.Error(), `--app must be one of "polls","boards"`) {
		t.Fatalf("--app chess: %v", err)
	}
	m = NewMain()
	if err := m.ParseFlags([]string{"--app", "boards"}); err == nil || err.Error() != "--app boards needs --jwt-secret: every boards action needs a user" {
		t.Fatalf("--app boards without a secret: %v", err)
	}
	t.Setenv("STREAMAPI_APP", "boards")
	t.Setenv("STREAMAPI_JWT_SECRET", strings.Repeat("s", 32))
	m = NewMain()
	if err := m.ParseFlags(nil); err != nil || m.Flags.App != "boards" {
		t.Fatalf("STREAMAPI_APP=boards: %q, %v", m.Flags.App, err)
	}
}

// --app boards serves the boards example; --debug prints a token for
// each of its two demo users, alice and bob, which the server accepts.
func TestRun_BoardsApp(t *testing.T) {
	m := NewMain()
	var logs syncBuffer
	m.Stderr = &logs
	if err := m.ParseFlags([]string{"--app", "boards", "--jwt-secret", strings.Repeat("k", 32), "--addr", "127.0.0.1:0", "--db", "sqlite:" + filepath.Join(t.TempDir(), "b.db")}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	defer m.Close(ctx)
	tokens := map[string]string{}
	for _, line := range strings.Split(logs.String(), "\n") {
		for _, user := range []string{"alice", "bob"} {
			if strings.Contains(line, "user="+user+" token=") {
				tokens[user] = line[strings.LastIndex(line, " token=")+len(" token="):]
			}
		}
	}
	if len(tokens) != 2 {
		t.Fatalf("tokens for %v in:\n%s", tokens, logs.String())
	}
	for user, tok := range tokens {
		req, _ := http.NewRequest("POST", "http://"+m.Addr()+"/api/boards/", strings.NewReader(`{"name":"Plans"}`))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 201 || !strings.Contains(string(body), `"owner":"`+user+`"`) {
			t.Fatalf("%s creates a board: %d %s", user, res.StatusCode, body)
		}
	}
	res, err := http.Get("http://" + m.Addr() + "/api/boards/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 && res.StatusCode != 403 {
		t.Fatalf("anonymous list of boards: %d", res.StatusCode)
	}
}

func TestRun_UnsupportedSchemes(t *testing.T) {
	for _, tc := range []struct{ db, broker, want string }{
		{"mysql://x", "memory", `unsupported database URL scheme: "mysql"`},
		{"sqlite:" + filepath.Join(t.TempDir(), "a.db"), "kafka://x", `unsupported broker URL scheme: "kafka"`},
	} {
		m := NewMain()
		m.Stderr = io.Discard
		m.Flags = Flags{Addr: "127.0.0.1:0", DB: tc.db, Broker: tc.broker, LogLevel: "error"}
		err := m.Run(context.Background())
		m.Close(context.Background())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Run(%s, %s) = %v, want %q", tc.db, tc.broker, err, tc.want)
		}
	}
}

// TestMain_ServesThePollsApp runs Main in process on a free port.
func TestMain_ServesThePollsApp(t *testing.T) {
	dir := t.TempDir()
	m := NewMain()
	var logs bytes.Buffer
	m.Stderr = &logs
	m.Flags = Flags{Addr: "127.0.0.1:0", DB: "sqlite:" + filepath.Join(dir, "s.db"), Broker: "memory", PageSize: 25, Debug: true, MaxFrameBytes: 1 << 20, LogLevel: "info"}
	ctx := context.Background()
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	base := "http://" + m.Addr()
	for path, want := range map[string]int{"/healthz": 200, "/channels-api/": 200, "/nope": 404} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	c, err := client.Dial(ctx, "ws://"+m.Addr()+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rep, err := c.Request(ctx, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "Hi?"}})
	if err != nil || rep.Status != 201 {
		t.Fatalf("create: %v %+v", err, rep)
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := m.Close(sctx); err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	if got := c.CloseStatus(); got != websocket.StatusGoingAway {
		t.Errorf("close status %v, want 1001", got)
	}
	if !strings.Contains(logs.String(), "debugger page") {
		t.Errorf("logs lack the debugger URL:\n%s", logs.String())
	}
	// The database was created and migrated: a second run finds the row.
	m2 := NewMain()
	m2.Stderr = io.Discard
	m2.Flags = m.Flags
	if err := m2.Run(ctx); err != nil {
		t.Fatal(err)
	}
	defer m2.Close(ctx)
	c2, err := client.Dial(ctx, "ws://"+m2.Addr()+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	rep, err = c2.Request(ctx, "questions", client.Payload{Action: "retrieve", PK: 1})
	if err != nil || rep.Status != 200 {
		t.Fatalf("retrieve after restart: %v %+v", err, rep)
	}
}

// TestBinary_SIGTERM builds the command, runs it with no arguments in a
// temporary directory, and stops it with SIGTERM: the socket closes with
// 1001 and the process exits 0.
func TestBinary_SIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "streamapi")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		cmd := exec.Command(bin, "--addr", "127.0.0.1:0")
		cmd.Dir = dir
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		addr := waitForAddr(t, stderr)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := client.Dial(ctx, "ws://"+addr+"/ws", nil)
		if err != nil {
			cancel()
			cmd.Process.Kill()
			t.Fatal(err)
		}
		if _, err := c.Subscribe(ctx, "questions", "create", nil); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		select {
		case <-c.Done():
		case <-ctx.Done():
			t.Fatalf("%v: socket still open", sig)
		}
		if got := c.CloseStatus(); got != websocket.StatusGoingAway {
			t.Errorf("%v: close status %v, want 1001", sig, got)
		}
		go io.Copy(io.Discard, stderr)
		if err := cmd.Wait(); err != nil {
			t.Errorf("%v: exit %v", sig, err)
		}
		cancel()
	}
	if _, err := os.Stat(filepath.Join(dir, "streamapi.db")); err != nil {
		t.Errorf("no ./streamapi.db: %v", err)
	}
}

var servingRE = regexp.MustCompile(`addr=http://(\S+)`)

// waitForAddr reads the log until the "serving" line gives the address.
func waitForAddr(t *testing.T, r io.Reader) string {
	t.Helper()
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if m := servingRE.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
				return
			}
		}
		close(found)
	}()
	select {
	case addr, ok := <-found:
		if !ok {
			t.Fatal("the command exited before serving")
		}
		return addr
	case <-time.After(30 * time.Second):
		t.Fatal("the command did not log its address within 30 s")
	}
	return ""
}

// TestParseFlags_RefusesSettingsThatCannotBeMeant: each refused value is
// named by its flag; the defaults pass.
func TestParseFlags_RefusesSettingsThatCannotBeMeant(t *testing.T) {
	for _, arg := range []string{
		"--page-size=0", "--page-size=-3", "--burst=-1", "--burst=0", "--max-queue=0",
		"--change-poll=0s", "--allowed-origins=example.com", "--allowed-origins=https://a.example/path",
		"--cors-origins=ftp://x", "--ping-interval=0s", "--pong-timeout=0s",
		"--max-subscriptions=0", "--max-request-id=-2", "--request-timeout=0s",
		"--max-search-terms=0", "--read-timeout=0s", "--max-header-bytes=0", "--max-pending=0",
		"--rate=0", "--max-queue-bytes=0", "--max-frame-bytes=0", "--change-retention=0s", "--max-burst=0",
	} {
		m := NewMain()
		m.Stderr = io.Discard
		err := m.ParseFlags([]string{arg})
		flag, _, _ := strings.Cut(arg, "=")
		if err == nil || !strings.HasPrefix(err.Error(), flag+" must") && !strings.HasPrefix(err.Error(), flag+": ") {
			t.Errorf("%s: %v, want an error naming %s", arg, err, flag)
		}
	}
	for _, args := range [][]string{
		nil, {"--allowed-origins=https://app.example.com:8443,*,null"}, {"--ping-interval=-1s"},
		{"--max-subscriptions=-1"}, {"--rate=-1"}, {"--request-timeout=-1s"},
	} {
		m := NewMain()
		if err := m.ParseFlags(args); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
}

// buildBinary builds the command once per test that needs it.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "streamapi")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// TestBinary_BrokerDown: a broker that cannot be reached at start-up (one
// Redis and one NATS URL where nothing listens) ends the command with exit
// 1 and a message naming the broker, not a panic.
func TestBinary_BrokerDown(t *testing.T) {
	bin := buildBinary(t)
	for _, broker := range []string{"redis://127.0.0.1:1", "nats://127.0.0.1:1"} {
		cmd := exec.Command(bin, "--addr", "127.0.0.1:0", "--db", "sqlite:"+filepath.Join(t.TempDir(), "x.db"), "--broker", broker)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Errorf("%s: %v, want exit 1\n%s", broker, err, stderr.String())
		}
		out := stderr.String()
		if strings.Contains(out, "panic") || !strings.Contains(out, "broker "+broker) {
			t.Errorf("%s: stderr does not name the broker, or panics:\n%s", broker, out)
		}
	}
}

// runMain runs Main in process on a free loopback port with the defaults
// ParseFlags gives, changed by args.
func runMain(t *testing.T, args ...string) *Main {
	t.Helper()
	m := NewMain()
	m.Stderr = io.Discard
	if err := m.ParseFlags(append([]string{"--addr=127.0.0.1:0", "--db=sqlite:" + filepath.Join(t.TempDir(), "m.db"), "--log-level=error"}, args...)); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		m.Close(ctx)
	})
	return m
}

// TestHosts_DNSRebinding: bound to a loopback address, the server refuses
// requests whose Host is another name (a page that rebound its own name to
// 127.0.0.1, sending its own origin) on the WebSocket, REST and the
// debugger, and serves loopback names; --allowed-hosts opens others.
func TestHosts_DNSRebinding(t *testing.T) {
	m := runMain(t)
	status := func(addr, host, path string) int {
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		req.Host = host
		req.Header.Set("Origin", "http://"+host)
		if path == "/ws" {
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
			req.Header.Set("Sec-WebSocket-Version", "13")
			req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	_, port, _ := strings.Cut(m.Addr(), ":")
	for _, path := range []string{"/ws", "/api/questions/", "/channels-api/", "/healthz"} {
		if st := status(m.Addr(), "rebind.evil.example:"+port, path); st != 400 {
			t.Errorf("%s with a foreign Host: %d, want 400", path, st)
		}
		for _, host := range []string{"localhost:" + port, "127.0.0.1:" + port, "[::1]:" + port, "app.localhost:" + port} {
			want := 200
			if path == "/ws" {
				want = 101
			}
			if st := status(m.Addr(), host, path); st != want {
				t.Errorf("%s with Host %s: %d, want %d", path, host, st, want)
			}
		}
	}
	open := runMain(t, "--allowed-hosts=rebind.evil.example")
	_, port, _ = strings.Cut(open.Addr(), ":")
	if st := status(open.Addr(), "rebind.evil.example:"+port, "/api/questions/"); st != 200 {
		t.Errorf("a listed host: %d", st)
	}
}

// TestHTTP_Timeouts: a request whose body trickles in is cut at
// --read-timeout, an idle keep-alive connection at --idle-timeout, and
// /healthz answers while 200 such requests are held; a WebSocket outlives
// both timeouts.
func TestHTTP_Timeouts(t *testing.T) {
	m := runMain(t, "--read-timeout=1s", "--write-timeout=1s", "--idle-timeout=1s")
	ctx := context.Background()
	ws, err := client.Dial(ctx, "ws://"+m.Addr()+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	// 200 slow POSTs: one body byte every 200 ms of a 1000-byte body.
	var conns []net.Conn
	for i := 0; i < 200; i++ {
		c, err := net.Dial("tcp", m.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "POST /api/questions/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
	}
	start := time.Now()
	closed := make(chan time.Duration, len(conns))
	for _, c := range conns {
		go func() {
			defer c.Close()
			buf := make([]byte, 512)
			for {
				c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				if _, err := c.Read(buf); err != nil {
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						if time.Since(start) > 10*time.Second {
							closed <- -1
							return
						}
						c.Write([]byte(" ")) // one more body byte
						continue
					}
					closed <- time.Since(start)
					return
				}
			}
		}()
	}
	res, err := http.Get("http://" + m.Addr() + "/healthz")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("/healthz while the slow requests are held: %v %v", res, err)
	}
	res.Body.Close()
	var slowest time.Duration
	for range conns {
		d := <-closed
		if d < 0 {
			t.Fatal("a slow request was still held after 10 s")
		}
		slowest = max(slowest, d)
	}
	t.Logf("200 trickling requests cut within %v", slowest.Round(time.Millisecond))
	// An idle keep-alive connection is closed after --idle-timeout.
	c, err := net.Dial("tcp", m.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	idleStart := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("the idle connection was not closed: %v", err)
	}
	if d := time.Since(idleStart); d > 5*time.Second {
		t.Errorf("the idle connection closed after %v", d)
	}
	// The WebSocket, idle through all of it, still works.
	if rep, err := ws.Request(ctx, "questions", client.Payload{Action: "list"}); err != nil || rep.Status != 200 {
		t.Fatalf("the WebSocket after the HTTP timeouts: %v %v", rep, err)
	}
}

// syncBuffer is a bytes.Buffer safe for the logger and the test at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
