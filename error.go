package streamapi

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Error codes. Each surface (WebSocket, REST) maps them to a status with one
// table of its own; handlers never pick status numbers.
const (
	EINVALID       = "invalid"        // bad input: 400
	ENOTFOUND      = "not_found"      // no such object or page: 404
	EUNAUTHORIZED  = "unauthorized"   // permission denied to an anonymous user: 401
	EFORBIDDEN     = "forbidden"      // permission denied to an authenticated user: 403
	ETOOMANY       = "too_many"       // rate limited: 429
	ECONFLICT      = "conflict"       // a constraint refused the write: 409
	EINTERNAL      = "internal"       // anything else: 500
	EUNKNOWNACTION = "unknown_action" // the resource offers no such action: 400
	EGONE          = "gone"           // a resume point the change log no longer holds: 410
	ETIMEOUT       = "timeout"        // the request ran out of its time (RequestTimeout): 503
)

// Error is the error type every layer returns. Fields, when set, holds
// validation messages keyed by JSON field name; Message holds the text for
// everything else.
type Error struct {
	Code    string
	Message string
	Fields  map[string][]string
	// Items holds validation messages of a list's or map's elements, by
	// field, then by element index (or map key) as text: DRF's
	// {"labels": {"1": ["..."]}}. A field in Items is sent with its
	// elements' messages in place of its own Fields entry.
	Items map[string]map[string][]string
}

// FieldDetail returns the validation messages as clients get them (the
// dictionary of a 400): Fields, each field in Items as the dictionary of
// its elements' messages. Nil when there are none.
func (e *Error) FieldDetail() map[string]any {
	if len(e.Fields) == 0 && len(e.Items) == 0 {
		return nil
	}
	out := make(map[string]any, len(e.Fields)+len(e.Items))
	for name, msgs := range e.Fields {
		out[name] = msgs
	}
	for name, items := range e.Items {
		out[name] = items
	}
	return out
}

func (e *Error) Error() string {
	if len(e.Fields) == 0 && len(e.Items) == 0 {
		return fmt.Sprintf("streamapi: %s: %s", e.Code, e.Message)
	}
	var names []string
	msgs := map[string][]string{}
	for name, m := range e.Fields {
		if e.Items[name] == nil {
			names = append(names, name)
			msgs[name] = m
		}
	}
	for name, items := range e.Items {
		for key, m := range items {
			n := name + "[" + key + "]"
			names = append(names, n)
			msgs[n] = m
		}
	}
	sort.Strings(names)
	var b strings.Builder
	for i, name := range names {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(name + ": " + strings.Join(msgs[name], " "))
	}
	return fmt.Sprintf("streamapi: %s: %s", e.Code, b.String())
}

// Errorf returns an *Error with the given code and formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// FieldErrors collects validation messages per field; its Err method returns
// nil when it is empty.
type FieldErrors map[string][]string

// Add appends a message for a field.
func (f FieldErrors) Add(field, message string) { f[field] = append(f[field], message) }

// Err returns an EINVALID *Error holding the messages, or nil when there are none.
func (f FieldErrors) Err() error {
	if len(f) == 0 {
		return nil
	}
	return &Error{Code: EINVALID, Fields: map[string][]string(f)}
}

// ErrorCode returns the code of err if it is or wraps an *Error, and
// EINTERNAL otherwise (nil gives "").
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// Common errors with the original Channels API texts.
var (
	ErrNotFound      = &Error{Code: ENOTFOUND, Message: "Not found."}
	ErrInvalidAction = &Error{Code: EUNKNOWNACTION, Message: "Invalid Action"}
	ErrInvalidPage   = &Error{Code: ENOTFOUND, Message: "Invalid page."}
	// ErrResyncRequired answers a subscription that cannot resume from the
	// seq it gave ("since"): the client must reload what it shows.
	ErrResyncRequired = &Error{Code: EGONE, Message: "resync required"}
	// ErrTimeout answers a request stopped at its deadline: its
	// statements were cancelled, and a write rolled back.
	ErrTimeout = &Error{Code: ETIMEOUT, Message: "The request took too long and was stopped."}
	// ErrRetry, returned (or wrapped) by code running inside Store.Tx,
	// rolls the transaction back and runs it again, as a conflict the
	// store detects does, a bounded number of times: for code that finds,
	// once it holds its locks, that what it read before them has changed
	// (a card moved to another column). Past the bound the write answers
	// 409, as for any contention.
	ErrRetry = &Error{Code: ECONFLICT, Message: "The write conflicts with concurrent writes; try again."}
)

// Timeout returns ErrTimeout when err is a bare context deadline (a
// request that ran out of time), and err otherwise: surfaces call it
// before mapping an error to a status, so that a deadline is a 503, not a
// 500.
func Timeout(err error) error {
	if err != nil && ErrorCode(err) == EINTERNAL && errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w (%v)", ErrTimeout, err)
	}
	return err
}

// PermissionDenied returns the error for a refused action: EUNAUTHORIZED (401)
// for an anonymous user, EFORBIDDEN (403) for an authenticated one, both with
// the text "Permission Denied".
func PermissionDenied(u *User) *Error {
	if u.Authenticated() {
		return &Error{Code: EFORBIDDEN, Message: "Permission Denied"}
	}
	return &Error{Code: EUNAUTHORIZED, Message: "Permission Denied"}
}
