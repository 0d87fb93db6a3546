// Package loadtest drives any server that speaks the streamapi protocol,
// for cmd/streamapi-bench. This first scenario is request/reply: N
// connections, each with one request in flight, for a duration.
package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/streamapi/streamapi/client"
)

// RR configures a request/reply run against one target.
type RR struct {
	Name     string        // the target's name in the results ("streamapi", "echo")
	URL      string        // its WebSocket URL
	Conns    int           // connections, each with one request in flight
	Duration time.Duration // how long to send
	Stream   string        // e.g. "questions"
	Action   string        // retrieve, create or list
	PK       any           // for retrieve
	Data     any           // for create and list

	ServerPID int // when set, the server's CPU time is measured too
}

// Result is one run's measurements.
type Result struct {
	Scenario  string        `json:"scenario"`
	Target    string        `json:"target"`
	Action    string        `json:"action"`
	Conns     int           `json:"conns"`
	Requests  int64         `json:"requests"`
	Errors    int64         `json:"errors"`
	Elapsed   time.Duration `json:"elapsed_ns"`
	PerSecond float64       `json:"per_second"`
	P50       time.Duration `json:"p50_ns"`
	P99       time.Duration `json:"p99_ns"`
	Max       time.Duration `json:"max_ns"`
	// CPU time used during the run, in seconds per second of it (2 is both
	// cores of a 2-core machine): this load tool, and the server when its
	// PID was given.
	ToolCPU   float64 `json:"tool_cpu"`
	ServerCPU float64 `json:"server_cpu,omitempty"`
}

// RequestReply runs cfg: it dials every connection first, then each sends
// a request, waits for its reply, and sends the next, until the duration
// ends. A reply with a status of 400 or more counts as an error.
func RequestReply(ctx context.Context, cfg RR) (Result, error) {
	if cfg.Conns <= 0 || cfg.Duration <= 0 {
		return Result{}, errors.New("loadtest: Conns and Duration must be positive")
	}
	conns := make([]*client.Client, 0, cfg.Conns)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < cfg.Conns; i++ {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := client.Dial(dctx, cfg.URL, nil)
		cancel()
		if err != nil {
			return Result{}, fmt.Errorf("loadtest: dial %s (connection %d): %w", cfg.URL, i+1, err)
		}
		conns = append(conns, c)
	}
	p := client.Payload{Action: cfg.Action, PK: cfg.PK, Data: cfg.Data}
	lat := make([][]time.Duration, cfg.Conns)
	errs := make([]int64, cfg.Conns)
	var wg sync.WaitGroup
	cpu := startCPU(cfg.ServerPID)
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			samples := make([]time.Duration, 0, 4096)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t0 := time.Now()
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				rep, err := c.Request(rctx, cfg.Stream, p)
				cancel()
				if err != nil || rep.Status >= 400 {
					errs[i]++
					if err != nil {
						break // the connection is gone
					}
					continue
				}
				samples = append(samples, time.Since(t0))
			}
			lat[i] = samples
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	r := Result{Scenario: "request/reply", Target: cfg.Name, Action: cfg.Action, Conns: cfg.Conns, Elapsed: elapsed}
	cpu.stop(&r)
	var all []time.Duration
	for i := range lat {
		all = append(all, lat[i]...)
		r.Errors += errs[i]
	}
	r.Requests = int64(len(all))
	r.PerSecond = float64(r.Requests) / elapsed.Seconds()
	r.P50, r.P99, r.Max = percentiles(all)
	return r, nil
}

// Table writes results as an aligned table.
func Table(w io.Writer, rs []Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\ttarget\taction\tconns\trequests\terrors\treq/s\tp50\tp99\tmax\ttool cpu\tserver cpu\t")
	for _, r := range rs {
		server := "-"
		if r.ServerCPU > 0 {
			server = fmt.Sprintf("%.2f", r.ServerCPU)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%.0f\t%s\t%s\t%s\t%.2f\t%s\t\n", r.Scenario, r.Target, r.Action, r.Conns, r.Requests, r.Errors, r.PerSecond,
			r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.Max.Round(time.Microsecond), r.ToolCPU, server)
	}
	return tw.Flush()
}

// JSON writes results (a Result, a FanoutResult or a slice of them) as
// indented JSON.
func JSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Fanout configures a fan-out run: Subscribers connections subscribe to
// updates of one object, then one writer updates it Updates times, every
// Interval; each delivery's latency is measured from the write's reply.
type Fanout struct {
	Name        string
	URL         string
	Subscribers int
	Updates     int
	Interval    time.Duration
	Stream      string // e.g. "questions"
	PK          any    // the object; it must exist
	Field       string // a text field the writer sets, e.g. "question_text"
	ServerPID   int    // when set, the server's CPU time is measured too
}

// FanoutResult adds what a fan-out run measures to Result: deliveries
// expected and lost.
type FanoutResult struct {
	Result
	Subscribers      int     `json:"subscribers"`
	Expected         int64   `json:"expected"`
	Lost             int64   `json:"lost"`
	Duplicates       int64   `json:"duplicates"`         // deliveries of an update a subscriber had already had
	UpdatesPerSecond float64 `json:"updates_per_second"` // the writer's achieved rate
	// Latency from the moment the writer sent each update (Result's P50,
	// P99 and Max run from the moment it got the reply).
	SendP50 time.Duration `json:"send_p50_ns"`
	SendP99 time.Duration `json:"send_p99_ns"`
	SendMax time.Duration `json:"send_max_ns"`
}

// updateNumber finds k in the "fanout-K" text the writer set, without
// decoding the whole object: at 50,000 deliveries a second the load tool's
// own decoding would otherwise compete with the server for the CPU.
func updateNumber(data []byte) (int, bool) {
	i := bytes.Index(data, []byte(`"fanout-`))
	if i < 0 {
		return 0, false
	}
	k, n := 0, 0
	for _, b := range data[i+len(`"fanout-`):] {
		if b < '0' || b > '9' {
			break
		}
		k, n = k*10+int(b-'0'), n+1
	}
	return k, n > 0 && n < 10
}

// RunFanout runs cfg. Latency runs from the write's reply, as the issue
// defines it; a delivery that arrives before the reply (the in-process
// broker fans out before the reply is queued) counts as 0. SendP50 and
// the rest run from the moment the update was sent, which needs no such
// rule.
func RunFanout(ctx context.Context, cfg Fanout) (FanoutResult, error) {
	if cfg.Subscribers <= 0 || cfg.Updates <= 0 {
		return FanoutResult{}, errors.New("loadtest: Subscribers and Updates must be positive")
	}
	if cfg.Field == "" {
		cfg.Field = "question_text"
	}
	subs := make([]*client.Client, 0, cfg.Subscribers)
	defer func() {
		for _, c := range subs {
			c.Close()
		}
	}()
	type arrival struct {
		k  int
		at time.Time
	}
	arrivals := make([][]arrival, cfg.Subscribers)
	var received, dups atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < cfg.Subscribers; i++ {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		c, err := client.Dial(dctx, cfg.URL, &client.Options{EventBuffer: min(cfg.Updates+16, 1024)})
		if err == nil {
			var s *client.Subscription
			if s, err = c.Subscribe(dctx, cfg.Stream, "update", cfg.PK); err != nil {
				c.Close()
			} else {
				subs = append(subs, c)
				wg.Add(1)
				go func() {
					defer wg.Done()
					seen := make([]bool, cfg.Updates)
					for ev := range s.C {
						at := time.Now()
						if k, ok := updateNumber(ev.Data); ok && k < cfg.Updates {
							if seen[k] {
								dups.Add(1) // counted once: a repeat must not hide a loss
								continue
							}
							seen[k] = true
							arrivals[i] = append(arrivals[i], arrival{k, at})
							received.Add(1)
						}
					}
				}()
			}
		}
		cancel()
		if err != nil {
			return FanoutResult{}, fmt.Errorf("loadtest: subscriber %d: %w", i+1, err)
		}
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	w, err := client.Dial(dctx, cfg.URL, nil)
	cancel()
	if err != nil {
		return FanoutResult{}, fmt.Errorf("loadtest: writer: %w", err)
	}
	defer w.Close()
	sent, replied := make([]time.Time, cfg.Updates), make([]time.Time, cfg.Updates)
	cpu := startCPU(cfg.ServerPID)
	start := time.Now()
	var errs int64
	for k := 0; k < cfg.Updates; k++ {
		// Update k starts at start+k*Interval (a steady rate), or at once
		// when the previous one took longer.
		if d := time.Until(start.Add(time.Duration(k) * cfg.Interval)); d > 0 {
			time.Sleep(d)
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		sent[k] = time.Now()
		rep, err := w.Request(rctx, cfg.Stream, client.Payload{Action: "patch", PK: cfg.PK, Data: map[string]any{cfg.Field: fmt.Sprintf("fanout-%d", k)}})
		replied[k] = time.Now()
		cancel()
		if err != nil || rep.Status >= 400 {
			errs++
		}
	}
	writing := time.Since(start)
	// Wait for the last deliveries (up to 2 s and an interval), then stop
	// the clock and the CPU meter before closing the readers.
	expected := int64(cfg.Subscribers * cfg.Updates)
	for wait := time.Now().Add(2*time.Second + cfg.Interval); received.Load() < expected && time.Now().Before(wait); {
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	r := FanoutResult{Subscribers: cfg.Subscribers, Expected: expected, UpdatesPerSecond: float64(cfg.Updates) / writing.Seconds()}
	r.Result = Result{Scenario: "fan-out", Target: cfg.Name, Action: "update", Conns: cfg.Subscribers + 1, Errors: errs, Elapsed: elapsed}
	cpu.stop(&r.Result)
	for _, c := range subs {
		c.Close()
	}
	subs = nil
	wg.Wait()
	var lat, fromSend []time.Duration
	for i := range arrivals {
		for _, a := range arrivals[i] {
			d := a.at.Sub(replied[a.k])
			if d < 0 {
				d = 0
			}
			lat = append(lat, d)
			fromSend = append(fromSend, a.at.Sub(sent[a.k]))
		}
	}
	r.Requests = int64(len(lat))
	r.Duplicates = dups.Load()
	r.PerSecond = float64(len(lat)) / elapsed.Seconds()
	r.Lost = r.Expected - int64(len(lat))
	r.P50, r.P99, r.Max = percentiles(lat)
	r.SendP50, r.SendP99, r.SendMax = percentiles(fromSend)
	return r, nil
}

// RSS returns a process's resident set size in KiB (VmRSS in
// /proc/PID/status).
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kib int64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kib); err != nil {
				return 0, err
			}
			return kib, nil
		}
	}
	return 0, errors.New("loadtest: no VmRSS in /proc status")
}

// percentiles sorts d and returns its median, 99th percentile and maximum
// (zeros when it is empty).
func percentiles(d []time.Duration) (p50, p99, maxd time.Duration) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	slices.Sort(d)
	return d[len(d)/2], d[len(d)*99/100], d[len(d)-1]
}
