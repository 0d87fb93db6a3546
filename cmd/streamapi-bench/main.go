// Command streamapi-bench measures servers that speak the streamapi
// protocol, and serves the bare echo server they are compared with.
//
//	streamapi-bench echo --addr 127.0.0.1:9001
//	streamapi-bench rr --target streamapi=ws://127.0.0.1:8000/ws --target echo=ws://127.0.0.1:9001/ --conns 64 --duration 10s --action retrieve
//
// rr runs request/reply against each target in turn, in the same run, and
// prints a table (and JSON with --json FILE). docs/performance.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
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
}

type idleCmd struct {
	URL       string        `required:"" help:"WebSocket URL of a streamapi server."`
	ServerPID int           `name:"server-pid" required:"" help:"The server's process id, to read its RSS."`
	Conns     int           `default:"1000" help:"Connections to open, each subscribed to updates of one object."`
	Settle    time.Duration `default:"5s" help:"Wait after the last connection before reading the RSS."`
	Stream    string        `default:"questions" help:"Stream to address."`
	JSON      string        `name:"json" help:"Also write the result as JSON to this file."`
}

func (c *idleCmd) Run(ctx context.Context) error {
	pk, err := seed(ctx, c.URL, c.Stream)
	if err != nil {
		return err
	}
	r, err := loadtest.RunIdle(ctx, loadtest.Idle{URL: c.URL, Conns: c.Conns, Stream: c.Stream, PK: pk, ServerPID: c.ServerPID, Settle: c.Settle})
	if err != nil {
		return err
	}
	fmt.Printf("idle: %d connections (%d failed) in %.1f s (%.0f/s); server RSS %d KiB -> %d KiB: %.0f bytes per connection\n",
		r.Conns-r.Errors, r.Errors, r.ConnectSeconds, r.ConnsPerSecond, r.RSSBeforeKiB, r.RSSAfterKiB, r.BytesPerConn)
	return writeJSON(c.JSON, r)
}

type fanoutCmd struct {
	URL         string        `required:"" help:"WebSocket URL of a streamapi server."`
	Name        string        `default:"streamapi" help:"The target's name in the results."`
	Subscribers int           `default:"1000" help:"Subscriber connections."`
	Updates     int           `default:"20" help:"Updates the writer makes."`
	Interval    time.Duration `default:"200ms" help:"Time between updates."`
	Stream      string        `default:"questions" help:"Stream to address."`
	JSON        string        `name:"json" help:"Also write the result as JSON to this file."`
}

func (c *fanoutCmd) Run(ctx context.Context) error {
	pk, err := seed(ctx, c.URL, c.Stream)
	if err != nil {
		return err
	}
	r, err := loadtest.RunFanout(ctx, loadtest.Fanout{Name: c.Name, URL: c.URL, Subscribers: c.Subscribers, Updates: c.Updates, Interval: c.Interval, Stream: c.Stream, PK: pk})
	if err != nil {
		return err
	}
	fmt.Printf("GOMAXPROCS=%d (this process); %d subscribers, %d updates: %d deliveries expected, %d lost\n", runtime.GOMAXPROCS(0), r.Subscribers, c.Updates, r.Expected, r.Lost)
	return report([]loadtest.Result{r.Result}, c.JSON, r)
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
	Target   []string      `required:"" help:"NAME=URL of a WebSocket to measure; repeat for several, run in turn."`
	Conns    int           `default:"64" help:"Connections, each with one request in flight."`
	Duration time.Duration `default:"10s" help:"How long each target is driven."`
	Action   string        `default:"retrieve" enum:"retrieve,create,list" help:"retrieve, create or list."`
	Stream   string        `default:"questions" help:"Stream to address."`
	JSON     string        `name:"json" help:"Also write the results as JSON to this file."`
}

func (c *rrCmd) Run(ctx context.Context) error {
	var results []loadtest.Result
	for _, t := range c.Target {
		name, url, ok := strings.Cut(t, "=")
		if !ok {
			return fmt.Errorf("--target %q: want NAME=URL", t)
		}
		cfg := loadtest.RR{Name: name, URL: url, Conns: c.Conns, Duration: c.Duration, Stream: c.Stream, Action: c.Action}
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
