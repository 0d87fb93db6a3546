package e2e_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/streamapi/streamapi/auth/jwtauth"
	"github.com/streamapi/streamapi/client"
	"github.com/streamapi/streamapi/resource"
	"github.com/streamapi/streamapi/server"
)

var jwtSecret = []byte("e2e-secret-e2e-secret-e2e-secret")

// withJWT serves with the JWT authenticator (HS256, a leeway of 1 ms so
// that expiry tests need not wait 30 s).
func withJWT(t *testing.T) option {
	a, err := jwtauth.New(jwtauth.Config{Secret: jwtSecret, Leeway: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return func(s *server.Config, _ *resource.Config[Note]) { s.Authenticator = a }
}

func token(t *testing.T, sub string, ttl time.Duration) string {
	t.Helper()
	tok, err := jwtauth.Sign(jwtSecret, sub, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func dialWith(t *testing.T, e *env, url string, opts *client.Options) (*client.Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, url, opts)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// TestAuth_TokenPlaces: the handshake takes the token in the query, in the
// subprotocols, or in the Authorization header, and the connection's user
// is its subject.
func TestAuth_TokenPlaces(t *testing.T) {
	e := start(t, withJWT(t))
	tok := token(t, "alice", time.Hour)
	for name, dial := range map[string]func() (*client.Client, error){
		"query": func() (*client.Client, error) { return dialWith(t, e, e.ws+"?token="+tok, nil) },
		"subprotocol": func() (*client.Client, error) {
			return dialWith(t, e, e.ws, &client.Options{Subprotocols: []string{"bearer", tok}})
		},
		"header": func() (*client.Client, error) {
			return dialWith(t, e, e.ws, &client.Options{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
		},
	} {
		c, err := dial()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		r := do(t, c, "notes", client.Payload{Action: "create", Data: map[string]any{"text": name}})
		r.want(t, 201, "[]")
		if r.obj(t)["owner"] != "alice" {
			t.Errorf("%s: note owner %v, want alice", name, r.obj(t)["owner"])
		}
	}
	// Anonymous without a token: reads, but may not write.
	c, err := dialWith(t, e, e.ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	do(t, c, "notes", client.Payload{Action: "create", Data: map[string]any{"text": "x"}}).want(t, 401, `["Permission Denied"]`)
	// REST: the Authorization header.
	req, _ := http.NewRequest("POST", e.base+"/api/notes/", strings.NewReader(`{"text":"rest"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != 201 {
		t.Fatalf("REST with a bearer token: %v %v", res, err)
	}
	res.Body.Close()
}

// TestAuth_BadTokens: an expired token, a bad signature and an unsigned
// "alg": "none" token are refused at the handshake (401) and over REST.
func TestAuth_BadTokens(t *testing.T) {
	e := start(t, withJWT(t))
	expired := token(t, "alice", -time.Minute)
	forged, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte("not-the-secret-not-the-secret-xx"))
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	for name, tok := range map[string]string{"expired": expired, "bad signature": forged, "alg none": none} {
		if _, err := dialWith(t, e, e.ws+"?token="+tok, nil); err == nil || !strings.Contains(err.Error(), "401") {
			t.Errorf("%s token: dial %v, want a 401", name, err)
		}
		req, _ := http.NewRequest("GET", e.base+"/api/notes/", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := http.DefaultClient.Do(req)
		if err != nil || res.StatusCode != 401 {
			t.Fatalf("%s token over REST: %v %v", name, res, err)
		}
		res.Body.Close()
	}
}

// TestAuth_ExpiryAndRenewal: a connection does not keep its rights past its
// token's expiry: it is closed with 4401 "token expired", unless the client
// sent a fresh token with "authenticate" before.
func TestAuth_ExpiryAndRenewal(t *testing.T) {
	e := start(t, withJWT(t))
	short := token(t, "alice", 2*time.Second)

	expiring, err := dialWith(t, e, e.ws+"?token="+short, nil)
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := dialWith(t, e, e.ws+"?token="+short, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := tctx(t)
	auth := func(c *client.Client, tok string) reply {
		return do(t, c, "auth", client.Payload{Action: "authenticate", Data: map[string]any{"token": tok}})
	}
	r := auth(renewed, token(t, "alice", time.Hour))
	r.want(t, 200, "[]")
	if r.obj(t)["user"] != "alice" || r.obj(t)["expires"] == nil {
		t.Errorf("authenticate reply %s", r.Data)
	}
	// Refusals leave the connection and its user as they were.
	auth(renewed, token(t, "bob", time.Hour)).want(t, 403, `["The token is for another user."]`)
	auth(renewed, "x.y.z").want(t, 401, `["Invalid token."]`)
	auth(renewed, "").want(t, 400, `[{"token":["This field is required."]}]`)

	select {
	case <-expiring.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a connection outlived its token by 10 s")
	}
	if code := expiring.CloseStatus(); code != 4401 {
		t.Fatalf("close code %d, want 4401", code)
	}
	// Give the renewed connection's first timer, had it not been stopped,
	// time to fire too.
	time.Sleep(time.Second)
	// The renewed connection is still open, and still alice's.
	r2, err := renewed.Request(ctx, "notes", client.Payload{Action: "create", Data: map[string]any{"text": "still here"}})
	if err != nil || r2.Status != 201 || !strings.Contains(string(r2.Data), `"owner":"alice"`) {
		t.Fatalf("after the first token's expiry: %v %v", r2, err)
	}
	// Without a token authenticator, the action does not exist.
	plain := start(t)
	c := plain.dial("")
	do(t, c, "auth", client.Payload{Action: "authenticate", Data: map[string]any{"token": short}}).want(t, 400, `["This server does not take tokens."]`)
}

// TestAuth_Origin: a browser page from another site may not open the
// socket (cross-site WebSocket hijacking); the server's own pages, listed
// origins and non-browser clients may.
func TestAuth_Origin(t *testing.T) {
	e := start(t, func(s *server.Config, _ *resource.Config[Note]) {
		s.AllowedOrigins = []string{"https://app.example.com", "https://admin.example.com:443/"}
	})
	dialOrigin := func(origin string) error {
		_, err := dialWith(t, e, e.ws, &client.Options{HTTPHeader: http.Header{"Origin": {origin}}})
		return err
	}
	if err := dialOrigin("https://evil.example.com"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("cross-origin handshake: %v, want a 403", err)
	}
	if err := dialOrigin("null"); err == nil {
		t.Error("a handshake with Origin null was accepted")
	}
	if err := dialOrigin(e.base); err != nil {
		t.Errorf("same-origin handshake: %v", err)
	}
	if err := dialOrigin("https://app.example.com"); err != nil {
		t.Errorf("listed origin: %v", err)
	}
	if err := dialOrigin("https://admin.example.com"); err != nil {
		t.Errorf("listed with its default port and a slash: %v", err)
	}
	if err := dialOrigin("https://app.example.com.evil.com"); err == nil {
		t.Error("a listed origin's prefix let another host in")
	}
	if _, err := dialWith(t, e, e.ws, nil); err != nil {
		t.Errorf("no Origin (not a browser): %v", err)
	}
}

// TestAuth_CORS: REST sends no CORS headers unless origins are listed.
func TestAuth_CORS(t *testing.T) {
	preflight := func(e *env) *http.Response {
		req, _ := http.NewRequest("OPTIONS", e.base+"/api/notes/", nil)
		req.Header.Set("Origin", "https://app.example.com")
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	if res := preflight(start(t)); res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("CORS allowed by default: %v", res.Header)
	}
	e := start(t, func(s *server.Config, _ *resource.Config[Note]) { s.CORSOrigins = []string{"https://app.example.com"} })
	res := preflight(e)
	if res.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" || !strings.Contains(res.Header.Get("Access-Control-Allow-Methods"), "POST") {
		t.Errorf("preflight from a listed origin: %d %v", res.StatusCode, res.Header)
	}
}
