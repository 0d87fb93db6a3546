package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/alecthomas/kong"
	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/auth/jwtauth"
	"github.com/streamapi/streamapi/examples/boards"
	"github.com/streamapi/streamapi/examples/polls"
	"github.com/streamapi/streamapi/server"
	"github.com/streamapi/streamapi/store/sqlstore"
)

// Flags are the command's settings; each has an environment variable.
type Flags struct {
	App            string        `default:"polls" enum:"polls,boards" env:"STREAMAPI_APP" help:"Example app to serve: polls (questions and choices), or boards (a team kanban: boards, members, columns, cards; needs --jwt-secret)."`
	Addr           string        `default:"127.0.0.1:8000" env:"STREAMAPI_ADDR" help:"Address to listen on."`
	DB             string        `default:"sqlite:./streamapi.db" env:"STREAMAPI_DB" help:"Database: sqlite:PATH, or postgres://USER@HOST:PORT/DB?sslmode=disable."`
	Broker         string        `default:"memory" env:"STREAMAPI_BROKER" help:"Broker carrying changes between nodes: memory (one process), redis://HOST:PORT, nats://HOST:PORT."`
	BrokerPrefix   string        `env:"STREAMAPI_BROKER_PREFIX" help:"Channel (Redis) or subject (NATS) prefix, to keep deployments sharing a broker apart (default streamapi: / streamapi.)."`
	Retention      time.Duration `name:"change-retention" default:"24h" env:"STREAMAPI_CHANGE_RETENTION" help:"How long the change log keeps changes: how far back a subscription can resume (since). Negative keeps them forever."`
	PollInterval   time.Duration `name:"change-poll" default:"1s" env:"STREAMAPI_CHANGE_POLL" help:"How often each node reads the change log for changes no broker message announced."`
	MaxChanges     int64         `name:"change-max-rows" default:"1000000" env:"STREAMAPI_CHANGE_MAX_ROWS" help:"Changes the change log keeps per model at most, whatever their age (its bound by size); -1 for no bound."`
	ResumeLimit    int           `name:"resume-limit" default:"512" env:"STREAMAPI_RESUME_LIMIT" help:"Events one resumed subscription (since) may replay; a client further behind is answered 410."`
	ResumeScan     int           `name:"resume-scan" default:"1024" env:"STREAMAPI_RESUME_SCAN" help:"Changes one resume may read from the log to find its events (a subscription to one object reads only its own); further behind is answered 410 without a read."`
	NoChangeLog    bool          `env:"STREAMAPI_NO_CHANGE_LOG" help:"Turn the change log (outbox) off: no seq, no resume, and a crash between commit and publish loses events."`
	PageSize       int           `default:"25" env:"STREAMAPI_PAGE_SIZE" help:"Default list page size."`
	Debug          bool          `default:"true" negatable:"" env:"STREAMAPI_DEBUG" help:"Serve the debugger page at /channels-api/ (--no-debug to turn off)."`
	MaxFrameBytes  int           `default:"1048576" env:"STREAMAPI_MAX_FRAME_BYTES" help:"Largest inbound WebSocket frame; bigger closes with 1009."`
	Rate           float64       `default:"200" env:"STREAMAPI_RATE" help:"Inbound frames per second per connection before reads pause (backpressure); negative turns the limit off."`
	Burst          int           `default:"400" env:"STREAMAPI_BURST" help:"Inbound frames a connection may send at once above --rate."`
	MaxQueue       int           `name:"max-queue" default:"1024" env:"STREAMAPI_MAX_QUEUE" help:"Outbound frames a connection may have waiting; a client further behind (a slow consumer) is closed with 1008 and may resume with since."`
	MaxQueueBytes  int           `name:"max-queue-bytes" default:"16777216" env:"STREAMAPI_MAX_QUEUE_BYTES" help:"Outbound bytes a connection may have waiting; past it, as past --max-queue, the client is closed with 1008."`
	PprofAddr      string        `name:"pprof-addr" env:"STREAMAPI_PPROF_ADDR" help:"Serve net/http/pprof on this address (e.g. 127.0.0.1:6060); off when empty. Never expose it publicly."`
	LogLevel       string        `default:"info" enum:"debug,info,warn,error" env:"STREAMAPI_LOG_LEVEL" help:"Log level: debug, info, warn, error."`
	JWTSecret      string        `name:"jwt-secret" env:"STREAMAPI_JWT_SECRET" help:"Accept HS256 JWT bearer tokens signed with this secret (32 bytes or more); without it everyone is anonymous. With --debug, a token for the user \"demo\" is printed at start."`
	AllowedOrigins []string      `env:"STREAMAPI_ALLOWED_ORIGINS" help:"Origins (scheme://host[:port]) whose pages may open the WebSocket besides this server's own; * for any."`
	CORSOrigins    []string      `name:"cors-origins" env:"STREAMAPI_CORS_ORIGINS" help:"Origins whose pages may call the REST API from a browser (CORS); none by default."`
	AllowedHosts   []string      `name:"allowed-hosts" env:"STREAMAPI_ALLOWED_HOSTS" help:"Host names requests may carry (.example.com for a domain and its subdomains, * for any). Default: on a loopback --addr, localhost and the loopback addresses only (against DNS rebinding); otherwise any."`

	PingInterval      time.Duration `name:"ping-interval" default:"25s" env:"STREAMAPI_PING_INTERVAL" help:"Ping a WebSocket silent this long; negative turns pings off. Keep it under your load balancer's idle timeout."`
	PongTimeout       time.Duration `name:"pong-timeout" default:"10s" env:"STREAMAPI_PONG_TIMEOUT" help:"Close (1008) a WebSocket that leaves a ping unanswered this long."`
	MaxPending        int           `name:"max-pending" default:"16" env:"STREAMAPI_MAX_PENDING" help:"Inbound frames a WebSocket may have waiting while one is handled; past it reads pause."`
	MaxSubscriptions  int           `name:"max-subscriptions" default:"1000" env:"STREAMAPI_MAX_SUBSCRIPTIONS" help:"Subscriptions one WebSocket may hold; one more is answered 429. -1 for no limit."`
	MaxBurst          int           `name:"max-burst" default:"10000" env:"STREAMAPI_MAX_BURST" help:"Objects one stream may send a user whose membership of a group changed (a board's cards entering view); a larger group closes the user's connections with 1008, and they reconnect and list. -1 for no limit."`
	MaxRequestIDBytes int           `name:"max-request-id" default:"256" env:"STREAMAPI_MAX_REQUEST_ID" help:"Longest request_id (bytes of JSON); a longer one is answered 400. -1 for no limit."`
	RequestTimeout    time.Duration `name:"request-timeout" default:"10s" env:"STREAMAPI_REQUEST_TIMEOUT" help:"Time one WebSocket frame or REST request may take; its statements are then cancelled and it is answered 503. Negative for none."`
	MaxSearchTerms    int           `name:"max-search-terms" default:"16" env:"STREAMAPI_MAX_SEARCH_TERMS" help:"Terms a list's search may have; more is a 400. -1 for no limit."`
	MaxInValues       int           `name:"max-in-values" default:"100" env:"STREAMAPI_MAX_IN_VALUES" help:"Values an __in filter may have; more is a 400. -1 for no limit."`
	MaxOrdering       int           `name:"max-ordering" default:"8" env:"STREAMAPI_MAX_ORDERING" help:"Fields a list's ordering may have; more is a 400. -1 for no limit."`
	MaxQueryBytes     int           `name:"max-query-bytes" default:"8192" env:"STREAMAPI_MAX_QUERY_BYTES" help:"Size of a list's query (REST query string or WebSocket list data); more is a 400. -1 for no limit."`
	ReadHeaderTimeout time.Duration `name:"read-header-timeout" default:"10s" env:"STREAMAPI_READ_HEADER_TIMEOUT" help:"Time to read an HTTP request's headers. Negative for none."`
	ReadTimeout       time.Duration `name:"read-timeout" default:"30s" env:"STREAMAPI_READ_TIMEOUT" help:"Time to read a whole HTTP request, body included (not a WebSocket's frames). Negative for none."`
	WriteTimeout      time.Duration `name:"write-timeout" default:"30s" env:"STREAMAPI_WRITE_TIMEOUT" help:"Time to write an HTTP response (not a WebSocket's frames). Negative for none."`
	IdleTimeout       time.Duration `name:"idle-timeout" default:"120s" env:"STREAMAPI_IDLE_TIMEOUT" help:"Time an idle HTTP keep-alive connection is kept; keep it above your load balancer's idle timeout. Negative for none."`
	MaxHeaderBytes    int           `name:"max-header-bytes" default:"65536" env:"STREAMAPI_MAX_HEADER_BYTES" help:"Largest HTTP request header, URL included."`
}

// Validate refuses settings that cannot be meant, naming the flag: a
// zero that would silently mean a default, a negative size.
func (f *Flags) Validate() error {
	type rule struct {
		flag string
		ok   bool
		want string
		got  any
	}
	positive := func(d time.Duration) bool { return d > 0 }
	notZero := func(d time.Duration) bool { return d != 0 }
	limit := func(n int) bool { return n >= 1 || n == -1 }
	for _, r := range []rule{
		{"--page-size", f.PageSize >= 1, "at least 1", f.PageSize},
		{"--burst", f.Burst >= 1, "at least 1", f.Burst},
		{"--rate", f.Rate != 0, "above 0, or negative to turn the limit off", f.Rate},
		{"--max-queue", f.MaxQueue >= 1, "at least 1", f.MaxQueue},
		{"--max-queue-bytes", f.MaxQueueBytes >= 1, "at least 1", f.MaxQueueBytes},
		{"--max-frame-bytes", f.MaxFrameBytes >= 1, "at least 1", f.MaxFrameBytes},
		{"--change-poll", positive(f.PollInterval), "above 0", f.PollInterval},
		{"--change-retention", notZero(f.Retention), "above 0, or negative to keep changes for ever", f.Retention},
		{"--ping-interval", notZero(f.PingInterval), "above 0, or negative to turn pings off", f.PingInterval},
		{"--pong-timeout", positive(f.PongTimeout), "above 0", f.PongTimeout},
		{"--max-pending", f.MaxPending >= 1, "at least 1", f.MaxPending},
		{"--max-subscriptions", limit(f.MaxSubscriptions), "at least 1, or -1 for no limit", f.MaxSubscriptions},
		{"--max-request-id", limit(f.MaxRequestIDBytes), "at least 1, or -1 for no limit", f.MaxRequestIDBytes},
		{"--max-burst", limit(f.MaxBurst), "at least 1, or -1 for no limit", f.MaxBurst},
		{"--request-timeout", notZero(f.RequestTimeout), "above 0, or negative for none", f.RequestTimeout},
		{"--max-search-terms", limit(f.MaxSearchTerms), "at least 1, or -1 for no limit", f.MaxSearchTerms},
		{"--max-in-values", limit(f.MaxInValues), "at least 1, or -1 for no limit", f.MaxInValues},
		{"--max-ordering", limit(f.MaxOrdering), "at least 1, or -1 for no limit", f.MaxOrdering},
		{"--max-query-bytes", limit(f.MaxQueryBytes), "at least 1, or -1 for no limit", f.MaxQueryBytes},
		{"--read-header-timeout", notZero(f.ReadHeaderTimeout), "above 0, or negative for none", f.ReadHeaderTimeout},
		{"--read-timeout", notZero(f.ReadTimeout), "above 0, or negative for none", f.ReadTimeout},
		{"--write-timeout", notZero(f.WriteTimeout), "above 0, or negative for none", f.WriteTimeout},
		{"--idle-timeout", notZero(f.IdleTimeout), "above 0, or negative for none", f.IdleTimeout},
		{"--max-header-bytes", f.MaxHeaderBytes >= 1, "at least 1", f.MaxHeaderBytes},
		{"--change-max-rows", f.MaxChanges >= 1 || f.MaxChanges == -1, "at least 1, or -1 for no bound", f.MaxChanges},
		{"--resume-limit", f.ResumeLimit >= 1, "at least 1", f.ResumeLimit},
		{"--resume-scan", f.ResumeScan >= f.ResumeLimit, "at least --resume-limit", f.ResumeScan},
	} {
		if !r.ok {
			return fmt.Errorf("%s must be %s (got %v)", r.flag, r.want, r.got)
		}
	}
	if f.App == "boards" && f.JWTSecret == "" {
		return errors.New("--app boards needs --jwt-secret: every boards action needs a user")
	}
	for _, o := range f.AllowedOrigins {
		if err := server.CheckOrigin(o); err != nil {
			return fmt.Errorf("--allowed-origins: %w", err)
		}
	}
	for _, o := range f.CORSOrigins {
		if err := server.CheckOrigin(o); err != nil {
			return fmt.Errorf("--cors-origins: %w", err)
		}
	}
	return nil
}

// Main is the program: ParseFlags, Run, then Close.
type Main struct {
	Flags  Flags
	Stdout io.Writer
	Stderr io.Writer

	log    *slog.Logger
	db     *sqlstore.DB
	broker streamapi.Broker
	api    *server.Server
	http   *http.Server
	ln     net.Listener
	served chan error
	pprof  *http.Server
}

// NewMain returns a Main writing to the process's stdout and stderr.
func NewMain() *Main { return &Main{Stdout: os.Stdout, Stderr: os.Stderr} }

// ParseFlags reads args and the environment into m.Flags.
func (m *Main) ParseFlags(args []string) error {
	parser, err := kong.New(&m.Flags,
		kong.Name("streamapi"),
		kong.Description("Serve the polls example over the streamapi WebSocket protocol."),
		kong.Writers(m.Stdout, m.Stderr),
		kong.Exit(func(code int) { panic(exitCode(code)) }),
	)
	if err != nil {
		return err
	}
	err = catchExit(func() error {
		_, err := parser.Parse(args)
		return err
	})
	if err != nil {
		return err
	}
	return m.Flags.Validate()
}

type exitCode int

// catchExit turns kong's exit (after --help) into a return, so tests and
// Main stay in control.
func catchExit(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			code, ok := r.(exitCode)
			if !ok {
				panic(r)
			}
			if code == 0 {
				os.Exit(0)
			}
			err = fmt.Errorf("exit %d", code)
		}
	}()
	return fn()
}

// Run opens the database and broker, migrates, and starts serving. It
// returns once the server is listening (Addr() gives the address).
func (m *Main) Run(ctx context.Context) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(m.Flags.LogLevel)); err != nil {
		return err
	}
	m.log = slog.New(slog.NewTextHandler(m.Stderr, &slog.HandlerOptions{Level: level}))

	// A node starts only with its broker and database reachable: it
	// fails at once, with the reason, rather than serving without them
	// (an orchestrator restarts it; docs/deploy.md). Once running, a
	// broker or database that goes away is retried.
	broker, err := openBroker(ctx, m.Flags.Broker, m.Flags.BrokerPrefix, m.log)
	if err != nil {
		return fmt.Errorf("broker %s: %w", redact(m.Flags.Broker), err)
	}
	m.broker = broker
	db, err := openStore(ctx, m.Flags.DB, sqlstore.Options{Publisher: m.broker, Logger: m.log, NoChangeLog: m.Flags.NoChangeLog})
	if err != nil {
		return fmt.Errorf("database %s: %w", redact(m.Flags.DB), err)
	}
	m.db = db
	resources, demoUsers, err := m.openApp(ctx)
	if err != nil {
		return err
	}
	var changeLog streamapi.ChangeLog
	if !m.Flags.NoChangeLog {
		changeLog = m.db
	}
	var authn streamapi.Authenticator
	if m.Flags.JWTSecret != "" {
		a, err := jwtauth.New(jwtauth.Config{Secret: []byte(m.Flags.JWTSecret)})
		if err != nil {
			return err
		}
		authn = a
		if m.Flags.Debug {
			for _, user := range demoUsers {
				tok, err := jwtauth.Sign([]byte(m.Flags.JWTSecret), user, 24*time.Hour)
				if err != nil {
					return err
				}
				m.log.Info("development token for the user "+user+", valid 24 h (Authorization: Bearer, ?token=, or the subprotocols [\"bearer\", TOKEN])", "user", user, "token", tok)
			}
		}
	}
	hosts := m.Flags.AllowedHosts
	if len(hosts) == 0 && server.IsLoopback(m.Flags.Addr) {
		hosts = server.LoopbackHosts
	}
	f := &m.Flags
	m.api, err = server.New(ctx, server.Config{
		Authenticator:  authn,
		AllowedOrigins: f.AllowedOrigins,
		CORSOrigins:    f.CORSOrigins,
		AllowedHosts:   hosts,
		Resources:      resources,
		Broker:         m.broker,
		ChangeLog:      changeLog,
		Log:            server.LogOptions{Retention: f.Retention, PollInterval: f.PollInterval, MaxChanges: f.MaxChanges, ResumeLimit: f.ResumeLimit, ResumeScan: f.ResumeScan},
		PageSize:       f.PageSize,
		Debug:          f.Debug,
		RequestTimeout: f.RequestTimeout,
		Query:          streamapi.QueryLimits{MaxSearchTerms: f.MaxSearchTerms, MaxInValues: f.MaxInValues, MaxOrdering: f.MaxOrdering, MaxQueryBytes: f.MaxQueryBytes},
		Conn: server.ConnLimits{
			MaxFrameBytes: f.MaxFrameBytes, MaxQueue: f.MaxQueue, MaxQueueBytes: f.MaxQueueBytes, Rate: f.Rate, Burst: f.Burst,
			PingInterval: f.PingInterval, PongTimeout: f.PongTimeout, MaxPending: f.MaxPending,
			MaxSubscriptions: f.MaxSubscriptions, MaxRequestIDBytes: f.MaxRequestIDBytes, MaxBurst: f.MaxBurst,
		},
		Logger: m.log,
	})
	if err != nil {
		return err
	}
	if m.ln, err = net.Listen("tcp", m.Flags.Addr); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if m.Flags.PprofAddr != "" {
		if err := m.servePprof(); err != nil {
			return err
		}
	}
	m.http = server.NewHTTPServer(m.api.Handler(), server.HTTPLimits{
		ReadHeaderTimeout: f.ReadHeaderTimeout, ReadTimeout: f.ReadTimeout, WriteTimeout: f.WriteTimeout,
		IdleTimeout: f.IdleTimeout, MaxHeaderBytes: f.MaxHeaderBytes,
	})
	m.http.ErrorLog = slog.NewLogLogger(m.log.Handler(), slog.LevelWarn)
	m.served = make(chan error, 1)
	go func() { m.served <- m.http.Serve(m.ln) }()
	m.log.Info("serving", "app", m.Flags.App, "addr", "http://"+m.Addr(), "ws", "ws://"+m.Addr()+"/ws", "db", redact(m.Flags.DB), "broker", redact(m.Flags.Broker), "debug", m.Flags.Debug)
	if m.Flags.Debug {
		m.log.Info("debugger page", "url", "http://"+m.Addr()+"/channels-api/")
		if !server.IsLoopback(m.Addr()) {
			m.log.Warn("the debugger page is served on a non-loopback address, where anyone who reaches it may use it; run production with --no-debug", "addr", m.Addr())
		}
	}
	return nil
}

// openApp migrates the database for the app --app names and declares its
// resources; it returns them with the users --debug prints tokens for.
func (m *Main) openApp(ctx context.Context) ([]streamapi.Resource, []string, error) {
	switch m.Flags.App {
	case "boards":
		if err := m.db.Migrate(ctx, boards.Migrations()); err != nil {
			return nil, nil, err
		}
		app, err := boards.New(m.db)
		if err != nil {
			return nil, nil, err
		}
		return app.Resources(), []string{"alice", "bob"}, nil
	default:
		if err := m.db.Migrate(ctx, polls.Migrations()); err != nil {
			return nil, nil, err
		}
		app, err := polls.NewWithOptions(m.db, polls.Options{Auth: m.Flags.JWTSecret != ""})
		if err != nil {
			return nil, nil, err
		}
		return app.Resources(), []string{"demo"}, nil
	}
}

// servePprof serves the profiler's handlers on their own listener, apart
// from the API.
func (m *Main) servePprof() error {
	ln, err := net.Listen("tcp", m.Flags.PprofAddr)
	if err != nil {
		return fmt.Errorf("pprof listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("POST /debug/gc", serveGC)
	m.pprof = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = m.pprof.Serve(ln) }()
	m.log.Info("pprof", "url", "http://"+ln.Addr().String()+"/debug/pprof/")
	return nil
}

// serveGC runs a garbage collection, returns freed memory to the operating
// system, and answers with the memory figures after it, for the load
// tool's idle scenario (RSS "after warm-up and GC"). It is on the pprof
// listener only.
func serveGC(w http.ResponseWriter, _ *http.Request) {
	debug.FreeOSMemory() // runs a GC first
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]uint64{
		"heap_inuse": ms.HeapInuse, "heap_sys": ms.HeapSys, "heap_released": ms.HeapReleased,
		"stack_inuse": ms.StackInuse, "sys": ms.Sys, "goroutines": uint64(runtime.NumGoroutine()),
	})
}

// Addr returns the address the server listens on.
func (m *Main) Addr() string {
	if m.ln == nil {
		return ""
	}
	return m.ln.Addr().String()
}

// Close shuts down gracefully: no new connections, requests in progress
// finish, queued frames are written, sockets close with 1001; then the
// broker and database close.
func (m *Main) Close(ctx context.Context) error {
	var errs []error
	// The API first: while it drains, handshakes get 503 and /healthz 503,
	// so a load balancer sees the node leave; then the HTTP server (whose
	// Shutdown does not wait for hijacked WebSocket connections).
	if m.api != nil {
		errs = append(errs, m.api.Shutdown(ctx))
	}
	if m.http != nil {
		errs = append(errs, m.http.Shutdown(ctx))
		if err := <-m.served; !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	if m.pprof != nil {
		errs = append(errs, m.pprof.Close())
	}
	if m.broker != nil {
		errs = append(errs, m.broker.Close())
	}
	if m.db != nil {
		errs = append(errs, m.db.Close())
	}
	if m.log != nil {
		m.log.Info("stopped")
	}
	return errors.Join(errs...)
}
