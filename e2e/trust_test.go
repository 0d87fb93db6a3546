package e2e_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/auth/jwtauth"
	"github.com/streamapi/streamapi/client"
	"github.com/streamapi/streamapi/internal/testenv"
	"github.com/streamapi/streamapi/resource"
	"github.com/streamapi/streamapi/store/sqlstore"
	"github.com/uptrace/bun"
)

// Trust under real conditions (issue 11): concurrent writers on the same
// rows, on both databases. SQLite's single writer hides races that
// PostgreSQL's concurrent transactions show, so each test runs on both.

// pollsOn serves the polls app with tokens on, on SQLite or on a fresh
// PostgreSQL database.
func pollsOn(t *testing.T, dbKind string) *pollsAuth {
	t.Helper()
	a, err := jwtauth.New(jwtauth.Config{Secret: jwtSecret})
	if err != nil {
		t.Fatal(err)
	}
	var p *testenv.Polls
	if dbKind == "postgres" {
		p = testenv.PollsServerOn(t, testenv.Postgres(t), testenv.PollsAuth(a))
	} else {
		p = testenv.PollsServer(t, testenv.PollsAuth(a))
	}
	return &pollsAuth{ws: p.WS, base: p.Base}
}

func eachDB(t *testing.T, fn func(t *testing.T, p *pollsAuth)) {
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) { fn(t, pollsOn(t, kind)) })
	}
}

// request sends one request with a generous deadline (contended writes
// wait for each other) and returns its reply.
func request(t *testing.T, c *client.Client, stream string, p client.Payload) *client.Reply {
	t.Helper()
	rep, err := c.Request(longCtx(t), stream, p)
	if err != nil {
		t.Errorf("%s %s: %v", stream, p.Action, err)
		return &client.Reply{Status: -1}
	}
	return rep
}

// pollWithChoices creates a question owned by owner with n choices and
// returns the question's id and the choices' ids.
func pollWithChoices(t *testing.T, c *client.Client, n int) (int64, []int64) {
	t.Helper()
	q := do(t, c, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "Which?"}})
	q.want(t, 201, "[]")
	var ids []int64
	for i := 0; i < n; i++ {
		r := do(t, c, "choices", client.Payload{Action: "create", Data: map[string]any{"question": q.id(t), "choice_text": fmt.Sprint("choice ", i)}})
		r.want(t, 201, "[]")
		ids = append(ids, r.id(t))
	}
	return q.id(t), ids
}

// TestTrust_VotesWhileToggling: 20 users vote on the choices of one
// question while its owner toggles published 100 times. Every vote answered
// 200 is stored: the owner's writes, which rewrite the choices'
// copy of the question's visibility, never revert a vote.
func TestTrust_VotesWhileToggling(t *testing.T) {
	eachDB(t, func(t *testing.T, p *pollsAuth) {
		owner := p.dial(t, "owner")
		for round := 1; round <= 3; round++ {
			votesWhileToggling(t, p, owner, round)
		}
	})
}

func votesWhileToggling(t *testing.T, p *pollsAuth, owner *client.Client, round int) {
	{
		qid, choices := pollWithChoices(t, owner, 3)
		var acked atomic.Int64
		statuses := sync.Map{} // status → count, for the failure message
		count := func(st int) {
			v, _ := statuses.LoadOrStore(st, new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for u := 0; u < 20; u++ {
			voter := p.dial(t, fmt.Sprint("voter", u))
			defer voter.Close()
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					rep := request(t, voter, "choices", client.Payload{Action: "vote", PK: choices[(u+i)%len(choices)]})
					count(rep.Status)
					switch rep.Status {
					case 200:
						acked.Add(1)
					case 404: // the question is unpublished just now
					default:
						t.Errorf("vote: %d %s", rep.Status, rep.Errors)
						return
					}
				}
			}()
		}
		for i := 0; i < 100; i++ {
			rep := request(t, owner, "questions", client.Payload{Action: "patch", PK: qid, Data: map[string]any{"published": i%2 == 1}})
			if rep.Status != 200 {
				t.Fatalf("toggle %d: %d %s", i, rep.Status, rep.Errors)
			}
		}
		close(stop)
		wg.Wait()
		var stored int64
		for _, id := range choices {
			rep := request(t, owner, "choices", client.Payload{Action: "retrieve", PK: id})
			var c struct {
				Votes             int64 `json:"votes"`
				QuestionPublished bool  `json:"question_published"`
			}
			if err := json.Unmarshal(rep.Data, &c); err != nil {
				t.Fatalf("retrieve choice %d: %d %s", id, rep.Status, rep.Raw)
			}
			stored += c.Votes
			if !c.QuestionPublished {
				t.Errorf("choice %d: question_published false after the last toggle published the question", id)
			}
		}
		var seen []string
		statuses.Range(func(k, v any) bool {
			seen = append(seen, fmt.Sprintf("%v×%d", k, v.(*atomic.Int64).Load()))
			return true
		})
		t.Logf("round %d: votes acknowledged %d, stored %d (replies %s)", round, acked.Load(), stored, strings.Join(seen, " "))
		if acked.Load() == 0 {
			t.Fatal("no vote was acknowledged: the test tested nothing")
		}
		if stored != acked.Load() {
			t.Errorf("round %d: votes: %d acknowledged, %d stored", round, acked.Load(), stored)
		}
	}
}

// TestTrust_PatchWhileToggling: the owner patches a choice while toggling
// its question from another connection. The two writes touch the same two
// rows in opposite orders; none of them may fail (a deadlock is retried,
// never answered 500), and the choice ends with its question's visibility.
func TestTrust_PatchWhileToggling(t *testing.T) {
	eachDB(t, func(t *testing.T, p *pollsAuth) {
		a, b := p.dial(t, "owner"), p.dial(t, "owner")
		qid, choices := pollWithChoices(t, a, 1)
		start := time.Now()
		var wg sync.WaitGroup
		var failed atomic.Int64
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := 0; i < 120; i++ {
				rep := request(t, a, "choices", client.Payload{Action: "patch", PK: choices[0], Data: map[string]any{"choice_text": fmt.Sprint("text ", i)}})
				if rep.Status != 200 {
					failed.Add(1)
					t.Errorf("patch %d: %d %s", i, rep.Status, rep.Errors)
				}
			}
		}()
		go func() {
			defer wg.Done()
			for i := 0; i < 120; i++ {
				rep := request(t, b, "questions", client.Payload{Action: "patch", PK: qid, Data: map[string]any{"published": i%2 == 1}})
				if rep.Status != 200 {
					failed.Add(1)
					t.Errorf("toggle %d: %d %s", i, rep.Status, rep.Errors)
				}
			}
		}()
		wg.Wait()
		t.Logf("240 writes in %v, %d failed", time.Since(start).Round(time.Millisecond), failed.Load())
		rep := request(t, a, "choices", client.Payload{Action: "retrieve", PK: choices[0]})
		var c struct {
			Text              string `json:"choice_text"`
			QuestionPublished bool   `json:"question_published"`
		}
		if err := json.Unmarshal(rep.Data, &c); err != nil {
			t.Fatal(err)
		}
		if c.Text != "text 119" || !c.QuestionPublished {
			t.Errorf("the choice ended as %s", rep.Data)
		}
	})
}

// Cell is the model of the concurrent property test: one column per
// writer, and a counter two writers increment.
type Cell struct {
	bun.BaseModel `bun:"table:cells" json:"-"`
	ID            int64 `bun:"id,pk,autoincrement" json:"id"`
	A             int64 `bun:"a,notnull" json:"a"`
	B             int64 `bun:"b,notnull" json:"b"`
	C             int64 `bun:"c,notnull" json:"c"`
	D             int64 `bun:"d,notnull" json:"d"`
	E             int64 `bun:"e,notnull" json:"e"`
	F             int64 `bun:"f,notnull" json:"f"`
	N             int64 `bun:"n,notnull" json:"n"`
}

// cellsServer serves the cells resource on dsn with two custom actions:
// "set_d" (detail: d from data, on the locked object) and "set_e" (list:
// lists every cell in the transaction, unlocked, sets e on one and writes
// it back, as a hook keeping rows in step does), and "incr" (detail: n+1).
func cellsServer(t *testing.T, dsn string) (ws, base string, db *sqlstore.DB, cells *resource.Resource[Cell]) {
	t.Helper()
	s := serveOn(t, dsn, (*Cell)(nil), func(d *sqlstore.DB) []streamapi.Resource {
		db = d
		var err error
		if cells, err = newCells(db); err != nil {
			t.Fatal(err)
		}
		return []streamapi.Resource{cells}
	}, nil)
	return s.ws, s.base, db, cells
}

func newCells(db *sqlstore.DB) (cells *resource.Resource[Cell], err error) {
	cells, err = resource.New(resource.Config[Cell]{
		Stream: "cells", Label: "test.cell", Store: db,
		DetailActions: []resource.DetailAction[Cell]{{
			Name: "set_d",
			Func: func(ctx context.Context, req *streamapi.Request, c *Cell) (any, int, error) {
				var in struct{ V int64 }
				if err := json.Unmarshal(req.Data, &in); err != nil {
					return nil, 0, streamapi.Errorf(streamapi.EINVALID, "data")
				}
				c.D = in.V
				return c, 200, cells.Table().Update(ctx, c)
			},
		}, {
			Name: "incr",
			Func: func(ctx context.Context, req *streamapi.Request, c *Cell) (any, int, error) {
				c.N++
				return c, 200, cells.Table().Update(ctx, c)
			},
		}},
		ListActions: []resource.ListAction{{
			Name: "set_e",
			Func: func(ctx context.Context, req *streamapi.Request) (any, int, error) {
				var in struct{ ID, V int64 }
				if err := json.Unmarshal(req.Data, &in); err != nil {
					return nil, 0, streamapi.Errorf(streamapi.EINVALID, "data")
				}
				err := db.Tx(ctx, func(ctx context.Context) error {
					all, err := cells.List(ctx, streamapi.ListQuery{})
					if err != nil {
						return err
					}
					for i := range all {
						if all[i].ID == in.ID {
							all[i].E = in.V
							return cells.Table().Update(ctx, &all[i])
						}
					}
					return streamapi.ErrNotFound
				})
				return nil, 200, err
			},
		}},
	})
	return cells, err
}

// TestTrust_ConcurrentFieldWriters is the lost-update property: writers
// that each own one column write increasing values to the same rows, each
// through another write path (WebSocket patch, REST patch, a Go
// transaction reading without a lock, a custom detail action, a custom
// list action that lists and writes back, plain SQL from another
// connection), while two more increment one counter, one through a locked
// detail action and one through an unlocked Go read-modify-write. Every
// acknowledged value survives: each column ends at its writer's last
// acknowledged value, and the counter at the number of acknowledged
// increments.
func TestTrust_ConcurrentFieldWriters(t *testing.T) {
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			dsn := "sqlite:" + filepath.Join(t.TempDir(), "cells.db")
			if kind == "postgres" {
				dsn = testenv.Postgres(t)
			}
			ws, base, db, cells := cellsServer(t, dsn)
			ctx := longCtx(t)
			const rows, writes = 3, 60
			for i := 0; i < rows; i++ {
				if err := cells.Table().Insert(ctx, &Cell{}); err != nil {
					t.Fatal(err)
				}
			}
			dialWS := func() *client.Client {
				c, err := client.Dial(ctx, ws, nil)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				return c
			}
			plain := testenv.SQL(t, strings.Replace(dsn, "sqlite:", "", 1))
			if kind == "sqlite" {
				plain = sqliteConn(t, strings.TrimPrefix(dsn, "sqlite:"))
			}
			ok := func(rep *client.Reply, err error) error {
				if err != nil {
					return err
				}
				return rep.Err()
			}
			type path func(id, v int64) error
			paths := map[string]path{}
			wa, wd, we, wn := dialWS(), dialWS(), dialWS(), dialWS()
			paths["a"] = func(id, v int64) error {
				return ok(wa.Request(ctx, "cells", client.Payload{Action: "patch", PK: id, Data: map[string]any{"a": v}}))
			}
			paths["b"] = func(id, v int64) error {
				req, _ := http.NewRequestWithContext(ctx, "PATCH", fmt.Sprintf("%s/api/cells/%d/", base, id), strings.NewReader(fmt.Sprintf(`{"b":%d}`, v)))
				req.Header.Set("Content-Type", "application/json")
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					return err
				}
				res.Body.Close()
				if res.StatusCode != 200 {
					return fmt.Errorf("REST patch: %d", res.StatusCode)
				}
				return nil
			}
			paths["c"] = func(id, v int64) error {
				return db.Tx(ctx, func(ctx context.Context) error {
					c, err := cells.Get(ctx, id)
					if err != nil {
						return err
					}
					c.C = v
					return cells.Table().Update(ctx, c)
				})
			}
			paths["d"] = func(id, v int64) error {
				return ok(wd.Request(ctx, "cells", client.Payload{Action: "set_d", PK: id, Data: map[string]any{"v": v}}))
			}
			paths["e"] = func(id, v int64) error {
				return ok(we.Request(ctx, "cells", client.Payload{Action: "set_e", Data: map[string]any{"id": id, "v": v}}))
			}
			paths["f"] = func(id, v int64) error {
				q := "UPDATE cells SET f = $1 WHERE id = $2"
				if kind == "sqlite" {
					q = "UPDATE cells SET f = ? WHERE id = ?"
				}
				_, err := plain.ExecContext(ctx, q, v, id)
				return err
			}
			var incrs atomic.Int64
			incr := map[string]func(id int64) error{
				"locked": func(id int64) error {
					return ok(wn.Request(ctx, "cells", client.Payload{Action: "incr", PK: id}))
				},
				"unlocked": func(id int64) error {
					return db.Tx(ctx, func(ctx context.Context) error {
						c, err := cells.Get(ctx, id)
						if err != nil {
							return err
						}
						c.N++
						return cells.Table().Update(ctx, c)
					})
				},
			}
			last := map[string]*[rows + 1]int64{}
			var wg sync.WaitGroup
			for name, write := range paths {
				acked := new([rows + 1]int64)
				last[name] = acked
				wg.Add(1)
				go func() {
					defer wg.Done()
					for v := int64(1); v <= writes; v++ {
						id := v%rows + 1
						if err := write(id, v); err != nil {
							t.Errorf("writer %s, cell %d = %d: %v", name, id, v, err)
							continue
						}
						acked[id] = v
					}
				}()
			}
			for name, inc := range incr {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < writes; i++ {
						if err := inc(1); err != nil {
							t.Errorf("increment %s: %v", name, err)
							continue
						}
						incrs.Add(1)
					}
				}()
			}
			wg.Wait()
			all, err := cells.List(ctx, streamapi.ListQuery{})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range all {
				got := map[string]int64{"a": c.A, "b": c.B, "c": c.C, "d": c.D, "e": c.E, "f": c.F}
				for name, acked := range last {
					if got[name] != acked[c.ID] {
						t.Errorf("cell %d: %s = %d, last acknowledged %d", c.ID, name, got[name], acked[c.ID])
					}
				}
				if c.ID == 1 && c.N != incrs.Load() {
					t.Errorf("cell 1: n = %d after %d acknowledged increments", c.N, incrs.Load())
				}
			}
			t.Logf("%d writes, %d increments, %d transactions retried", len(paths)*writes, incrs.Load(), db.Retries())
		})
	}
}

// sqliteConn opens the SQLite file as another program would.
func sqliteConn(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestTrust_NULInTextIs400: a NUL in a text field (which PostgreSQL cannot
// store) is a 400 naming the field, over REST and WebSocket, on create and
// patch, on both databases; nothing is written.
func TestTrust_NULInTextIs400(t *testing.T) {
	eachDB(t, func(t *testing.T, p *pollsAuth) {
		const want = `{"question_text":["Null characters are not allowed."]}`
		if st, body := p.rest(t, "owner", "POST", "/questions/", `{"question_text":"a\u0000b"}`); st != 400 || body != want {
			t.Errorf("REST create: %d %s", st, body)
		}
		ws := p.dial(t, "owner")
		rep := request(t, ws, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "a\x00b"}})
		if rep.Status != 400 || compact(rep.Errors) != `[{"question_text":["Null characters are not allowed."]}]` {
			t.Errorf("WebSocket create: %d %s", rep.Status, rep.Errors)
		}
		ok := request(t, ws, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "fine"}})
		if ok.Status != 201 {
			t.Fatalf("create: %d %s", ok.Status, ok.Errors)
		}
		var q struct{ ID int64 }
		_ = json.Unmarshal(ok.Data, &q)
		if st, body := p.rest(t, "owner", "PATCH", fmt.Sprintf("/questions/%d/", q.ID), `{"question_text":"x\u0000"}`); st != 400 || body != want {
			t.Errorf("REST patch: %d %s", st, body)
		}
		rep = request(t, ws, "questions", client.Payload{Action: "patch", PK: q.ID, Data: map[string]any{"question_text": "\x00"}})
		if rep.Status != 400 || !strings.Contains(string(rep.Errors), "Null characters are not allowed.") {
			t.Errorf("WebSocket patch: %d %s", rep.Status, rep.Errors)
		}
		if st, body := p.rest(t, "owner", "GET", "/questions/", ""); st != 200 || !strings.Contains(body, `"count":1`) || !strings.Contains(body, `"question_text":"fine"`) {
			t.Errorf("after the refused writes: %d %s", st, body)
		}
	})
}
