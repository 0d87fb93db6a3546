package jwtauth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/auth/jwtauth"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func claims(sub string, exp time.Duration) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{"sub": sub, "iat": now.Unix(), "exp": now.Add(exp).Unix()}
}

// refused checks that Verify refuses tok with EUNAUTHORIZED and msg.
func refused(t *testing.T, a *jwtauth.Authenticator, tok, msg, why string) {
	t.Helper()
	u, err := a.Verify(tok)
	if err == nil || streamapi.ErrorCode(err) != streamapi.EUNAUTHORIZED || !strings.Contains(err.Error(), msg) {
		t.Errorf("%s: Verify = %v, %v; want unauthorized %q", why, u, err, msg)
	}
}

func TestHS256(t *testing.T) {
	a, err := jwtauth.New(jwtauth.Config{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, jwt.SigningMethodHS256, secret, claims("alice", time.Hour))
	u, err := a.Verify(tok)
	if err != nil || u.ID != "alice" || time.Until(u.Expires) < 60*time.Minute {
		t.Fatalf("Verify = %+v, %v", u, err)
	}
	refused(t, a, sign(t, jwt.SigningMethodHS256, []byte("another secret, also 32 bytes ok"), claims("alice", time.Hour)), "Invalid token.", "bad signature")
	refused(t, a, sign(t, jwt.SigningMethodHS256, secret, claims("alice", -time.Minute)), "Token has expired.", "expired a minute ago")
	if _, err := a.Verify(sign(t, jwt.SigningMethodHS256, secret, claims("alice", -10*time.Second))); err != nil {
		t.Errorf("expired 10 s ago, within the 30 s leeway: %v", err)
	}
	refused(t, a, sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice"}), "Invalid token.", "no exp")
	refused(t, a, sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix()}), "Token has no subject.", "no sub")
	refused(t, a, sign(t, jwt.SigningMethodHS384, secret, claims("alice", time.Hour)), "Invalid token.", "HS384")
	refused(t, a, sign(t, jwt.SigningMethodHS512, secret, claims("alice", time.Hour)), "Invalid token.", "HS512")
	// "alg": "none", unsigned.
	none := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims("alice", time.Hour))
	refused(t, a, none, "Invalid token.", "alg none")
	refused(t, a, "not.a.token", "Invalid token.", "garbage")
	refused(t, a, "", "Invalid token.", "empty")
}

func TestRS256AndES256(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ra, err := jwtauth.New(jwtauth.Config{PublicKey: &rk.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	ea, err := jwtauth.New(jwtauth.Config{PublicKey: &ek.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	if u, err := ra.Verify(sign(t, jwt.SigningMethodRS256, rk, claims("bob", time.Hour))); err != nil || u.ID != "bob" {
		t.Fatalf("RS256: %v %v", u, err)
	}
	if u, err := ea.Verify(sign(t, jwt.SigningMethodES256, ek, claims("carol", time.Hour))); err != nil || u.ID != "carol" {
		t.Fatalf("ES256: %v %v", u, err)
	}
	refused(t, ra, sign(t, jwt.SigningMethodES256, ek, claims("bob", time.Hour)), "Invalid token.", "ES256 token to an RS256 key")
	// The same RSA key with another algorithm (PS256, RS512): only the
	// parser's one valid method refuses these, not the key type.
	refused(t, ra, sign(t, jwt.SigningMethodPS256, rk, claims("bob", time.Hour)), "Invalid token.", "PS256 with the RSA key")
	refused(t, ra, sign(t, jwt.SigningMethodRS512, rk, claims("bob", time.Hour)), "Invalid token.", "RS512 with the RSA key")
	// Algorithm confusion: an HS256 token whose secret is the RSA public key.
	pub, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	refused(t, ra, sign(t, jwt.SigningMethodHS256, pub, claims("bob", time.Hour)), "Invalid token.", "HS256 signed with the public key")
}

func TestConfigErrors(t *testing.T) {
	for why, cfg := range map[string]jwtauth.Config{
		"nothing":      {},
		"short secret": {Secret: []byte("short")},
		"both":         {Secret: secret, PublicKey: &ecdsa.PublicKey{}},
		"unknown key":  {PublicKey: "pem text"},
	} {
		if _, err := jwtauth.New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", why, cfg)
		}
	}
}

func TestTokenPlaces(t *testing.T) {
	a, _ := jwtauth.New(jwtauth.Config{Secret: secret})
	tok := sign(t, jwt.SigningMethodHS256, secret, claims("alice", time.Hour))
	header := httptest.NewRequest("GET", "/api/notes/", nil)
	header.Header.Set("Authorization", "Bearer "+tok)
	query := httptest.NewRequest("GET", "/ws?token="+tok, nil)
	proto := httptest.NewRequest("GET", "/ws", nil)
	proto.Header.Set("Sec-WebSocket-Protocol", "bearer, "+tok)
	for name, req := range map[string]*http.Request{"header": header, "query": query, "subprotocol": proto} {
		u, err := a.Authenticate(req)
		if err != nil || u == nil || u.ID != "alice" {
			t.Errorf("token in the %s: %v, %v", name, u, err)
		}
	}
	anon, err := a.Authenticate(httptest.NewRequest("GET", "/", nil))
	if anon != nil || err != nil {
		t.Errorf("no token: %v, %v; want anonymous", anon, err)
	}
	bad := httptest.NewRequest("GET", "/?token=x.y.z", nil)
	if _, err := a.Authenticate(bad); streamapi.ErrorCode(err) != streamapi.EUNAUTHORIZED {
		t.Errorf("bad token: %v", err)
	}
	req, _ := jwtauth.New(jwtauth.Config{Secret: secret, Required: true})
	if _, err := req.Authenticate(httptest.NewRequest("GET", "/", nil)); streamapi.ErrorCode(err) != streamapi.EUNAUTHORIZED {
		t.Errorf("Required without a token: %v", err)
	}
}
