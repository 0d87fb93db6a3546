package rest_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/rest"
)

// fake answers every action with err, and lists two objects.
type fake struct {
	err  error
	seen *streamapi.Request
}

func (f *fake) Stream() string          { return "things" }
func (f *fake) Model() string           { return "t.thing" }
func (f *fake) Init(streamapi.Defaults) {}
func (f *fake) Serve(_ context.Context, req *streamapi.Request) streamapi.Reply {
	f.seen = req
	if f.err != nil {
		return streamapi.Reply{Err: f.err}
	}
	return streamapi.Reply{Status: 200, Data: map[string]string{"ok": "<&>"}}
}
func (f *fake) Authorize(context.Context, *streamapi.User, string, any) error { return nil }
func (f *fake) ParsePK(raw json.RawMessage) (any, error)                      { return string(raw), nil }
func (f *fake) Exists(context.Context, any) (bool, error)                     { return true, nil }
func (f *fake) Offers(string) bool                                            { return true }
func (f *fake) CustomActions() []streamapi.ActionInfo {
	return []streamapi.ActionInfo{{Name: "ping", Safe: true}, {Name: "poke", Detail: true}}
}
func (f *fake) ListPage(context.Context, *streamapi.Request, map[string][]string) (streamapi.Page, error) {
	if f.err != nil {
		return streamapi.Page{}, f.err
	}
	return streamapi.Page{Results: []int{1, 2}, Count: 2, Number: 1}, nil
}

func get(t *testing.T, h http.Handler, method, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, strings.TrimSpace(string(b))
}

// TestStatuses: each error code has its HTTP status and DRF's body; an
// internal error's text is logged, never sent.
func TestStatuses(t *testing.T) {
	cases := []struct {
		err    error
		status int
		body   string
	}{
		{streamapi.ErrNotFound, 404, `{"detail":"Not found."}`},
		{streamapi.ErrInvalidPage, 404, `{"detail":"Invalid page."}`},
		{(streamapi.FieldErrors{"a": {"bad"}}).Err(), 400, `{"a":["bad"]}`},
		{streamapi.Errorf(streamapi.EINVALID, "nope"), 400, `{"detail":"nope"}`},
		{streamapi.PermissionDenied(nil), 401, `{"detail":"Authentication credentials were not provided."}`},
		{streamapi.PermissionDenied(&streamapi.User{ID: "u"}), 403, `{"detail":"You do not have permission to perform this action."}`},
		{&streamapi.Error{Code: streamapi.ECONFLICT, Message: "The write conflicts with existing data."}, 409, `{"detail":"The write conflicts with existing data."}`},
		{streamapi.ErrResyncRequired, 410, `{"detail":"resync required"}`},
		{streamapi.Errorf(streamapi.ETOOMANY, "Request was throttled."), 429, `{"detail":"Request was throttled."}`},
		{errors.New("pq: password=secret"), 500, `{"detail":"Internal server error."}`},
	}
	for _, c := range cases {
		var logs strings.Builder
		h, err := rest.New(rest.Config{Resources: []streamapi.Resource{&fake{err: c.err}}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{"/things/1/", "/things/"} {
			status, body := get(t, h, "GET", path)
			if status != c.status || body != c.body {
				t.Errorf("%v on GET %s: %d %s, want %d %s", c.err, path, status, body, c.status, c.body)
			}
		}
		if c.status == 500 && !strings.Contains(logs.String(), "password=secret") {
			t.Errorf("internal error not logged: %q", logs.String())
		}
	}
}

func TestRoutesToActions(t *testing.T) {
	f := &fake{}
	h, err := rest.New(rest.Config{Resources: []streamapi.Resource{f}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ method, path, action, pk, data string }{
		{"GET", "/things/7/", "retrieve", `"7"`, ""},
		{"PUT", "/things/7", "update", `"7"`, ""},
		{"PATCH", "/things/a%20b/", "patch", `"a b"`, ""},
		{"DELETE", "/things/7/", "delete", `"7"`, ""},
		{"POST", "/things/ping/", "ping", "", ""},
		{"GET", "/things/ping/?x=1&x=2", "ping", "", `{"x":"2"}`},
		{"POST", "/things/7/poke/", "poke", `"7"`, ""},
	} {
		f.seen = nil
		status, body := get(t, h, c.method, c.path)
		if f.seen == nil || f.seen.Action != c.action || string(f.seen.PK) != c.pk || string(f.seen.Data) != c.data {
			t.Errorf("%s %s: %d %s; request %+v, want action %s pk %s data %s", c.method, c.path, status, body, f.seen, c.action, c.pk, c.data)
		}
		if c.method == "DELETE" {
			if status != 204 || body != "" {
				t.Errorf("DELETE: %d %q, want 204 and no body", status, body)
			}
		} else if body != `{"ok":"<&>"}` {
			t.Errorf("%s %s: body %s (REST does not escape <, > and &)", c.method, c.path, body)
		}
	}
	// A detail action on the collection, or a list action on an object,
	// does not exist; nor does GET of an action that is not safe.
	for _, c := range []struct {
		method, path string
		status       int
	}{{"POST", "/things/poke/", 405}, {"POST", "/things/7/ping/", 404}, {"GET", "/things/7/poke/", 405}} {
		if status, body := get(t, h, c.method, c.path); status != c.status {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, status, body, c.status)
		}
	}
	if _, err := rest.New(rest.Config{Resources: []streamapi.Resource{f, f}}); err == nil {
		t.Error("New accepted a stream declared twice")
	}
}
