package streamapi_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/streamapi/streamapi"
)

func TestErrorCode(t *testing.T) {
	wrapped := fmt.Errorf("get: %w", streamapi.ErrNotFound)
	for err, want := range map[error]string{
		nil:                             "",
		errors.New("driver exploded"):   streamapi.EINTERNAL,
		wrapped:                         streamapi.ENOTFOUND,
		streamapi.ErrInvalidAction:      streamapi.EUNKNOWNACTION,
		streamapi.PermissionDenied(nil): streamapi.EUNAUTHORIZED,
		streamapi.PermissionDenied(&streamapi.User{ID: "u"}): streamapi.EFORBIDDEN,
		streamapi.PermissionDenied(&streamapi.User{}):        streamapi.EUNAUTHORIZED, // no ID: anonymous
	} {
		if got := streamapi.ErrorCode(err); got != want {
			t.Errorf("ErrorCode(%v) = %q, want %q", err, got, want)
		}
	}
}

func TestFieldErrors(t *testing.T) {
	errs := streamapi.FieldErrors{}
	if errs.Err() != nil {
		t.Fatal("empty FieldErrors is an error")
	}
	errs.Add("b", "two")
	errs.Add("a", "one")
	errs.Add("a", "again")
	err := errs.Err()
	if streamapi.ErrorCode(err) != streamapi.EINVALID {
		t.Fatalf("code %q", streamapi.ErrorCode(err))
	}
	if got, want := err.Error(), "streamapi: invalid: a: one again; b: two"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
}

func TestFrame(t *testing.T) {
	f := streamapi.Frame{Head: []byte(`{"a":`), Mid: []byte(`"r"`), Tail: []byte(`}`)}
	if string(f.Bytes()) != `{"a":"r"}` || f.Len() != 9 {
		t.Fatalf("Bytes %s Len %d", f.Bytes(), f.Len())
	}
	one := streamapi.Frame{Head: []byte("x")}
	if &one.Bytes()[0] != &one.Head[0] {
		t.Error("a one-part frame was copied")
	}
}

func TestEncodePK(t *testing.T) {
	if got := string(streamapi.EncodePK(int64(7))); got != "7" {
		t.Errorf("EncodePK(7) = %s", got)
	}
	if got := string(streamapi.EncodePK("a\"b")); got != `"a\"b"` {
		t.Errorf("EncodePK(string) = %s", got)
	}
	if got := string(streamapi.EncodePK(func() {})); got != "null" {
		t.Errorf("EncodePK(func) = %s", got)
	}
}
