package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
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
