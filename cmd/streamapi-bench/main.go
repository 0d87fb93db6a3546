// Command streamapi-bench measures servers that speak the streamapi
// protocol, and serves the bare echo server they are compared with.
//
//	streamapi-bench echo --addr 127.0.0.1:9001
//	streamapi-bench soak --url ws://127.0.0.1:8000/ws --url ws://127.0.0.1:8001/ws --duration 10m
//	streamapi-bench rr --target streamapi=ws://127.0.0.1:8000/ws --target echo=ws://127.0.0.1:9001/ --conns 64 --duration 10s --action retrieve
//
// rr runs request/reply against each target in turn, in the same run, and
// prints a table (and JSON with --json FILE). docs/performance.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/streamapi/streamapi/client"
	"github.com/streamapi/streamapi/internal/echo"
	"github.com/streamapi/streamapi/internal/loadtest"
)

type cli struct {
	Echo   echoCmd   `cmd:"" help:"Serve the bare echo server (same WebSocket library, no store)."`
	RR     rrCmd     `cmd:"" name:"rr" help:"Request/reply: N connections, one request in flight each."`
	Fanout fanoutCmd `cmd:"" help:"Fan-out: S subscribers of one object, one writer; latency from each write's reply to each delivery."`
	Idle   idleCmd   `cmd:"" help:"Idle: N subscribed connections held open; the server's RSS per connection, from /proc."`
	Storm  stormCmd  `cmd:"" help:"Connect storm: N connections opened (and subscribed) with many handshakes in flight; connections per second."`
	Soak   soakCmd   `cmd:"" help:"Soak: writers, readers, resuming subscribers of every kind and idle connections against the polls app on one or more nodes; checks every acknowledged write, every event once and in order, no healthy client closed. Exits 1 on any fault."`
	Hold   holdCmd   `cmd:"" hidden:"" help:"(The child process of --procs.)"`
}

// connFlags are how idle and storm open their connections.
type connFlags struct {
	URL       string   `required:"" help:"WebSocket URL of a streamapi server."`
	Conns     int      `default:"1000" help:"Connections to open, in all."`
	Procs     int      `default:"1" help:"Load-tool processes to spread the connections over (each process may hold at most the open-file limit, here 20,000)."`
	SourceIPs []string `name:"source-ips" help:"Local addresses to open connections from, in turn (e.g. 127.0.0.1,127.0.0.2): each address has its own ephemeral ports toward the server."`
	Subscribe bool     `default:"true" negatable:"" help:"Subscribe each connection to updates of one object (--no-subscribe: bare connections)."`
	Stream    string   `default:"questions" help:"Stream to address."`
	ServerPID int      `name:"server-pid" help:"The server's process id, to read its RSS and CPU time."`
	GCURL     string   `name:"gc-url" help:"URL to POST to force a GC in the server before reading its RSS: http://PPROF_ADDR/debug/gc of cmd/streamapi --pprof-addr."`
	JSON      string   `name:"json" help:"Also write the result as JSON to this file."`
}

type idleCmd struct {
	connFlags
	Concurrency int           `default:"1" help:"Handshakes in flight at once."`
	Settle      time.Duration `default:"5s" help:"Wait after the last connection before reading the RSS."`
}

type stormCmd struct {
	connFlags
	Concurrency int           `default:"64" help:"Handshakes in flight at once, per process."`
	Hold        time.Duration `default:"0s" help:"Keep the connections open this long after the storm."`
}

// idleResult is what idle reports.
type idleResult struct {
	loadtest.ConnectResult
	Before       loadtest.Memory `json:"before"`
	After        loadtest.Memory `json:"after"`
	BytesPerConn float64         `json:"bytes_per_conn"`
}

func (c *idleCmd) Run(ctx context.Context) error {
	if c.ServerPID == 0 {
		return errors.New("idle needs --server-pid")
	}
	before, err := loadtest.ReadMemory(ctx, c.ServerPID, c.GCURL)
	if err != nil {
		return err
	}
	runs, closeAll, err := c.open(ctx, c.Concurrency, func() {})
	if err != nil {
		return err
	}
	defer closeAll()
	r := idleResult{ConnectResult: loadtest.Summarize(runs), Before: before}
	select {
	case <-time.After(c.Settle):
	case <-ctx.Done():
		return ctx.Err()
	}
	if r.After, err = loadtest.ReadMemory(ctx, c.ServerPID, c.GCURL); err != nil {
		return err
	}
	if r.Opened > 0 {
		r.BytesPerConn = float64(r.After.RSSKiB-r.Before.RSSKiB) * 1024 / float64(r.Opened)
	}
	gc := "without a forced GC"
	if c.GCURL != "" {
		gc = "each after a forced GC"
	}
	fmt.Printf("idle: %d connections (%d failed%s) from %d process(es) in %.1f s; server RSS %d KiB -> %d KiB (%s): %.0f bytes per connection\n",
		r.Opened, r.Errors, firstErr(r.FirstErr), r.Procs, r.Elapsed.Seconds(), r.Before.RSSKiB, r.After.RSSKiB, gc, r.BytesPerConn)
	if r.After.GC != nil {
		fmt.Printf("server after GC: heap in use %d KiB, stacks %d KiB, goroutines %d\n", r.After.GC["heap_inuse"]>>10, r.After.GC["stack_inuse"]>>10, r.After.GC["goroutines"])
	}
	return writeJSON(c.JSON, r)
}

func (c *stormCmd) Run(ctx context.Context) error {
	var cpu0 time.Duration
	runs, closeAll, err := c.open(ctx, c.Concurrency, func() {
		if c.ServerPID > 0 {
			cpu0, _ = loadtest.CPUTime(c.ServerPID)
		}
	})
	if err != nil {
		return err
	}
	defer closeAll()
	r := loadtest.Summarize(runs)
	what := "handshake"
	if c.Subscribe {
		what = "handshake+subscribe"
	}
	fmt.Printf("storm: %d connections opened (%d failed%s) by %d process(es), %d handshakes in flight each, in %.2f s: %.0f/s; %s p50 %s p99 %s max %s\n",
		r.Opened, r.Errors, firstErr(r.FirstErr), r.Procs, c.Concurrency, r.Elapsed.Seconds(), r.ConnsPerSecond, what,
		r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.Max.Round(time.Microsecond))
	if c.ServerPID > 0 {
		if cpu1, err := loadtest.CPUTime(c.ServerPID); err == nil {
			fmt.Printf("server CPU during the storm: %.2f s (%.2f cores)\n", (cpu1 - cpu0).Seconds(), (cpu1-cpu0).Seconds()/r.Elapsed.Seconds())
		}
	}
	if c.Hold > 0 {
		select {
		case <-time.After(c.Hold):
		case <-ctx.Done():
		}
	}
	return writeJSON(c.JSON, r)
}

func firstErr(s string) string {
	if s == "" {
		return ""
	}
	return "; first: " + s
}

// open opens the connections in this process, or spreads them over
// --procs child processes ("hold"), each of which reports what it opened
// and keeps its connections until closeAll. started is called just before
// the first connection opens.
func (f *connFlags) open(ctx context.Context, concurrency int, started func()) (runs []*loadtest.Opened, closeAll func(), err error) {
	var pk any
	if f.Subscribe {
		if pk, err = seed(ctx, f.URL, f.Stream); err != nil {
			return nil, nil, err
		}
	}
	ips, err := parseIPs(f.SourceIPs)
	if err != nil {
		return nil, nil, err
	}
	started()
	if f.Procs <= 1 {
		o, err := loadtest.OpenConns(ctx, loadtest.Open{URL: f.URL, Conns: f.Conns, Concurrency: concurrency, SourceIPs: ips, Stream: f.Stream, PK: pk})
		if err != nil {
			return nil, nil, err
		}
		return []*loadtest.Opened{o}, o.Close, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	pkJSON, _ := json.Marshal(pk)
	type child struct {
		cmd   *exec.Cmd
		stdin io.Closer
	}
	var children []child
	closeAll = func() {
		for _, ch := range children {
			ch.stdin.Close() // the child closes its connections and exits
		}
		for _, ch := range children {
			_ = ch.cmd.Wait()
		}
	}
	outs := make([]io.Reader, 0, f.Procs)
	for i := 0; i < f.Procs; i++ {
		n := f.Conns / f.Procs
		if i < f.Conns%f.Procs {
			n++
		}
		args := []string{"hold", "--url", f.URL, "--conns", strconv.Itoa(n), "--concurrency", strconv.Itoa(concurrency), "--stream", f.Stream, "--pk", string(pkJSON)}
		if len(f.SourceIPs) > 0 {
			// Each child starts at another address.
			rot := append(slices.Clone(f.SourceIPs[i%len(f.SourceIPs):]), f.SourceIPs[:i%len(f.SourceIPs)]...)
			args = append(args, "--source-ips", strings.Join(rot, ","))
		}
		cmd := exec.CommandContext(ctx, exe, args...)
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		if err := cmd.Start(); err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("start load process %d: %w", i+1, err)
		}
		children = append(children, child{cmd, stdin})
		outs = append(outs, stdout)
	}
	for i, out := range outs {
		var o loadtest.Opened
		if err := json.NewDecoder(out).Decode(&o); err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("load process %d: %w", i+1, err)
		}
		runs = append(runs, &o)
	}
	return runs, closeAll, nil
}

func parseIPs(ss []string) ([]net.IP, error) {
	var ips []net.IP
	for _, s := range ss {
		ip := net.ParseIP(strings.TrimSpace(s))
		if ip == nil {
			return nil, fmt.Errorf("--source-ips: %q is not an IP address", s)
		}
		ips = append(ips, ip)
	}
	return ips, nil
}

// holdCmd is the child process of --procs: it opens its share, writes what
// it opened as one JSON line, and holds the connections until its standard
// input closes.
type holdCmd struct {
	URL         string   `required:""`
	Conns       int      `required:""`
	Concurrency int      `default:"1"`
	SourceIPs   []string `name:"source-ips"`
	Stream      string   `default:"questions"`
	PK          string   `name:"pk" default:"null" help:"The object to subscribe to, as JSON; null: no subscription."`
}

func (c *holdCmd) Run(ctx context.Context) error {
	var pk any
	if err := json.Unmarshal([]byte(c.PK), &pk); err != nil {
		return fmt.Errorf("--pk: %w", err)
	}
	ips, err := parseIPs(c.SourceIPs)
	if err != nil {
		return err
	}
	o, err := loadtest.OpenConns(ctx, loadtest.Open{URL: c.URL, Conns: c.Conns, Concurrency: c.Concurrency, SourceIPs: ips, Stream: c.Stream, PK: pk})
	if err != nil {
		return err
	}
	defer o.Close()
	if err := json.NewEncoder(os.Stdout).Encode(o); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

type fanoutCmd struct {
	Target      []string      `required:"" help:"NAME=URL of a WebSocket to measure, or NAME=URL=PID to measure the server's CPU too; repeat for several, run in turn."`
	Subscribers int           `default:"1000" help:"Subscriber connections."`
	Updates     int           `default:"20" help:"Updates the writer makes."`
	Interval    time.Duration `default:"200ms" help:"Time from the start of one update to the start of the next (a steady rate)."`
	Stream      string        `default:"questions" help:"Stream to address."`
	JSON        string        `name:"json" help:"Also write the results as JSON to this file."`
}

func (c *fanoutCmd) Run(ctx context.Context) error {
	var results []loadtest.FanoutResult
	for _, t := range c.Target {
		name, url, pid, err := parseTarget(t)
		if err != nil {
			return err
		}
		pk, err := seed(ctx, url, c.Stream)
		if err != nil {
			return err
		}
		r, err := loadtest.RunFanout(ctx, loadtest.Fanout{Name: name, URL: url, Subscribers: c.Subscribers, Updates: c.Updates, Interval: c.Interval, Stream: c.Stream, PK: pk, ServerPID: pid})
		if err != nil {
			return err
		}
		fmt.Printf("%s: %d subscribers, %d updates at %.1f/s: %d deliveries expected, %d lost, %d repeated; from each update's send: p50 %s p99 %s max %s\n",
			name, r.Subscribers, c.Updates, r.UpdatesPerSecond, r.Expected, r.Lost, r.Duplicates,
			r.SendP50.Round(time.Microsecond), r.SendP99.Round(time.Microsecond), r.SendMax.Round(time.Microsecond))
		results = append(results, r)
	}
	fmt.Printf("GOMAXPROCS=%d (this process)\n", runtime.GOMAXPROCS(0))
	rs := make([]loadtest.Result, len(results))
	for i, r := range results {
		rs[i] = r.Result
	}
	return report(rs, c.JSON, results)
}

// parseTarget splits NAME=URL or NAME=URL=PID.
func parseTarget(t string) (name, url string, pid int, err error) {
	name, url, ok := strings.Cut(t, "=")
	if !ok {
		return "", "", 0, fmt.Errorf("--target %q: want NAME=URL or NAME=URL=PID", t)
	}
	if u, p, ok := strings.Cut(url, "="); ok {
		if pid, err = strconv.Atoi(p); err != nil {
			return "", "", 0, fmt.Errorf("--target %q: PID: %w", t, err)
		}
		url = u
	}
	return name, url, pid, nil
}

// report prints the table, and writes v as JSON to path when it is set.
func report(rs []loadtest.Result, path string, v any) error {
	if err := loadtest.Table(os.Stdout, rs); err != nil {
		return err
	}
	return writeJSON(path, v)
}

// writeJSON writes v as JSON to path, when path is set.
func writeJSON(path string, v any) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return loadtest.JSON(f, v)
}

type echoCmd struct {
	Addr string `default:"127.0.0.1:9001" help:"Address to listen on."`
}

func (e *echoCmd) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", e.Addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "echo server on ws://%s/ (GOMAXPROCS=%d)\n", ln.Addr(), runtime.GOMAXPROCS(0))
	srv := &http.Server{Handler: echo.New(), ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

type rrCmd struct {
	Target   []string      `required:"" help:"NAME=URL of a WebSocket to measure, or NAME=URL=PID to measure the server's CPU too; repeat for several, run in turn."`
	Conns    int           `default:"64" help:"Connections, each with one request in flight."`
	Duration time.Duration `default:"10s" help:"How long each target is driven."`
	Action   string        `default:"retrieve" enum:"retrieve,create,list" help:"retrieve, create or list."`
	Stream   string        `default:"questions" help:"Stream to address."`
	JSON     string        `name:"json" help:"Also write the results as JSON to this file."`
}

func (c *rrCmd) Run(ctx context.Context) error {
	var results []loadtest.Result
	for _, t := range c.Target {
		name, url, pid, err := parseTarget(t)
		if err != nil {
			return err
		}
		cfg := loadtest.RR{Name: name, URL: url, Conns: c.Conns, Duration: c.Duration, Stream: c.Stream, Action: c.Action, ServerPID: pid}
		switch c.Action {
		case "retrieve":
			pk, err := seed(ctx, url, c.Stream)
			if err != nil {
				return err
			}
			cfg.PK = pk
		case "create":
			cfg.Data = map[string]any{"question_text": "bench"}
		}
		r, err := loadtest.RequestReply(ctx, cfg)
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	fmt.Printf("GOMAXPROCS=%d (this process)\n", runtime.GOMAXPROCS(0))
	return report(results, c.JSON, results)
}

// seed creates the object a retrieve run reads, and returns its pk (1 for
// a server that answers without one, as the echo server does).
func seed(ctx context.Context, url, stream string) (any, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := client.Dial(dctx, url, nil)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", url, err)
	}
	defer c.Close()
	rep, err := c.Request(dctx, stream, client.Payload{Action: "create", Data: map[string]any{"question_text": "bench"}})
	if err != nil {
		return nil, err
	}
	var obj struct {
		ID any `json:"id"`
	}
	if rep.Decode(&obj) == nil && obj.ID != nil {
		return obj.ID, nil
	}
	return 1, nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var c cli
	k := kong.Parse(&c, kong.Name("streamapi-bench"), kong.Description("Load tool and echo baseline for streamapi."), kong.BindTo(ctx, (*context.Context)(nil)))
	if err := k.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

type soakCmd struct {
	URL         []string      `required:"" help:"WebSocket URL of a node serving the polls app (cmd/streamapi without --jwt-secret); repeat for several nodes on one database and broker."`
	Duration    time.Duration `default:"60s" help:"How long the load runs."`
	Writers     int           `default:"8" help:"Writing connections (creates, patches, updates, votes, deletes, toggles)."`
	Readers     int           `default:"8" help:"Reading connections (retrieves, lists)."`
	Subscribers int           `default:"60" help:"Subscriber connections, one subscription each, every kind in turn; each disconnects now and then and resumes with since on the next node."`
	Idle        int           `default:"200" help:"Idle connections, which only answer pings."`
	Think       time.Duration `default:"10ms" help:"Pause between one writer's or reader's requests."`
	MaxSession  time.Duration `name:"max-session" default:"8s" help:"Longest a subscriber stays connected (each stays a random quarter to all of it)."`
	MaxOffline  time.Duration `name:"max-offline" default:"1s" help:"Longest a subscriber stays away before it resumes."`
	ServerPID   []int         `name:"server-pid" help:"The nodes' process ids, for RSS (repeat, in --url order)."`
	GCURL       []string      `name:"gc-url" help:"The nodes' POST /debug/gc URLs (cmd/streamapi --pprof-addr), for goroutines and heap (repeat, in --server-pid order)."`
	JSON        string        `name:"json" help:"Also write the result as JSON to this file."`
}

func (c *soakCmd) Run(ctx context.Context) error {
	cfg := loadtest.Soak{
		URLs: c.URL, Duration: c.Duration, Writers: c.Writers, Readers: c.Readers, Subscribers: c.Subscribers, Idle: c.Idle,
		Think: c.Think, MaxSession: c.MaxSession, MaxOffline: c.MaxOffline,
		Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) },
	}
	if len(c.GCURL) > len(c.ServerPID) {
		return errors.New("--gc-url: one per --server-pid")
	}
	for i, pid := range c.ServerPID {
		sv := loadtest.Server{PID: pid}
		if i < len(c.GCURL) {
			sv.GCURL = c.GCURL[i]
		}
		cfg.Servers = append(cfg.Servers, sv)
	}
	r, err := loadtest.RunSoak(ctx, cfg)
	if err != nil {
		return err
	}
	secs := r.Elapsed.Seconds()
	var writes int64
	for _, n := range r.Writes {
		writes += n
	}
	fmt.Printf("soak: %d node(s), %s: %d writes acknowledged (%.0f/s) %v, %d reads (%.0f/s)\n",
		r.Nodes, r.Elapsed.Round(time.Second), writes, float64(writes)/secs, r.Writes, r.Reads, float64(r.Reads)/secs)
	fmt.Printf("subscribers: %d, %d sessions, %d resumes (%d refused 410); %d events delivered of %d expected: %d missing, %d repeated, %d unexpected, %d out of order\n",
		r.Subscribers, r.Sessions, r.Resumes, r.Resyncs, r.Events, r.Expected, r.Diff.Missing, r.Diff.Duplicates, r.Diff.Unexpected, r.Diff.OutOfOrder)
	fmt.Printf("recorders (one per node, every change): %d events: %d missing, %d repeated, %d out of order; nodes disagreeing on %d seqs\n",
		r.RecorderEvents, r.RecorderDiff.Missing, r.RecorderDiff.Duplicates, r.RecorderDiff.OutOfOrder, r.Disagreements)
	fmt.Printf("read back: %d objects, %d not as acknowledged; votes %d acknowledged, %d unanswered, %d stored; connections closed by the server: %d\n",
		r.Checked, r.Wrong, r.VotesAcked, r.VotesUnanswered, r.VotesStored, r.UnexpectedCloses)
	for _, m := range r.Memory {
		fmt.Printf("server %d: RSS %d KiB at the start, %d KiB under load, %d KiB after the clients left", m.PID, m.Start.RSSKiB, m.Loaded.RSSKiB, m.End.RSSKiB)
		if m.Start.GC != nil {
			fmt.Printf("; goroutines %d, %d, %d; heap in use %d KiB, %d KiB, %d KiB",
				m.Start.GC["goroutines"], m.Loaded.GC["goroutines"], m.End.GC["goroutines"],
				m.Start.GC["heap_inuse"]>>10, m.Loaded.GC["heap_inuse"]>>10, m.End.GC["heap_inuse"]>>10)
		}
		fmt.Println()
	}
	if err := writeJSON(c.JSON, r); err != nil {
		return err
	}
	if !r.OK() {
		for k, n := range r.Failures {
			fmt.Printf("FAULT %s: %d\n", k, n)
		}
		for _, f := range r.First {
			fmt.Println("  " + f)
		}
		return errors.New("soak: faults found")
	}
	fmt.Println("soak: no fault found")
	return nil
}
