package main_test

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/streamapi/streamapi/internal/echo"
	"github.com/streamapi/streamapi/internal/testenv"
)

// The command itself, built and run against servers in this process: the
// connections spread over two child processes and two source addresses,
// the idle reading, and fan-out against the echo and the polls app.
func TestCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the command")
	}
	if runtime.GOOS != "linux" {
		t.Skip("uses /proc and the 127.0.0.x source addresses Linux routes to loopback")
	}
	bin := filepath.Join(t.TempDir(), "streamapi-bench")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	p := testenv.PollsServer(t)
	es := httptest.NewServer(echo.New())
	defer es.Close()
	run := func(args ...string) []byte {
		t.Helper()
		out := filepath.Join(t.TempDir(), "out.json")
		cmd := exec.Command(bin, append(args, "--json", out)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, b)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	var storm struct {
		Opened, Errors, Procs int
		ConnsPerSecond        float64 `json:"conns_per_second"`
	}
	b := run("storm", "--url", p.WS, "--conns", "41", "--procs", "2", "--concurrency", "4", "--source-ips", "127.0.0.2,127.0.0.3", "--server-pid", strconv.Itoa(os.Getpid()))
	if err := json.Unmarshal(b, &storm); err != nil || storm.Opened != 41 || storm.Errors != 0 || storm.Procs != 2 || storm.ConnsPerSecond <= 0 {
		t.Fatalf("storm: %+v, %v\n%s", storm, err, b)
	}

	var idle struct {
		Opened       int
		Procs        int
		BytesPerConn float64 `json:"bytes_per_conn"`
		After        struct {
			RSSKiB int64 `json:"rss_kib"`
		}
	}
	b = run("idle", "--url", p.WS, "--conns", "30", "--procs", "2", "--server-pid", strconv.Itoa(os.Getpid()), "--settle", "0s")
	if err := json.Unmarshal(b, &idle); err != nil || idle.Opened != 30 || idle.Procs != 2 || idle.After.RSSKiB <= 0 {
		t.Fatalf("idle: %+v, %v\n%s", idle, err, b)
	}

	var fan []struct {
		Target     string
		Expected   int64
		Lost       int64
		Requests   int64
		Errors     int64
		Duplicates int64
	}
	b = run("fanout", "--target", "echo="+"ws"+strings.TrimPrefix(es.URL, "http")+"/", "--target", "streamapi="+p.WS,
		"--subscribers", "5", "--updates", "3", "--interval", "10ms")
	if err := json.Unmarshal(b, &fan); err != nil || len(fan) != 2 {
		t.Fatalf("fanout: %v\n%s", err, b)
	}
	for _, f := range fan {
		if f.Expected != 15 || f.Lost != 0 || f.Requests != 15 || f.Errors != 0 || f.Duplicates != 0 {
			t.Fatalf("fanout %s: %+v", f.Target, f)
		}
	}
}
