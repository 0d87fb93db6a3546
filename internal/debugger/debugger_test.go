package debugger

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const evilStream = `</script><script>alert(1)</script>`

func serve(t *testing.T, h http.Handler, method, target string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec
}

var configRE = regexp.MustCompile(`(?s)<script type="application/json" id="debugger-config">(.*?)</script>`)

// pageConfigOf extracts and decodes the JSON configuration block of the page.
func pageConfigOf(t *testing.T, body string) pageConfig {
	t.Helper()
	m := configRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("config block not found in page")
	}
	var cfg pageConfig
	if err := json.Unmarshal([]byte(m[1]), &cfg); err != nil {
		t.Fatalf("config block is not valid JSON: %v\n%s", err, m[1])
	}
	return cfg
}

func TestGetServesPage(t *testing.T) {
	h := Handler(Options{SocketPath: "/api/ws", Streams: []string{"questions", "choices"}})
	rec := serve(t, h, http.MethodGet, "/debug/")
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d, want 200", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q", cc)
	}
	body := rec.Body.String()
	if !strings.HasPrefix(body, "<!DOCTYPE html>") {
		t.Errorf("body does not start with a doctype: %.40q", body)
	}
	for _, want := range []string{`"/api/ws"`, `"questions"`, `"choices"`} {
		if !strings.Contains(body, want) {
			t.Errorf("body does not contain %s", want)
		}
	}
	cfg := pageConfigOf(t, body)
	if cfg.SocketPath != "/api/ws" || strings.Join(cfg.Streams, ",") != "questions,choices" {
		t.Errorf("config = %+v", cfg)
	}
	if got, want := rec.Header().Get("Content-Length"), len(body); got == "" || got != strconv.Itoa(want) {
		t.Errorf("Content-Length = %q, body is %d bytes", got, want)
	}
}

func TestServesAnyPath(t *testing.T) {
	h := Handler(Options{SocketPath: "/ws"})
	for _, p := range []string{"/", "/debugger", "/a/b/c?x=1"} {
		if rec := serve(t, h, http.MethodGet, p); rec.Code != http.StatusOK {
			t.Errorf("GET %s: status %d", p, rec.Code)
		}
	}
}

func TestStreamNamesEscaped(t *testing.T) {
	h := Handler(Options{SocketPath: `/ws"></script>`, Streams: []string{"questions", evilStream, `a&b'"`}})
	body := serve(t, h, http.MethodGet, "/").Body.String()
	for _, bad := range []string{evilStream, "<script>alert(1)", `/ws"></script>`} {
		if strings.Contains(body, bad) {
			t.Errorf("page contains unescaped %q", bad)
		}
	}
	// Exactly the two real scripts: the config block and the page's own script.
	if n := strings.Count(body, "<script"); n != 2 {
		t.Errorf("page has %d <script tags, want 2", n)
	}
	// The values survive the round trip intact.
	cfg := pageConfigOf(t, body)
	if cfg.SocketPath != `/ws"></script>` {
		t.Errorf("socketPath = %q", cfg.SocketPath)
	}
	if len(cfg.Streams) != 3 || cfg.Streams[1] != evilStream || cfg.Streams[2] != `a&b'"` {
		t.Errorf("streams = %q", cfg.Streams)
	}
}

func TestDefaultsAndCopy(t *testing.T) {
	streams := []string{"questions"}
	h := Handler(Options{Streams: streams})
	streams[0] = "mutated"
	cfg := pageConfigOf(t, serve(t, h, http.MethodGet, "/").Body.String())
	if cfg.SocketPath != DefaultSocketPath {
		t.Errorf("socketPath = %q, want %q", cfg.SocketPath, DefaultSocketPath)
	}
	if len(cfg.Streams) != 1 || cfg.Streams[0] != "questions" {
		t.Errorf("streams = %q; Handler must copy Options.Streams", cfg.Streams)
	}

	body := serve(t, Handler(Options{}), http.MethodGet, "/").Body.String()
	if !strings.Contains(body, `"streams":[]`) {
		t.Errorf("nil Streams should render as an empty array")
	}
}

func TestHead(t *testing.T) {
	rec := serve(t, Handler(Options{SocketPath: "/ws"}), http.MethodHead, "/")
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d", rec.Code)
	}
	if rec.Body.Len() != 0 {
		t.Errorf("HEAD wrote %d body bytes", rec.Body.Len())
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("Content-Type = %q", ct)
	}
}

func TestOtherMethodsNotAllowed(t *testing.T) {
	h := Handler(Options{SocketPath: "/ws"})
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodOptions} {
		rec := serve(t, h, m, "/")
		if rec.Code != http.StatusMethodNotAllowed {
			t.Errorf("%s: status = %d, want 405", m, rec.Code)
		}
		allow := rec.Header().Get("Allow")
		if !strings.Contains(allow, "GET") || !strings.Contains(allow, "HEAD") {
			t.Errorf("%s: Allow = %q", m, allow)
		}
		if strings.Contains(rec.Body.String(), "<script") {
			t.Errorf("%s: 405 response contains the page", m)
		}
	}
}

var nonceAttrRE = regexp.MustCompile(`<(script|style) nonce="([^"]+)">`)

func TestContentSecurityPolicy(t *testing.T) {
	h := Handler(Options{SocketPath: "/ws"})
	rec := serve(t, h, http.MethodGet, "/")
	csp := rec.Header().Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "connect-src 'self' ws://example.com wss://example.com;", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Host = "a;script-src"
	hostile := httptest.NewRecorder()
	h.ServeHTTP(hostile, req)
	if got := hostile.Header().Get("Content-Security-Policy"); strings.Contains(got, "a;script-src") || !strings.Contains(got, "connect-src 'self';") {
		t.Errorf("a hostile Host reached the CSP: %q", got)
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("CSP should rely on a nonce: %q", csp)
	}
	body := rec.Body.String()
	tags := nonceAttrRE.FindAllStringSubmatch(body, -1)
	if len(tags) != 2 {
		t.Fatalf("found %d nonce'd script/style tags, want 2", len(tags))
	}
	for _, tag := range tags {
		if !strings.Contains(csp, tag[1]+"-src 'nonce-"+tag[2]+"'") {
			t.Errorf("%s nonce %q not allowed by CSP %q", tag[1], tag[2], csp)
		}
	}
	// Every executable script carries the nonce; the only other is the JSON block.
	if n := strings.Count(body, "<script"); n != 2 {
		t.Errorf("%d script tags", n)
	}
	again := serve(t, h, http.MethodGet, "/").Header().Get("Content-Security-Policy")
	if again == csp {
		t.Errorf("nonce is reused across responses")
	}
}

func TestNoExternalResources(t *testing.T) {
	body := serve(t, Handler(Options{SocketPath: "/ws"}), http.MethodGet, "/").Body.String()
	if m := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//`).FindString(body); m != "" {
		t.Errorf("page loads an external resource: %q", m)
	}
	if strings.Contains(body, "style=\"") {
		t.Errorf("inline style attributes are blocked by the CSP")
	}
}

func TestPageScript(t *testing.T) {
	body := serve(t, Handler(Options{SocketPath: "/ws"}), http.MethodGet, "/").Body.String()
	checks := map[string]string{
		"assigns window.ws":          `window\.ws\s*=\s*\w`,
		"opens a WebSocket":          `new WebSocket\(`,
		"wraps send":                 `\.send\s*=\s*function`,
		"chooses wss under https":    `"wss://"`,
		"reads the config block":     `getElementById\("debugger-config"\)`,
		"parses the data field":      `JSON\.parse\(text\)`,
		"renders frames as text":     `\.textContent\s*=`,
		"colours by response_status": `response_status`,
	}
	for what, re := range checks {
		if !regexp.MustCompile(re).MatchString(body) {
			t.Errorf("page script does not %s (/%s/)", what, re)
		}
	}
	if strings.Contains(body, "innerHTML") {
		t.Errorf("page uses innerHTML; frames must be rendered with textContent")
	}
	for _, a := range []string{"create", "retrieve", "update", "patch", "delete", "list", "subscribe", "unsubscribe", "subscribe_instance", "unsubscribe_instance"} {
		if !regexp.MustCompile(`<option( selected)?>` + a + `</option>`).MatchString(body) {
			t.Errorf("action %q missing from the form", a)
		}
	}
	for _, id := range []string{"f-stream", "f-action", "f-pk", "f-data", "f-rid"} {
		if !strings.Contains(body, `<label for="`+id+`"`) {
			t.Errorf("input %s has no label", id)
		}
	}
}
