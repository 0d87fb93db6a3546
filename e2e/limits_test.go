package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/client"
	"github.com/streamapi/streamapi/examples/polls"
	"github.com/streamapi/streamapi/internal/testenv"
	"github.com/streamapi/streamapi/resource"
	"github.com/streamapi/streamapi/server"
	"github.com/streamapi/streamapi/store/sqlstore"
)

// slowQuery is a statement that runs for many seconds unless cancelled.
func slowQuery(dialect string) string {
	if dialect == "postgres" {
		return "SELECT pg_sleep(30)"
	}
	return "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM (SELECT x FROM c LIMIT 2000000000)"
}

// slowServer serves the notes resource with a list action "slow" that
// runs slowQuery with the request's context, and reports each run's end
// on ended.
type slowServer struct {
	ws, base string
	db       *sqlstore.DB
	ended    chan error
}

func startSlow(t *testing.T, dsn string, cfg func(*server.Config)) *slowServer {
	t.Helper()
	s := &slowServer{ended: make(chan error, 16)}
	sv := serveOn(t, dsn, (*Note)(nil), func(db *sqlstore.DB) []streamapi.Resource {
		notes, err := resource.New(resource.Config[Note]{
			Stream: "notes", Label: "test.note", Store: db,
			ListActions: []resource.ListAction{{
				Name: "slow",
				Func: func(ctx context.Context, req *streamapi.Request) (any, int, error) {
					_, err := db.Bun().ExecContext(ctx, slowQuery(db.Dialect()))
					s.ended <- err
					return nil, 200, err
				},
			}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return []streamapi.Resource{notes}
	}, cfg)
	s.ws, s.base, s.db = sv.ws, sv.base, sv.db
	return s
}

func eachDSN(t *testing.T, fn func(t *testing.T, dsn string)) {
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			dsn := "sqlite:" + filepath.Join(t.TempDir(), "slow.db")
			if kind == "postgres" {
				dsn = testenv.Postgres(t)
			}
			fn(t, dsn)
		})
	}
}

// waitEnded returns the error the slow statement ended with, failing the
// test if it still runs after within.
func (s *slowServer) waitEnded(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case err := <-s.ended:
		return err
	case <-time.After(within):
		t.Fatalf("the statement still runs %v later", within)
		return nil
	}
}

// TestLimits_RequestTimeout: a request past RequestTimeout has its
// statement cancelled and answers 503, over both surfaces, on both
// databases.
func TestLimits_RequestTimeout(t *testing.T) {
	eachDSN(t, func(t *testing.T, dsn string) {
		s := startSlow(t, dsn, func(c *server.Config) { c.RequestTimeout = 300 * time.Millisecond })
		c, err := client.Dial(tctx(t), s.ws, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		rep, err := c.Request(tctx(t), "notes", client.Payload{Action: "slow"})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Status != 503 || compact(rep.Errors) != `["The request took too long and was stopped."]` {
			t.Errorf("WebSocket: %d %s", rep.Status, rep.Errors)
		}
		if err := s.waitEnded(t, 5*time.Second); !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(strings.ToLower(err.Error()), "cancel") {
			t.Errorf("the statement ended with %v", err)
		}
		t.Logf("WebSocket: answered in %v", time.Since(start).Round(time.Millisecond))
		req, _ := http.NewRequest("POST", s.base+"/api/notes/slow/", nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 503 {
			t.Errorf("REST: %d", res.StatusCode)
		}
		s.waitEnded(t, 5*time.Second)
		// The connection still works.
		if rep, err := c.Request(tctx(t), "notes", client.Payload{Action: "list"}); err != nil || rep.Status != 200 {
			t.Fatalf("after the timeout: %v %v", rep, err)
		}
	})
}

// TestLimits_CloseCancelsStatements: a WebSocket client that closes while
// its request runs has the request's statement cancelled at once, though
// the request has time left.
func TestLimits_CloseCancelsStatements(t *testing.T) {
	eachDSN(t, func(t *testing.T, dsn string) {
		s := startSlow(t, dsn, func(c *server.Config) { c.RequestTimeout = time.Minute })
		c, err := client.Dial(tctx(t), s.ws, nil)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = c.Request(context.Background(), "notes", client.Payload{Action: "slow"})
		}()
		time.Sleep(300 * time.Millisecond) // the statement is running
		closed := time.Now()
		c.Close()
		err = s.waitEnded(t, 5*time.Second)
		if !errors.Is(err, context.Canceled) && (err == nil || !strings.Contains(strings.ToLower(err.Error()), "cancel")) {
			t.Errorf("the statement ended with %v, want cancelled", err)
		}
		t.Logf("statement ended %v after the close: %v", time.Since(closed).Round(time.Millisecond), err)
		wg.Wait()
		if s.db.Dialect() == "postgres" {
			var n int
			row := testenv.SQL(t, dsn).QueryRow("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' AND state = 'active'")
			if err := row.Scan(&n); err != nil || n != 0 {
				t.Errorf("%d pg_sleep statements still active (%v)", n, err)
			}
		}
	})
}

// TestLimits_Subscriptions: a connection holds at most MaxSubscriptions
// subscriptions, both dialects counted; one more is a 429 naming the
// limit and the connection lives; repeating one it holds is free, and an
// unsubscribe makes room.
func TestLimits_Subscriptions(t *testing.T) {
	e := start(t, func(s *server.Config, _ *resource.Config[Note]) { s.Conn.MaxSubscriptions = 5 })
	c := e.dial("")
	q := do(t, c, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "q"}})
	for _, a := range []string{"create", "update", "delete"} {
		do(t, c, "questions", client.Payload{Action: "subscribe", Data: map[string]any{"action": a}}).want(t, 200, "[]")
	}
	do(t, c, "questions", client.Payload{Action: "subscribe_instance", PK: q.id(t), RequestID: "i1"}).want(t, 201, "[]")
	do(t, c, "questions", client.Payload{Action: "subscribe", Data: map[string]any{"action": "update", "pk": q.id(t)}}).want(t, 200, "[]")
	refused := `["Too many subscriptions: at most 5 per connection."]`
	do(t, c, "questions", client.Payload{Action: "subscribe", Data: map[string]any{"action": "delete", "pk": q.id(t)}}).want(t, 429, refused)
	do(t, c, "questions", client.Payload{Action: "subscribe_instance", PK: q.id(t), RequestID: "i2"}).want(t, 429, refused)
	// Held already: no new subscription, no refusal.
	do(t, c, "questions", client.Payload{Action: "subscribe", Data: map[string]any{"action": "create"}}).want(t, 200, "[]")
	do(t, c, "questions", client.Payload{Action: "subscribe_instance", PK: q.id(t), RequestID: "i1"}).want(t, 201, "[]")
	if n := e.srv.Subscriptions(); n != 5 {
		t.Fatalf("%d subscriptions held, want 5", n)
	}
	do(t, c, "questions", client.Payload{Action: "unsubscribe", Data: map[string]any{"action": "create"}}).want(t, 200, "[]")
	do(t, c, "questions", client.Payload{Action: "subscribe_instance", PK: q.id(t), RequestID: "i2"}).want(t, 201, "[]")
	// Another connection has its own allowance.
	do(t, e.dial(""), "questions", client.Payload{Action: "subscribe", Data: map[string]any{"action": "create"}}).want(t, 200, "[]")
}

// TestLimits_RequestIDLength: a request_id of more than MaxRequestIDBytes
// (default 256) is a 400 whose reply does not echo it; the attack
// (anonymous connections making subscribe_instance with 500 KB request
// ids) keeps no subscription and no memory.
func TestLimits_RequestIDLength(t *testing.T) {
	e := start(t)
	c := e.dial("")
	q := do(t, c, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "q"}})
	at := strings.Repeat("r", 254) // 256 bytes of JSON with its quotes
	r := do(t, c, "questions", client.Payload{Action: "subscribe_instance", PK: q.id(t), RequestID: at})
	r.want(t, 201, "[]")
	over := at + "r"
	p := rawReply(t, c, `{"stream":"questions","payload":{"action":"retrieve","pk":1,"request_id":"`+over+`"}}`)
	if string(p["response_status"]) != "400" || string(p["request_id"]) != "null" || compact(p["errors"]) != `[{"request_id":["Ensure this field has no more than 256 bytes."]}]` {
		t.Fatalf("a 257-byte request_id: %v", p)
	}
	big := strings.Repeat("x", 500<<10)
	var wg sync.WaitGroup
	for k := 0; k < 4; k++ {
		a := e.dial("")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				p := rawReply(t, a, `{"stream":"questions","payload":{"action":"subscribe_instance","pk":1,"request_id":"`+big+`"}}`)
				if string(p["response_status"]) != "400" {
					t.Errorf("a 500 KB request_id: %s", p["response_status"])
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := e.srv.Subscriptions(); n != 1 {
		t.Fatalf("%d subscriptions held after the attack, want the 1 made before", n)
	}
}

// TestLimits_QueryCost: search terms, __in values, ordering fields and the
// query's size are bounded, with a 400 naming the parameter, on both
// surfaces; at each limit the list is served. The attack, a
// 130 KB search of 20,000 terms, is refused before any SQL.
func TestLimits_QueryCost(t *testing.T) {
	e := start(t)
	c := e.dial("")
	terms := func(n int) string {
		w := make([]string, n)
		for i := range w {
			w[i] = "t" + strings.Repeat("x", i%5)
		}
		return strings.Join(w, " ")
	}
	values := func(n int) []any {
		out := make([]any, n)
		for i := range out {
			out[i] = "v"
		}
		return out
	}
	ordering := func(n int) string {
		o := make([]string, n)
		for i := range o {
			o[i] = []string{"text", "-owner"}[i%2]
		}
		return strings.Join(o, ",")
	}
	big := strings.Repeat("x", 9000)
	for _, tc := range []struct {
		name string
		data map[string]any
		err  string // "" for served
	}{
		{"16 terms", map[string]any{"search": terms(16)}, ""},
		{"17 terms", map[string]any{"search": terms(17)}, `[{"search":["Ensure this field has no more than 16 terms."]}]`},
		{"20,000 terms", map[string]any{"search": terms(20000)}, `[{"search":["The query is too large: at most 8192 bytes in all."]}]`},
		{"100 values", map[string]any{"text__in": values(100)}, ""},
		{"101 values", map[string]any{"text__in": values(101)}, `[{"text__in":["Ensure this field has no more than 100 values."]}]`},
		{"8 orderings", map[string]any{"ordering": ordering(8)}, ""},
		{"9 orderings", map[string]any{"ordering": ordering(9)}, `[{"ordering":["Ensure this field has no more than 8 items."]}]`},
		{"9000 bytes", map[string]any{"text": big, "owner": "a"}, `[{"text":["The query is too large: at most 8192 bytes in all."]}]`},
	} {
		rep := do(t, c, "notes", client.Payload{Action: "list", Data: tc.data})
		if tc.err == "" {
			rep.want(t, 200, "[]")
		} else {
			rep.want(t, 400, tc.err)
		}
		// The same over REST.
		q := url.Values{}
		for k, v := range tc.data {
			if vs, ok := v.([]any); ok {
				parts := make([]string, len(vs))
				for i := range vs {
					parts[i] = fmt.Sprint(vs[i])
				}
				v = strings.Join(parts, ",")
			}
			q.Set(k, fmt.Sprint(v))
		}
		res, err := http.Get(e.base + "/api/notes/?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		want := 200
		if tc.err != "" {
			want = 400
		}
		if res.StatusCode != want || tc.err != "" && "["+string(body)+"]" != tc.err {
			t.Errorf("REST %s: %d %s", tc.name, res.StatusCode, body)
		}
	}
}

// TestLimits_ResumeReadsBounded: with 3,000 changes in the log, a resume
// from 0 of one object's subscription reads only that object's changes
// (none here: served at once), one of every object is answered 410 without
// reading (3,000 > --resume-scan 1024), and one 10 behind is replayed.
func TestLimits_ResumeReadsBounded(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	err := e.db.Tx(ctx, func(ctx context.Context) error {
		for i := 0; i < 3000; i++ {
			if err := e.app.Questions.Table().Insert(ctx, &polls.Question{QuestionText: "q", PubDate: time.Now()}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c := e.dial("")
	for i := 0; i < 3; i++ {
		start := time.Now()
		do(t, c, "questions", client.Payload{Action: "subscribe", Data: map[string]any{"action": "update", "pk": 999999 + i, "since": 0}}).want(t, 200, "[]")
		t.Logf("since 0, an object with no change among 3,000: %v", time.Since(start).Round(time.Microsecond))
	}
	do(t, c, "questions", client.Payload{Action: "subscribe", Data: map[string]any{"action": "create", "since": 0}}).want(t, 410, `["resync required"]`)
	sub, err := c.SubscribeSince(tctx(t), "questions", "create", nil, 2990)
	if err != nil {
		t.Fatal(err)
	}
	for i := int64(2991); i <= 3000; i++ {
		if ev := next(t, sub); ev.Seq != i {
			t.Fatalf("replayed seq %d, want %d", ev.Seq, i)
		}
	}
}
