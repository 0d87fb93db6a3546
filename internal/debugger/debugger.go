// Package debugger serves the browser page for trying streamapi requests by hand.
//
// The page opens a WebSocket to the server, leaves it in window.ws so that
// requests can be typed in the browser console, and logs every frame sent and
// received. It is the counterpart of the channels-api debugger page.
package debugger

import (
	"bytes"
	"crypto/rand"
	_ "embed"
	"html/template"
	"net/http"
	"strconv"
	"strings"
)

// Options configures the page.
type Options struct {
	// SocketPath is the path of the WebSocket endpoint, e.g. "/ws". The page connects to ws(s)://<page host><SocketPath>.
	SocketPath string
	// Streams lists the stream names offered in the form.
	Streams []string
}

// DefaultSocketPath is used when Options.SocketPath is empty.
const DefaultSocketPath = "/ws"

//go:embed page.html
var pageSource string

var pageTemplate = template.Must(template.New("page.html").Parse(pageSource))

// pageConfig is marshalled as JSON into a <script type="application/json">
// block; html/template escapes it for that context.
type pageConfig struct {
	SocketPath string   `json:"socketPath"`
	Streams    []string `json:"streams"`
}

type pageData struct {
	Nonce  string
	Config pageConfig
}

type handler struct {
	config pageConfig
}

// Handler returns an http.Handler serving the page (GET/HEAD only; other methods 405 with Allow header). It serves the page for any path it is mounted at.
func Handler(opts Options) http.Handler {
	cfg := pageConfig{
		SocketPath: opts.SocketPath,
		Streams:    append([]string{}, opts.Streams...),
	}
	if cfg.SocketPath == "" {
		cfg.SocketPath = DefaultSocketPath
	}
	return &handler{config: cfg}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
		return
	}

	// A fresh nonce per response authorises the page's own inline script and
	// style and nothing else.
	nonce := rand.Text()
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, pageData{Nonce: nonce, Config: h.config}); err != nil {
		http.Error(w, "debugger: rendering page failed", http.StatusInternalServerError)
		return
	}

	hdr := w.Header()
	hdr.Set("Content-Type", "text/html; charset=utf-8")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Content-Security-Policy", contentSecurityPolicy(nonce, r.Host))
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
}

// contentSecurityPolicy allows the page's own script and style, and sockets
// to its own host only ('self' covers ws: and wss: only in CSP level 3
// browsers, so the host is named too).
func contentSecurityPolicy(nonce, host string) string {
	sockets := "'self'"
	if plainHost(host) {
		sockets += " ws://" + host + " wss://" + host
	}
	return "default-src 'none'; " +
		"script-src 'nonce-" + nonce + "'; " +
		"style-src 'nonce-" + nonce + "'; " +
		"connect-src " + sockets + "; " +
		"img-src data:; " +
		"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}

// plainHost reports whether host is a host[:port] made of letters, digits,
// dots, dashes, colons and brackets only, safe to place in a header.
func plainHost(host string) bool {
	if host == "" {
		return false
	}
	for _, r := range host {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune(".-:[]", r):
		default:
			return false
		}
	}
	return true
}
