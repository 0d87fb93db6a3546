package streamapi

import (
	"context"
	"net/http"
	"time"
)

// User is who makes a request. A nil *User is the anonymous user.
type User struct {
	// ID identifies the user, e.g. a JWT's "sub" claim. Empty means anonymous.
	ID string
	// Claims holds whatever else the authenticator learned (roles, names).
	Claims map[string]any
	// Expires is when the credentials behind the user expire (a token's
	// exp); zero means never. A WebSocket connection does not keep the
	// user's rights past it (docs/auth.md).
	Expires time.Time
}

// Authenticated reports whether u is a known user; it is false for nil.
func (u *User) Authenticated() bool { return u != nil && u.ID != "" }

// Authenticator finds the user behind an HTTP request: the WebSocket
// handshake, or a REST request. It returns (nil, nil) for an anonymous
// request and an error (an EUNAUTHORIZED *Error, typically) to refuse it.
type Authenticator interface {
	Authenticate(r *http.Request) (*User, error)
}

// AuthenticatorFunc adapts a function to Authenticator, e.g. to reuse an
// application's existing sessions.
type AuthenticatorFunc func(r *http.Request) (*User, error)

// Authenticate calls f(r).
func (f AuthenticatorFunc) Authenticate(r *http.Request) (*User, error) { return f(r) }

// TokenVerifier is implemented by authenticators whose credentials are
// tokens: a WebSocket client renews its rights in-band by sending a fresh
// token with the "authenticate" action (docs/auth.md).
type TokenVerifier interface {
	Verify(token string) (*User, error)
}

// Anonymous is the default Authenticator: everyone is anonymous.
var Anonymous Authenticator = AuthenticatorFunc(func(*http.Request) (*User, error) { return nil, nil })

type userKey struct{}

// WithUser returns a context carrying u.
func WithUser(ctx context.Context, u *User) context.Context {
	return context.WithValue(ctx, userKey{}, u)
}

// UserFrom returns the user carried by ctx, or nil (anonymous).
func UserFrom(ctx context.Context) *User {
	u, _ := ctx.Value(userKey{}).(*User)
	return u
}
