package e2e_test

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/client"
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
