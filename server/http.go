package server

import (
	"net"
	"net/http"
	"strings"
	"time"
)

// HTTPLimits are the timeouts and sizes of the HTTP server in front of a
// Server: without them a client that sends a request slowly, or keeps an
// idle connection, holds a connection (and a file) for ever. Zero fields
// take the defaults; a negative duration means none.
type HTTPLimits struct {
	// ReadHeaderTimeout bounds reading a request's headers. Default 10 s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included. Default
	// 30 s.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a response, from the end of the
	// request's headers. Default 30 s. A WebSocket is not bound by it,
	// nor by ReadTimeout: once upgraded, its deadlines are its own.
	WriteTimeout time.Duration
	// IdleTimeout bounds how long a keep-alive connection waits for its
	// next request. Default 120 s: longer than the usual load balancer's
	// idle timeout (60 s), so that the balancer, not the server, closes
	// idle connections and never sends a request on one being closed.
	IdleTimeout time.Duration
	// MaxHeaderBytes caps a request's headers, its URL included. Default
	// 64 KiB.
	MaxHeaderBytes int
}

// WithDefaults returns l with its zero fields set to the defaults.
func (l HTTPLimits) WithDefaults() HTTPLimits {
	def := func(d *time.Duration, v time.Duration) {
		switch {
		case *d == 0:
			*d = v
		case *d < 0:
			*d = 0 // none, for net/http
		}
	}
	def(&l.ReadHeaderTimeout, 10*time.Second)
	def(&l.ReadTimeout, 30*time.Second)
	def(&l.WriteTimeout, 30*time.Second)
	def(&l.IdleTimeout, 120*time.Second)
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = 64 << 10
	}
	return l
}

// NewHTTPServer returns an http.Server for h with l's limits.
//
//	hs := server.NewHTTPServer(api.Handler(), server.HTTPLimits{})
//	go hs.Serve(listener)
func NewHTTPServer(h http.Handler, l HTTPLimits) *http.Server {
	l = l.WithDefaults()
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
	}
}

// LoopbackHosts are the host names a server bound to a loopback address
// accepts by default: a page on another site that rebinds its own name to
// 127.0.0.1 (DNS rebinding) sends its own name as Host, and is refused.
var LoopbackHosts = []string{"localhost", ".localhost", "127.0.0.1", "::1"}

// IsLoopback reports whether the listen address addr (host:port) is on a
// loopback interface only.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// hostAllowed reports whether the request's Host is one of allowed:
// names, compared without the port and case; ".example.com" also allows
// its subdomains; "*" allows any. Empty allows any.
func hostAllowed(r *http.Request, allowed []string) bool {
	if len(allowed) == 0 {
		return true
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	for _, a := range allowed {
		a = strings.ToLower(a)
		switch {
		case a == "*", a == host:
			return true
		case strings.HasPrefix(a, ".") && (host == a[1:] || strings.HasSuffix(host, a)):
			return true
		}
	}
	return false
}

// checkHost refuses requests whose Host is not allowed, as Django's
// ALLOWED_HOSTS does: 400 "Invalid Host header."
func (s *Server) checkHost(next http.Handler) http.Handler {
	if len(s.cfg.AllowedHosts) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hostAllowed(r, s.cfg.AllowedHosts) {
			http.Error(w, "Invalid Host header.", http.StatusBadRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}
