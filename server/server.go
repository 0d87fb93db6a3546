// Package server assembles streamapi's HTTP surface: the WebSocket endpoint
// (the demultiplexer, stream → resource), the debugger page and a health
// check, over resources declared with package resource.
//
// Mount the pieces on your own mux:
//
//	api, err := server.New(ctx, server.Config{Resources: []streamapi.Resource{questions}, Broker: broker})
//	mux.Handle("/ws", api)                          // the WebSocket
//	mux.Handle("/channels-api/", api.Debugger("/ws")) // optional, for development
//
// or take them all at once with Handler. Shutdown closes every socket with
// 1001 after writing what was queued.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/cors"
	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/internal/conn"
	"github.com/streamapi/streamapi/internal/debugger"
	"github.com/streamapi/streamapi/internal/feed"
	"github.com/streamapi/streamapi/internal/hub"
	"github.com/streamapi/streamapi/internal/mux"
	"github.com/streamapi/streamapi/rest"
)

// Config configures a Server. Resources and Broker are required.
type Config struct {
	// Resources are served under their stream names, which must be unique.
	Resources []streamapi.Resource
	// Broker carries committed changes to this server's subscribers: the
	// same broker the store publishes to.
	Broker streamapi.Broker
	// Authenticator finds the user of each WebSocket handshake; nil treats
	// everyone as anonymous.
	Authenticator streamapi.Authenticator
	// PageSize is the default list page size (25 when zero); a resource's
	// own PageSize wins.
	PageSize int
	// Query bounds the cost of one list query (search terms, __in values,
	// ordering fields, the query's bytes); zero fields take the defaults.
	Query streamapi.QueryLimits
	// Permission is the default permission (AllowAny when nil); a
	// resource's own Permission wins.
	Permission streamapi.Permission
	// Conn sets per-connection limits (frame size, queue depth, rate);
	// zero fields take safe defaults (see conn.Options in the docs).
	Conn ConnLimits
	// ChangeLog, when set (a store/sqlstore DB, unless opened with
	// NoChangeLog), makes delivery exact: events carry their seq, repeats
	// are dropped, what the broker did not deliver is read from the log,
	// and subscriptions may resume after a seq ("since"). Without it,
	// events are delivered as the broker hands them over and a "since"
	// is answered 410.
	ChangeLog streamapi.ChangeLog
	// Log tunes the use of ChangeLog; zero fields take the defaults.
	Log LogOptions
	// RequestTimeout bounds the handling of one WebSocket frame or REST
	// request: its context's deadline, which cancels its statements. A
	// frame's context is also cancelled when its connection closes.
	// Default 10 s; negative means none.
	RequestTimeout time.Duration
	// AllowedOrigins lists the origins (scheme://host[:port]) whose pages
	// may open the WebSocket, besides the server's own host. A handshake
	// whose Origin is neither is refused with 403: a page on another site
	// cannot ride a user's cookies into the socket (cross-site WebSocket
	// hijacking). "*" allows any origin. Clients that send no Origin
	// (programs, not browsers) are not checked.
	AllowedOrigins []string
	// CORSOrigins lists the origins whose pages may call the REST surface
	// from a browser (rs/cors answers the preflight). Empty sends no CORS
	// headers: no cross-origin REST calls. "*" allows any origin without
	// credentials.
	CORSOrigins []string
	// AllowedHosts lists the Host names requests may carry (names, without
	// the port; ".example.com" for a domain and its subdomains; "*" for
	// any). A request with another Host is refused with 400 "Invalid Host
	// header.", on every route. Empty allows any. A server bound to a
	// loopback address should list LoopbackHosts (cmd/streamapi does):
	// otherwise a page that rebinds its own name to 127.0.0.1 can reach it
	// with its own origin.
	AllowedHosts []string
	// Debug serves the debugger page from Handler at /channels-api/.
	Debug bool
	// Logger receives the server's logs; nil uses slog.Default().
	Logger *slog.Logger
}

// ConnLimits are the limits of each WebSocket connection.
type ConnLimits struct {
	// MaxFrameBytes is the largest inbound frame; bigger ones close the
	// connection with 1009. Default 1 MiB.
	MaxFrameBytes int
	// MaxQueue is the outbound queue bound in frames; a client that falls
	// further behind is closed with 1008. Default 1024.
	MaxQueue int
	// MaxQueueBytes bounds the same queue in bytes; past it the client is
	// closed with 1008 too. Default 16 MiB.
	MaxQueueBytes int
	// Rate and Burst cap inbound frames per second per connection, by
	// pausing reads (backpressure). Defaults 200 and 400; negative Rate
	// disables it.
	Rate  float64
	Burst int
	// PingInterval is how long a connection may stay silent before the
	// server pings it; a ping left unanswered for PongTimeout closes it
	// with 1008. A client that answers pings stays connected however long
	// it is idle; a silent one is closed within PingInterval+PongTimeout
	// and one scan (at most half the shorter of the two). Defaults 25 s
	// and 10 s; negative PingInterval disables.
	PingInterval time.Duration
	PongTimeout  time.Duration
	// MaxPending bounds the frames that wait while one is handled; past
	// it the server stops reading the connection until one is done.
	// Default 16.
	MaxPending int
	// MaxSubscriptions caps the subscriptions of one connection (both
	// dialects); one more answers 429 naming the limit, and the
	// connection lives. Default 1000; negative: none.
	MaxSubscriptions int
	// MaxRequestIDBytes caps a request_id's length (its JSON, in bytes);
	// a longer one answers 400 with request_id null. Default 256;
	// negative: none.
	MaxRequestIDBytes int
	// MaxBurst caps the objects one stream sends a user whose membership
	// of a group changed (a relation scope: a board's cards entering or
	// leaving view). A larger group closes that user's connections on the
	// node with 1008; their clients reconnect and list, and a resume from
	// before the change answers 410. Default 10,000; negative: none.
	MaxBurst int
}

// LogOptions tune how a server uses its change log.
type LogOptions struct {
	// Retention is how long the log keeps changes, and so how far back a
	// subscription can resume; older ones are trimmed. Default 24 h;
	// negative keeps them forever.
	Retention time.Duration
	// PollInterval is how often the log is read for changes no broker
	// message announced (a node that crashed between commit and publish).
	// Default 1 s.
	PollInterval time.Duration
	// ResumeLimit caps the events one resumed subscription replays; a
	// client further behind is answered 410. Default 512, and at most half
	// of Conn.MaxQueue.
	ResumeLimit int
	// ResumeScan caps the changes one resume reads from the log to find
	// its events (a subscription to one object reads only that object's,
	// by an index); a client further behind is answered 410 without a
	// read. Default 2 × ResumeLimit.
	ResumeScan int
	// MaxChanges bounds the log by size: each model keeps at most its
	// newest MaxChanges changes, whatever Retention says. Default
	// 1,000,000; negative means no bound.
	MaxChanges int64
}

// Server serves resources over WebSocket.
type Server struct {
	cfg      Config
	log      *slog.Logger
	hub      *hub.Hub
	feed     *feed.Feed
	rest     *rest.Handler
	up       *conn.Upgrader
	streams  []string
	rels     map[string]streamapi.Relation // membership model → its relation
	relDeps  map[string][]relDep           // membership model → the streams whose scopes follow it
	relSeq   map[string]*relPos            // membership model → the seq its index stands at
	cancels  []func()
	draining atomic.Bool
}

// New builds a server and subscribes it to the broker, once per model.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Broker == nil {
		return nil, errors.New("server: Broker is required")
	}
	if len(cfg.Resources) == 0 {
		return nil, errors.New("server: no Resources")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Authenticator == nil {
		cfg.Authenticator = streamapi.Anonymous
	}
	for _, o := range append(append([]string(nil), cfg.AllowedOrigins...), cfg.CORSOrigins...) {
		if err := CheckOrigin(o); err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
	}
	s := &Server{cfg: cfg, log: log, hub: hub.New(log)}
	byStream := make(map[string]streamapi.Resource, len(cfg.Resources))
	models := map[string]bool{}
	for _, r := range cfg.Resources {
		if byStream[r.Stream()] != nil {
			return nil, fmt.Errorf("server: stream %q declared twice", r.Stream())
		}
		r.Init(streamapi.Defaults{PageSize: cfg.PageSize, Permission: cfg.Permission, Query: cfg.Query})
		byStream[r.Stream()] = r
		s.streams = append(s.streams, r.Stream())
		s.hub.Bind(r.Model(), r.Stream())
		if sc, ok := r.(streamapi.Scoper); ok && sc.Scoped() {
			s.hub.BindScope(r.Stream(), sc)
		}
		if ll, ok := r.(streamapi.LiveLister); ok {
			var readTx func(context.Context, func(context.Context) error) error
			if rt, ok := cfg.ChangeLog.(streamapi.ReadTxer); ok {
				readTx = rt.ReadTx // one snapshot for one change's refills
			}
			s.hub.BindLive(r.Stream(), r.Model(), ll, readTx)
		}
		models[r.Model()] = true
	}
	sort.Strings(s.streams)
	// The structs and their tables agree, or start-up fails naming the
	// table, column and field.
	var bad []string
	for _, r := range cfg.Resources {
		if c, ok := r.(streamapi.Checker); ok {
			if err := c.Check(ctx); err != nil {
				bad = append(bad, err.Error())
			}
		}
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("server: %s", strings.Join(bad, "; "))
	}
	if err := s.bindRelations(cfg.Resources, models); err != nil {
		return nil, err
	}
	var err error
	s.rest, err = rest.New(rest.Config{
		Resources:      cfg.Resources,
		Authenticator:  cfg.Authenticator,
		MaxBodyBytes:   int64(cfg.Conn.MaxFrameBytes),
		RequestTimeout: cfg.RequestTimeout,
		Logger:         log,
	})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	deliver := s.deliver
	if cfg.ChangeLog != nil {
		names := make([]string, 0, len(models))
		for m := range models {
			names = append(names, m)
		}
		limit := cfg.Log.ResumeLimit
		if limit <= 0 {
			limit = 512
		}
		if q := cfg.Conn.MaxQueue; q > 0 {
			limit = max(1, min(limit, q/2))
		}
		f, err := feed.New(ctx, cfg.ChangeLog, names, s.deliver, feed.Options{
			PollInterval: cfg.Log.PollInterval,
			Retention:    cfg.Log.Retention,
			MaxChanges:   cfg.Log.MaxChanges,
			ResumeLimit:  limit,
			ResumeScan:   cfg.Log.ResumeScan,
			Logger:       log,
		})
		if err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		s.feed = f
		deliver = f.Receive
	}
	if err := s.loadRelations(ctx); err != nil {
		return nil, err
	}
	// The feed knows where each log ends before the broker delivers: a
	// change committed in between is a gap it fills.
	for model := range models {
		cancel, err := cfg.Broker.Subscribe(ctx, model, deliver)
		if err != nil {
			s.unsubscribe()
			return nil, fmt.Errorf("server: subscribe to %s: %w", model, err)
		}
		s.cancels = append(s.cancels, cancel)
	}
	if s.feed != nil {
		s.feed.Start(ctx)
	}
	m := mux.New(byStream, s.hub, s.feed, log)
	m.SetLimits(mux.Limits{MaxSubscriptions: cfg.Conn.MaxSubscriptions, MaxRequestIDBytes: cfg.Conn.MaxRequestIDBytes})
	if v, ok := cfg.Authenticator.(streamapi.TokenVerifier); ok {
		m.SetVerifier(v)
	}
	s.up = conn.NewUpgrader(m, conn.Options{
		MaxFrameBytes:  cfg.Conn.MaxFrameBytes,
		MaxQueue:       cfg.Conn.MaxQueue,
		MaxQueueBytes:  cfg.Conn.MaxQueueBytes,
		Rate:           cfg.Conn.Rate,
		Burst:          cfg.Conn.Burst,
		PingInterval:   cfg.Conn.PingInterval,
		PongTimeout:    cfg.Conn.PongTimeout,
		MaxPending:     cfg.Conn.MaxPending,
		RequestTimeout: cfg.RequestTimeout,
		Logger:         log,
	})
	return s, nil
}

func (s *Server) unsubscribe() {
	for _, c := range s.cancels {
		c()
	}
	s.cancels = nil
}

// ServeHTTP upgrades the request to a WebSocket and serves it. The
// Authenticator sees the handshake request; its error refuses the
// handshake with 401.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !hostAllowed(r, s.cfg.AllowedHosts) {
		http.Error(w, "Invalid Host header.", http.StatusBadRequest)
		return
	}
	if !s.originAllowed(r) {
		http.Error(w, "Origin not allowed.", http.StatusForbidden)
		return
	}
	user, err := s.cfg.Authenticator.Authenticate(r)
	if err != nil {
		if streamapi.ErrorCode(err) != streamapi.EUNAUTHORIZED {
			s.log.ErrorContext(r.Context(), "authenticate a handshake", "err", err)
			http.Error(w, "Internal server error.", http.StatusInternalServerError)
			return
		}
		http.Error(w, "Authentication failed.", http.StatusUnauthorized)
		return
	}
	if err := s.up.Accept(w, r, user); err != nil && !errors.Is(err, conn.ErrDraining) {
		s.log.DebugContext(r.Context(), "websocket handshake failed", "remote", r.RemoteAddr, "err", err)
	}
}

// originAllowed checks a handshake's Origin: absent, the server's own
// host, or listed in AllowedOrigins.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || slices.Contains(s.cfg.AllowedOrigins, "*") {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false // "null" (sandboxed frames, files) among others
	}
	// The host only, not the scheme: behind a TLS-terminating proxy the
	// request looks like http while the page is https.
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, o := range s.cfg.AllowedOrigins {
		if strings.EqualFold(normalOrigin(o), normalOrigin(origin)) {
			return true
		}
	}
	return false
}

// CheckOrigin returns an error unless o is an origin as AllowedOrigins
// and CORSOrigins take it: scheme://host[:port] with no path, "*", or
// "null".
func CheckOrigin(o string) error {
	if o == "*" || o == "null" {
		return nil
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		strings.TrimSuffix(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q is not an origin: want scheme://host[:port], such as https://app.example.com", o)
	}
	return nil
}

// normalOrigin drops a trailing slash and the scheme's default port, as
// browsers leave it out of Origin.
func normalOrigin(o string) string {
	o = strings.TrimSuffix(o, "/")
	switch {
	case strings.HasPrefix(o, "https://"):
		return strings.TrimSuffix(o, ":443")
	case strings.HasPrefix(o, "http://"):
		return strings.TrimSuffix(o, ":80")
	}
	return o
}

// Debugger returns the debugger page, connecting to socketPath.
func (s *Server) Debugger(socketPath string) http.Handler {
	return debugger.Handler(debugger.Options{SocketPath: socketPath, Streams: s.streams})
}

// REST returns the resources' REST surface (package rest), for mounting
// under a prefix of your choice with http.StripPrefix. It shares the
// server's resources, authenticator and events: a write over REST reaches
// WebSocket subscribers like any other.
func (s *Server) REST() http.Handler { return s.checkHost(s.rest) }

// Handler returns an http.Handler serving the WebSocket at /ws, the REST
// surface under /api/, GET /healthz (200 while serving, 503 once shutting
// down) and, when Debug is set, the debugger page at /channels-api/.
func (s *Server) Handler() http.Handler {
	m := http.NewServeMux()
	m.Handle("/ws", s)
	var api http.Handler = s.rest
	if len(s.cfg.CORSOrigins) > 0 {
		api = cors.New(cors.Options{
			AllowedOrigins:   s.cfg.CORSOrigins,
			AllowedMethods:   []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete},
			AllowedHeaders:   []string{"Authorization", "Content-Type"},
			AllowCredentials: !slices.Contains(s.cfg.CORSOrigins, "*"),
			MaxAge:           600,
		}).Handler(api)
	}
	m.Handle("/api/", http.StripPrefix("/api", api))
	m.Handle("/api", http.RedirectHandler("/api/", http.StatusMovedPermanently))
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if s.draining.Load() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	if s.cfg.Debug {
		m.Handle("/channels-api/", s.Debugger("/ws"))
	}
	return s.checkHost(m)
}

// Connections returns the number of open WebSocket connections.
func (s *Server) Connections() int { return s.up.Len() }

// Subscribers returns the number of connections holding at least one
// subscription.
func (s *Server) Subscribers() int { return s.hub.Peers() }

// Subscriptions returns the number of subscriptions all connections hold.
func (s *Server) Subscriptions() int { return s.hub.Total() }

// Shutdown stops taking frames and connections, lets requests in progress
// finish, writes every queued frame, closes each socket with 1001 and drops
// the broker subscriptions. It returns early with ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	err := s.up.Shutdown(ctx)
	s.unsubscribe()
	if s.feed != nil {
		s.feed.Stop()
	}
	return err
}
