// Package e2e_test drives a real streamapi server (the polls app on SQLite,
// plus a test resource) over real WebSockets with the client package.
package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/broker/memory"
	"github.com/streamapi/streamapi/client"
	"github.com/streamapi/streamapi/examples/polls"
	"github.com/streamapi/streamapi/resource"
	"github.com/streamapi/streamapi/server"
	"github.com/streamapi/streamapi/store/sqlstore"
	"github.com/uptrace/bun"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// database/sql keeps one opener goroutine per pool until Close; the
		// pools are closed in Cleanup, but the checker also sees those of
		// a pool being closed concurrently.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}

// Note is the test resource: an owned note with a custom list action
// ("count") and detail action ("shout"), writable by authenticated users.
type Note struct {
	bun.BaseModel `bun:"table:notes" json:"-"`
	ID            int64  `bun:"id,pk,autoincrement" json:"id"`
	Text          string `bun:"text,notnull" json:"text" validate:"required,max=20"`
	Owner         string `bun:"owner,notnull" json:"owner" streamapi:"readonly"`
}

// env is one running server.
type env struct {
	t     *testing.T
	ws    string // ws://.../ws
	base  string // http://...
	db    *sqlstore.DB
	app   *polls.App
	notes *resource.Resource[Note]
	srv   *server.Server
}

type option func(*server.Config, *resource.Config[Note])

// start serves the polls app and the notes resource on a fresh SQLite file.
// The handshake's ?user= query parameter names the user (none: anonymous).
func start(t *testing.T, opts ...option) *env {
	t.Helper()
	return startWith(t, nil, opts...)
}

// startWith is start with the store's options changed by store first.
func startWith(t *testing.T, store func(*sqlstore.Options), opts ...option) *env {
	t.Helper()
	ctx := context.Background()
	broker := memory.New()
	sopts := sqlstore.Options{Publisher: broker}
	if store != nil {
		store(&sopts)
	}
	db, err := sqlstore.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "e2e.db"), sopts)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(ctx, polls.Migrations()); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Bun().NewCreateTable().Model((*Note)(nil)).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	app, err := polls.New(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	ncfg := resource.Config[Note]{
		Stream: "notes",
		Label:  "test.note",
		Store:  db,
		// Anyone reads; only authenticated users write.
		Permission: streamapi.PermissionFunc(func(_ context.Context, u *streamapi.User, action string, _ any) bool {
			switch action {
			case streamapi.ActionRetrieve, streamapi.ActionList, streamapi.ActionSubscribe,
				streamapi.ActionUnsubscribe, streamapi.ActionSubscribeInstance, streamapi.ActionUnsubscribeInstance, "count":
				return true
			}
			return u.Authenticated()
		}),
		PageSize: 2,
		// Every text lookup, for the query tests.
		Filters: map[string][]string{
			"text":  {"exact", "in", "contains", "icontains", "startswith", "gt", "lt"},
			"owner": {"exact", "isnull"},
		},
		Search:   []string{"text", "owner"},
		Ordering: []string{"text", "owner"},
		// The owner is set by the server, from the connection's user.
		Defaults: func(ctx context.Context, n *Note) {
			if u := streamapi.UserFrom(ctx); u != nil {
				n.Owner = u.ID
			}
		},
		ListActions: []resource.ListAction{{
			Name: "Count", WireName: "count", Safe: true,
			Func: func(ctx context.Context, req *streamapi.Request) (any, int, error) {
				var all []Note
				if err := db.Bun().NewSelect().Model(&all).Scan(ctx); err != nil {
					return nil, 0, err
				}
				return map[string]int{"count": len(all)}, 200, nil
			},
		}},
		DetailActions: []resource.DetailAction[Note]{{
			Name: "Shout", // no wire name: "Shout" on the wire
			Func: func(ctx context.Context, req *streamapi.Request, n *Note) (any, int, error) {
				if n.Owner != req.User.ID {
					return nil, 0, streamapi.PermissionDenied(req.User)
				}
				n.Text = strings.ToUpper(n.Text)
				return n, 202, nil
			},
		}},
	}
	scfg := server.Config{
		Broker:    broker,
		ChangeLog: db,
		Authenticator: streamapi.AuthenticatorFunc(func(r *http.Request) (*streamapi.User, error) {
			switch id := r.URL.Query().Get("user"); id {
			case "":
				return nil, nil
			case "mallory":
				return nil, streamapi.Errorf(streamapi.EUNAUTHORIZED, "no")
			default:
				return &streamapi.User{ID: id}, nil
			}
		}),
		Debug: true,
	}
	for _, o := range opts {
		o(&scfg, &ncfg)
	}
	notes, err := resource.New(ncfg)
	if err != nil {
		t.Fatal(err)
	}
	scfg.Resources = append(app.Resources(), notes)
	srv, err := server.New(ctx, scfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		hs.Close()
		broker.Close()
		db.Close()
	})
	return &env{
		t: t, ws: "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws", base: hs.URL,
		db: db, app: app, notes: notes, srv: srv,
	}
}

// dial opens a client as user ("" for anonymous).
func (e *env) dial(user string) *client.Client {
	e.t.Helper()
	u := e.ws
	if user != "" {
		u += "?user=" + user
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, u, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// longCtx is a context for one request that may wait for contended writes.
func longCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// reply is a decoded reply frame with its payload kept raw for exact checks.
type reply struct {
	*client.Reply
	keys []string // the payload's keys, in order
}

// do sends one request and returns its reply.
func do(t *testing.T, c *client.Client, stream string, p client.Payload) reply {
	t.Helper()
	rep, err := c.Request(tctx(t), stream, p)
	if err != nil {
		t.Fatalf("%s %s: %v", stream, p.Action, err)
	}
	return reply{Reply: rep, keys: payloadKeys(t, rep.Raw)}
}

// payloadKeys returns the keys of frame's payload in the order sent.
func payloadKeys(t *testing.T, frame []byte) []string {
	t.Helper()
	var top struct {
		Payload json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(frame, &top); err != nil {
		t.Fatalf("frame %s: %v", frame, err)
	}
	dec := json.NewDecoder(bytes.NewReader(top.Payload))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("payload %s is not an object", top.Payload)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

var replyKeys = []string{"action", "data", "errors", "response_status", "request_id"}

// instanceReplyKeys are those of a subscribe_instance's 201 with a change
// log: its seq sits where an event's does.
var instanceReplyKeys = []string{"action", "data", "errors", "response_status", "seq", "request_id"}

// want checks a reply's status and errors (as compact JSON).
func (r reply) want(t *testing.T, status int, errs string) {
	t.Helper()
	keys := replyKeys
	if r.Action == "subscribe_instance" && r.Status == 201 && len(r.keys) == len(instanceReplyKeys) {
		keys = instanceReplyKeys
	}
	if strings.Join(r.keys, ",") != strings.Join(keys, ",") {
		t.Errorf("payload keys %v, want %v", r.keys, keys)
	}
	if r.Status != status || compact(r.Errors) != errs {
		t.Fatalf("status %d errors %s, want %d %s (frame %s)", r.Status, r.Errors, status, errs, r.Raw)
	}
	if status >= 400 && compact(r.Data) != "null" {
		t.Errorf("error reply carries data %s, want null", r.Data)
	}
}

// sameJSON reports whether a and b hold the same JSON value, whatever the
// key order.
func sameJSON(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return mustJSON(x) == mustJSON(y)
}

func compact(raw []byte) string {
	if len(raw) == 0 {
		return "null"
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}

// obj decodes a reply's data as an object.
func (r reply) obj(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Data, &m); err != nil {
		t.Fatalf("data %s: %v", r.Data, err)
	}
	return m
}

// id returns the data's "id".
func (r reply) id(t *testing.T) int64 {
	t.Helper()
	return int64(r.obj(t)["id"].(float64))
}

// next returns the next event of sub, failing after a timeout.
func next(t *testing.T, sub *client.Subscription) client.Event {
	t.Helper()
	select {
	case ev, ok := <-sub.C:
		if !ok {
			t.Fatal("subscription closed")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5 s")
	}
	panic("unreachable")
}

// none checks that sub has no event waiting. Callers make it meaningful by
// first receiving an event that was published after the one that must not
// exist: one connection's events arrive in commit order.
func none(t *testing.T, sub *client.Subscription, why string) {
	t.Helper()
	select {
	case ev := <-sub.C:
		t.Fatalf("%s: unexpected event %s", why, ev.Raw)
	default:
	}
}

// mustSubscribe subscribes c to action on stream (pk nil: any object).
func mustSubscribe(t *testing.T, c *client.Client, stream, action string, pk any) *client.Subscription {
	t.Helper()
	sub, err := c.Subscribe(tctx(t), stream, action, pk)
	if err != nil {
		t.Fatalf("subscribe %s %s: %v", stream, action, err)
	}
	return sub
}

// rawReply sends frame as is and returns the next frame that matched no
// request: the reply to it.
func rawReply(t *testing.T, c *client.Client, frame string) map[string]json.RawMessage {
	t.Helper()
	if err := c.SendRaw(tctx(t), []byte(frame)); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-c.Unmatched():
		var top map[string]json.RawMessage
		if err := json.Unmarshal(b, &top); err != nil {
			t.Fatalf("reply %s: %v", b, err)
		}
		var p map[string]json.RawMessage
		if err := json.Unmarshal(top["payload"], &p); err != nil {
			t.Fatalf("reply %s: %v", b, err)
		}
		p["stream"] = top["stream"]
		return p
	case <-c.Done():
		t.Fatalf("connection closed after %s: %v", frame, c.Err())
	case <-time.After(5 * time.Second):
		t.Fatalf("no reply to %s", frame)
	}
	return nil
}

// eventually polls cond until it holds or 5 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

var errBoom = errors.New("boom")

func fmtID(id int64) string { return fmt.Sprint(id) }

// served is one resource served on its own store.
type served struct {
	ws, base string
	db       *sqlstore.DB
	srv      *server.Server
}

// serveOn opens a store on dsn, creates the table of model (a pointer to
// a struct), and serves the resources build declares on it, with the
// in-process broker and the change log, until the test ends; cfg, when
// not nil, changes the server's configuration first.
func serveOn(t *testing.T, dsn string, model any, build func(db *sqlstore.DB) []streamapi.Resource, cfg func(*server.Config)) *served {
	t.Helper()
	ctx := context.Background()
	broker := memory.New()
	db, err := sqlstore.Open(ctx, dsn, sqlstore.Options{Publisher: broker})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Bun().NewCreateTable().Model(model).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	scfg := server.Config{Resources: build(db), Broker: broker, ChangeLog: db}
	if cfg != nil {
		cfg(&scfg)
	}
	srv, err := server.New(ctx, scfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		_ = srv.Shutdown(ctx)
		hs.Close()
		broker.Close()
		db.Close()
	})
	return &served{ws: "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws", base: hs.URL, db: db, srv: srv}
}
