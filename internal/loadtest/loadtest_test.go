package loadtest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/streamapi/streamapi/examples/polls"
	"github.com/streamapi/streamapi/internal/echo"
	"github.com/streamapi/streamapi/internal/loadtest"
	"github.com/streamapi/streamapi/internal/testenv"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"))
}

func wsURL(s *httptest.Server, path string) string {
	return "ws" + strings.TrimPrefix(s.URL, "http") + path
}

// TestRequestReply drives the echo server and a polls server briefly and
// checks the measurements hold together.
func TestRequestReply(t *testing.T) {
	ctx := context.Background()
	es := httptest.NewServer(echo.New())
	defer es.Close()

	p := testenv.PollsServer(t)
	if err := p.App.Questions.Create(ctx, &polls.Question{QuestionText: "q"}); err != nil {
		t.Fatal(err)
	}

	var rs []loadtest.Result
	for _, target := range []struct{ name, url string }{{"echo", wsURL(es, "/")}, {"streamapi", p.WS}} {
		r, err := loadtest.RequestReply(ctx, loadtest.RR{Name: target.name, URL: target.url, Conns: 4, Duration: 300 * time.Millisecond, Stream: "questions", Action: "retrieve", PK: 1})
		if err != nil {
			t.Fatal(err)
		}
		if r.Requests == 0 || r.Errors != 0 || r.PerSecond <= 0 || !(r.P50 <= r.P99 && r.P99 <= r.Max) || r.Max <= 0 {
			t.Fatalf("%s: %+v", target.name, r)
		}
		rs = append(rs, r)
	}
	// A retrieve of a missing object is a 404: counted as errors.
	r, err := loadtest.RequestReply(ctx, loadtest.RR{Name: "missing", URL: p.WS, Conns: 2, Duration: 100 * time.Millisecond, Stream: "questions", Action: "retrieve", PK: 999})
	if err != nil || r.Errors == 0 || r.Requests != 0 {
		t.Fatalf("404s: %+v, %v", r, err)
	}
	var table, js bytes.Buffer
	if err := loadtest.Table(&table, rs); err != nil || !strings.Contains(table.String(), "streamapi") {
		t.Fatalf("table: %v\n%s", err, table.String())
	}
	if err := loadtest.JSON(&js, rs); err != nil || !json.Valid(js.Bytes()) {
		t.Fatalf("json: %v", err)
	}
	if _, err := loadtest.RequestReply(ctx, loadtest.RR{URL: p.WS}); err == nil {
		t.Fatal("a run with no connections was accepted")
	}

	// Fan-out: 20 subscribers, 3 updates: 60 deliveries, none lost.
	f, err := loadtest.RunFanout(ctx, loadtest.Fanout{Name: "streamapi", URL: p.WS, Subscribers: 20, Updates: 3, Interval: 10 * time.Millisecond, Stream: "questions", PK: 1})
	if err != nil {
		t.Fatal(err)
	}
	if f.Expected != 60 || f.Lost != 0 || f.Requests != 60 || f.Errors != 0 || f.Duplicates != 0 || !(f.P50 <= f.P99 && f.P99 <= f.Max) {
		t.Fatalf("fan-out: %+v", f)
	}
	// From the send, every delivery takes at least as long as from the reply.
	if f.SendP99 < f.P99 || f.SendMax < f.Max || f.SendP50 <= 0 {
		t.Fatalf("fan-out latency from the send: %+v", f)
	}
	// The echo server's fan-out: the same deliveries, none lost.
	f, err = loadtest.RunFanout(ctx, loadtest.Fanout{Name: "echo", URL: wsURL(es, "/"), Subscribers: 20, Updates: 3, Interval: 10 * time.Millisecond, Stream: "questions", PK: 1})
	if err != nil {
		t.Fatal(err)
	}
	if f.Expected != 60 || f.Lost != 0 || f.Requests != 60 || f.Errors != 0 || f.UpdatesPerSecond <= 0 {
		t.Fatalf("echo fan-out: %+v", f)
	}
	// Idle and storm: this process serves, so its own RSS grows with the
	// connections; 50 subscribed connections, 8 handshakes at a time, from
	// two source addresses.
	before, err := loadtest.ReadMemory(ctx, os.Getpid(), "")
	if err != nil || before.RSSKiB <= 0 {
		t.Fatalf("memory: %+v, %v", before, err)
	}
	o, err := loadtest.OpenConns(ctx, loadtest.Open{URL: p.WS, Conns: 50, Concurrency: 8, SourceIPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(127, 0, 0, 2)}, Stream: "questions", PK: 1})
	if err != nil || o.Opened != 50 || o.Errors != 0 || len(o.Latency) != 50 {
		t.Fatalf("open: %+v, %v", o, err)
	}
	if n := p.API.Subscriptions(); n < 50 {
		t.Fatalf("the server holds %d subscriptions, want at least 50", n)
	}
	sum := loadtest.Summarize([]*loadtest.Opened{o, o})
	if sum.Opened != 100 || sum.Procs != 2 || sum.ConnsPerSecond <= 0 || !(sum.P50 <= sum.P99 && sum.P99 <= sum.Max) {
		t.Fatalf("summary: %+v", sum)
	}
	o.Close()
	// A server that is not there: every connection fails, counted.
	o, err = loadtest.OpenConns(ctx, loadtest.Open{URL: "ws://127.0.0.1:1/", Conns: 3, Concurrency: 2})
	if err != nil || o.Opened != 0 || o.Errors != 3 || o.FirstErr == "" {
		t.Fatalf("open to nothing: %+v, %v", o, err)
	}
	// This process has used CPU; the runs measured it.
	if c, err := loadtest.CPUTime(0); err != nil || c <= 0 || rs[0].ToolCPU <= 0 {
		t.Fatalf("CPU time %v, %v; tool CPU of the run %v", c, err, rs[0].ToolCPU)
	}
	if _, err := loadtest.CPUTime(1 << 30); err == nil {
		t.Fatal("CPU time of no process succeeded")
	}
	if _, err := loadtest.RSS(-1); err == nil {
		t.Fatal("RSS of no process succeeded")
	}
	// Updates to an object that does not exist: every delivery lost.
	f, err = loadtest.RunFanout(ctx, loadtest.Fanout{URL: p.WS, Subscribers: 2, Updates: 2, Stream: "questions", PK: 999})
	if err != nil || f.Lost != 4 || f.Errors != 2 {
		t.Fatalf("fan-out to a missing object: %+v, %v", f, err)
	}
}
