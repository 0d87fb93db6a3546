// Package jwtauth is a streamapi.Authenticator for JWT bearer tokens
// (golang-jwt): HS256 with a shared secret, or RS256 / ES256 with a public
// key. A token must carry an expiry ("exp"); the user is its "sub" claim.
//
// It finds the token where each surface can send one:
//
//	Authorization: Bearer TOKEN             REST, and WebSocket clients that set headers
//	?token=TOKEN                            the WebSocket handshake from a browser
//	Sec-WebSocket-Protocol: bearer, TOKEN   the same, without the token in the URL
//
// A request with no token is anonymous (unless Config.Required); a request
// with a bad one is refused. docs/auth.md has the trade-offs of each place.
package jwtauth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/streamapi/streamapi"
)

// Config configures an Authenticator. Set exactly one of Secret and
// PublicKey.
type Config struct {
	// Secret verifies HS256 tokens.
	Secret []byte
	// PublicKey verifies RS256 (*rsa.PublicKey) or ES256 (*ecdsa.PublicKey)
	// tokens.
	PublicKey crypto.PublicKey
	// Leeway tolerates clock skew on exp, nbf and iat; zero means 30 s.
	Leeway time.Duration
	// Issuer and Audience, when set, must match the iss and aud claims.
	Issuer, Audience string
	// Required refuses requests that carry no token, instead of treating
	// them as anonymous.
	Required bool
}

// Authenticator verifies JWT bearer tokens.
type Authenticator struct {
	cfg    Config
	key    any
	parser *jwt.Parser
}

var _ streamapi.Authenticator = (*Authenticator)(nil)

// Subprotocol is the WebSocket subprotocol that announces a token: a
// client offers ["bearer", TOKEN], and the server selects "bearer".
const Subprotocol = "bearer"

// New returns an Authenticator for cfg.
func New(cfg Config) (*Authenticator, error) {
	a := &Authenticator{cfg: cfg}
	var method string
	switch k := cfg.PublicKey.(type) {
	case nil:
		if len(cfg.Secret) == 0 {
			return nil, errors.New("jwtauth: set Secret (HS256) or PublicKey (RS256, ES256)")
		}
		if len(cfg.Secret) < 32 {
			return nil, errors.New("jwtauth: an HS256 secret needs at least 32 bytes")
		}
		a.key, method = cfg.Secret, jwt.SigningMethodHS256.Alg()
	case *rsa.PublicKey:
		a.key, method = k, jwt.SigningMethodRS256.Alg()
	case *ecdsa.PublicKey:
		a.key, method = k, jwt.SigningMethodES256.Alg()
	default:
		return nil, fmt.Errorf("jwtauth: unsupported public key %T (want *rsa.PublicKey or *ecdsa.PublicKey)", cfg.PublicKey)
	}
	if cfg.PublicKey != nil && len(cfg.Secret) > 0 {
		return nil, errors.New("jwtauth: set Secret or PublicKey, not both")
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = 30 * time.Second
	}
	opts := []jwt.ParserOption{
		// One algorithm, fixed by the key: "alg": "none" and algorithm
		// confusion (an HS256 token signed with an RSA public key) fail.
		jwt.WithValidMethods([]string{method}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithIssuedAt(),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	a.cfg = cfg
	a.parser = jwt.NewParser(opts...)
	return a, nil
}

// Authenticate implements streamapi.Authenticator.
func (a *Authenticator) Authenticate(r *http.Request) (*streamapi.User, error) {
	tok := Token(r)
	if tok == "" {
		if a.cfg.Required {
			return nil, errNoToken
		}
		return nil, nil
	}
	return a.Verify(tok)
}

var errNoToken = &streamapi.Error{Code: streamapi.EUNAUTHORIZED, Message: "Authentication credentials were not provided."}

// Verify checks a token and returns its user, whose Expires is the token's
// expiry plus the leeway. Every failure is an EUNAUTHORIZED error whose message says why
// without echoing the token.
func (a *Authenticator) Verify(token string) (*streamapi.User, error) {
	claims := jwt.MapClaims{}
	_, err := a.parser.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return a.key, nil })
	if err != nil {
		msg := "Invalid token."
		if errors.Is(err, jwt.ErrTokenExpired) {
			msg = "Token has expired."
		}
		return nil, &streamapi.Error{Code: streamapi.EUNAUTHORIZED, Message: msg}
	}
	sub, err := claims.GetSubject()
	if err != nil || sub == "" {
		return nil, &streamapi.Error{Code: streamapi.EUNAUTHORIZED, Message: "Token has no subject."}
	}
	exp, _ := claims.GetExpirationTime()
	u := &streamapi.User{ID: sub, Claims: map[string]any(claims)}
	if exp != nil {
		// A token accepted within the leeway keeps its rights that long.
		u.Expires = exp.Time.Add(a.cfg.Leeway)
	}
	return u, nil
}

// Token returns the bearer token of r: from the Authorization header, the
// "token" query parameter, or a Sec-WebSocket-Protocol offer of "bearer"
// followed by the token; "" when there is none.
func Token(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if scheme, tok, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
	}
	if tok := r.URL.Query().Get("token"); tok != "" {
		return tok
	}
	var offered []string
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(h, ",") {
			offered = append(offered, strings.TrimSpace(p))
		}
	}
	for i, p := range offered {
		if p == Subprotocol && i+1 < len(offered) {
			return offered[i+1]
		}
	}
	return ""
}

// Sign returns an HS256 token for sub that expires after ttl, for tests
// and development (cmd/streamapi prints one at start).
func Sign(secret []byte, sub string, ttl time.Duration) (string, error) {
	now := time.Now()
	return jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": sub,
		"iat": now.Unix(),
		"exp": now.Add(ttl).Unix(),
	}).SignedString(secret)
}
