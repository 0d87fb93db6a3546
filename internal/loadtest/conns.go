package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamapi/streamapi/client"
)

// Open configures how the idle and connect-storm scenarios open their
// connections.
type Open struct {
	URL         string
	Conns       int
	Concurrency int      // handshakes in flight at once; default 1 (one after another)
	SourceIPs   []net.IP // local addresses, used in turn; none: the kernel chooses
	Stream      string   // with PK: each connection subscribes to updates of it
	PK          any
}

// Opened is what OpenConns opened and measured.
type Opened struct {
	Conns    []*client.Client `json:"-"`
	Opened   int              `json:"opened"`
	Errors   int              `json:"errors"`
	FirstErr string           `json:"first_error,omitempty"`
	Elapsed  time.Duration    `json:"elapsed_ns"`
	// Latency is each successful connection's handshake (and subscribe)
	// time, in opening order.
	Latency []time.Duration `json:"latency_ns"`
}

// Close closes the connections.
func (o *Opened) Close() {
	for _, c := range o.Conns {
		c.Close()
	}
	o.Conns = nil
}

// OpenConns opens o.Conns connections, o.Concurrency at a time, each
// subscribed when o.PK is set. Failures are counted, not fatal: a storm
// measures them. Spreading over several source addresses lifts the limit
// of one address's ephemeral ports (about 28,000 by default) toward one
// server port.
func OpenConns(ctx context.Context, o Open) (*Opened, error) {
	if o.Conns <= 0 {
		return nil, errors.New("loadtest: Conns must be positive")
	}
	conc := max(o.Concurrency, 1)
	var clients []*http.Client
	for _, ip := range o.SourceIPs {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 30 * time.Second}
		clients = append(clients, &http.Client{Transport: &http.Transport{DialContext: d.DialContext}})
	}
	res := &Opened{}
	var (
		mu   sync.Mutex
		next atomic.Int64
		wg   sync.WaitGroup
	)
	conns := make([]*client.Client, o.Conns)
	lat := make([]time.Duration, o.Conns)
	start := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= o.Conns {
					return
				}
				opts := &client.Options{EventBuffer: 4, UnmatchedBuffer: 4}
				if len(clients) > 0 {
					opts.HTTPClient = clients[i%len(clients)]
				}
				t0 := time.Now()
				dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				c, err := client.Dial(dctx, o.URL, opts)
				if err == nil && o.PK != nil {
					if _, err = c.Subscribe(dctx, o.Stream, "update", o.PK); err != nil {
						c.Close()
					}
				}
				cancel()
				if err != nil {
					mu.Lock()
					res.Errors++
					if res.FirstErr == "" {
						res.FirstErr = err.Error()
					}
					mu.Unlock()
					continue
				}
				conns[i], lat[i] = c, time.Since(t0)
			}
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	for i, c := range conns {
		if c != nil {
			res.Conns = append(res.Conns, c)
			res.Latency = append(res.Latency, lat[i])
		}
	}
	res.Opened = len(res.Conns)
	if err := ctx.Err(); err != nil {
		res.Close()
		return nil, err
	}
	return res, nil
}

// ConnectResult summarises one or more Opened (from several processes).
type ConnectResult struct {
	Opened         int           `json:"opened"`
	Errors         int           `json:"errors"`
	FirstErr       string        `json:"first_error,omitempty"`
	Procs          int           `json:"procs"`
	Elapsed        time.Duration `json:"elapsed_ns"`
	ConnsPerSecond float64       `json:"conns_per_second"`
	P50            time.Duration `json:"p50_ns"`
	P99            time.Duration `json:"p99_ns"`
	Max            time.Duration `json:"max_ns"`
}

// Summarize merges the runs of several processes that started together:
// the rate is every opened connection over the longest run.
func Summarize(runs []*Opened) ConnectResult {
	r := ConnectResult{Procs: len(runs)}
	var all []time.Duration
	for _, o := range runs {
		r.Opened += o.Opened
		r.Errors += o.Errors
		if r.FirstErr == "" {
			r.FirstErr = o.FirstErr
		}
		r.Elapsed = max(r.Elapsed, o.Elapsed)
		all = append(all, o.Latency...)
	}
	if r.Elapsed > 0 {
		r.ConnsPerSecond = float64(r.Opened) / r.Elapsed.Seconds()
	}
	r.P50, r.P99, r.Max = percentiles(all)
	return r
}

// Memory is a server's memory as the load tool saw it.
type Memory struct {
	RSSKiB int64 `json:"rss_kib"`
	// GC is what the server's POST /debug/gc answered (cmd/streamapi
	// --pprof-addr), when it was asked: its Go heap and stacks after a
	// forced collection.
	GC map[string]uint64 `json:"gc,omitempty"`
}

// ReadMemory forces a GC in the server through gcURL (when set), then
// reads its RSS.
func ReadMemory(ctx context.Context, pid int, gcURL string) (Memory, error) {
	var m Memory
	if gcURL != "" {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, gcURL, nil)
		if err != nil {
			return m, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return m, fmt.Errorf("loadtest: GC: %w", err)
		}
		var b bytes.Buffer
		_, err = b.ReadFrom(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return m, fmt.Errorf("loadtest: GC: %s %v", resp.Status, err)
		}
		if err := json.Unmarshal(b.Bytes(), &m.GC); err != nil {
			return m, fmt.Errorf("loadtest: GC answer: %w", err)
		}
	}
	rss, err := RSS(pid)
	if err != nil {
		return m, fmt.Errorf("loadtest: server RSS: %w", err)
	}
	m.RSSKiB = rss
	return m, nil
}
