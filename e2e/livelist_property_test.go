package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamapi/streamapi/client"
	"github.com/streamapi/streamapi/internal/testenv"
)

// TestLiveList_Property: random live lists (filters, orderings, page
// sizes, with and without the count) held by two connections, while
// three connections and REST write concurrently (creates, moves, votes,
// edits, deletes); at each quiescent point every client list, built by
// the protocol's rule from its events alone, equals a fresh list of its
// query, and so do the counts. On SQLite, and on PostgreSQL when
// STREAMAPI_TEST_POSTGRES is set.
func TestLiveList_Property(t *testing.T) {
	run := func(t *testing.T, dsn string) {
		p := testenv.PollsServerOn(t, dsn)
		for seed := uint64(1); seed <= 3; seed++ {
			t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { liveProperty(t, p, seed) })
		}
	}
	t.Run("sqlite", func(t *testing.T) { run(t, "sqlite:"+t.TempDir()+"/p.db") })
	t.Run("postgres", func(t *testing.T) { run(t, testenv.Postgres(t)) })
}

func liveProperty(t *testing.T, p *testenv.Polls, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 13))
	dial := func() *client.Client {
		c, err := client.Dial(tctx(t), p.WS, &client.Options{EventBuffer: 1 << 16})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	admin := dial()
	var questions []int64
	for i := 0; i < 3; i++ {
		questions = append(questions, create(t, admin, "questions", map[string]any{"question_text": fmt.Sprint("q", seed, i)}))
	}
	var initial []int64
	for i := 0; i < 12; i++ {
		initial = append(initial, create(t, admin, "choices", map[string]any{"question": questions[rng.IntN(3)], "choice_text": fmt.Sprint("c", i), "votes": rng.IntN(6)}))
	}

	// The lists.
	randomQuery := func() map[string]any {
		q := map[string]any{}
		switch rng.IntN(3) {
		case 0:
			q["question"] = questions[rng.IntN(3)]
		case 1:
			q["question__in"] = []int64{questions[0], questions[rng.IntN(2)+1]}
		}
		switch rng.IntN(4) {
		case 0:
			q["votes__gte"] = rng.IntN(4)
		case 1:
			q["votes__lt"] = rng.IntN(4) + 2
		case 2:
			q["votes"] = rng.IntN(4)
		}
		q["ordering"] = []string{"votes", "-votes", "id", "-id", "-votes,id", "votes,-id"}[rng.IntN(6)]
		q["page_size"] = rng.IntN(5) + 1
		if rng.IntN(2) == 0 {
			q["with_count"] = true
		}
		return q
	}
	type live struct {
		c     *client.Client
		l     *client.LiveList
		query map[string]any
	}
	readers := []*client.Client{dial(), dial()}
	var lists []live
	for i := 0; i < 10; i++ {
		c := readers[i%2]
		q := randomQuery()
		l, err := c.LiveList(tctx(t), "choices", q)
		if err != nil {
			t.Fatalf("live list %v: %v", q, err)
		}
		lists = append(lists, live{c, l, q})
	}

	writers := []*client.Client{dial(), dial(), dial()}
	check := func(round int) {
		t.Helper()
		for _, x := range lists {
			want, n := freshList(t, admin, "choices", x.query)
			deadline := time.Now().Add(5 * time.Second)
			for {
				got := x.l.Items()
				same := len(got) == len(want)
				for i := 0; same && i < len(got); i++ {
					same = sameJSON(got[i], want[i])
				}
				if same && (x.query["with_count"] == nil || x.l.Count() == n) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("round %d: live list %v holds %s (count %d), a fresh list %s (count %d)", round, x.query, got, x.l.Count(), want, n)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	check(0)
	for round := 1; round <= 4; round++ {
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		for w := 0; w < 4; w++ {
			wseed := rng.Uint64()
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := liveWriter(p, writers, w, questions, initial, wseed); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		check(round)
		// One list replaced by a new one, subscribed while nothing moves.
		i := rng.IntN(len(lists))
		if err := lists[i].l.Close(tctx(t)); err != nil {
			t.Fatal(err)
		}
		q := randomQuery()
		l, err := lists[i].c.LiveList(tctx(t), "choices", q)
		if err != nil {
			t.Fatal(err)
		}
		lists[i] = live{lists[i].c, l, q}
	}
}

// liveWriter makes 25 random writes to choices: over WebSocket for w <
// 3 (on writers[w]), over REST for w == 3. Refusals (a choice deleted by
// another writer) are expected; a 5xx is an error.
func liveWriter(p *testenv.Polls, writers []*client.Client, w int, questions, shared []int64, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 7))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// request sends one write; pk 0 means none.
	request := func(action string, pk int64, data map[string]any) (int, []byte, error) {
		if w < len(writers) {
			pl := client.Payload{Action: action, Data: data}
			if pk != 0 {
				pl.PK = pk
			}
			rep, err := writers[w].Request(ctx, "choices", pl)
			if err != nil {
				return 0, nil, err
			}
			return rep.Status, rep.Data, nil
		}
		method, path := map[string]string{"create": "POST", "patch": "PATCH", "delete": "DELETE", "vote": "POST"}[action], "/api/choices/"
		if pk != 0 {
			path += fmt.Sprint(pk, "/")
		}
		if action == "vote" {
			path += "vote/"
		}
		var body io.Reader
		if data != nil {
			body = strings.NewReader(mustJSON(data))
		}
		req, err := http.NewRequestWithContext(ctx, method, p.Base+path, body)
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, b, nil
	}
	mine := append([]int64(nil), shared...) // the choices of every writer, then those this one made
	for i := 0; i < 25; i++ {
		var pk int64
		if len(mine) > 0 {
			pk = mine[rng.IntN(len(mine))]
		}
		var status int
		var body []byte
		var err error
		switch op := rng.IntN(10); {
		case op < 3 || pk == 0:
			status, body, err = request("create", 0, map[string]any{"question": questions[rng.IntN(3)], "choice_text": fmt.Sprint("w", w, "-", i), "votes": rng.IntN(6)})
			var obj struct {
				ID int64 `json:"id"`
			}
			if err == nil && json.Unmarshal(body, &obj) == nil && obj.ID != 0 {
				mine = append(mine, obj.ID)
			}
		case op < 6:
			status, body, err = request("patch", pk, map[string]any{"votes": rng.IntN(6)})
		case op < 7:
			status, body, err = request("vote", pk, nil)
		case op < 8:
			status, body, err = request("patch", pk, map[string]any{"choice_text": fmt.Sprint("e", w, "-", i)})
		default:
			status, body, err = request("delete", pk, nil)
		}
		if err != nil {
			return fmt.Errorf("writer %d: %w", w, err)
		}
		if status >= 500 {
			return fmt.Errorf("writer %d: status %d: %s", w, status, body)
		}
	}
	return nil
}

// TestLiveList_RelationProperty: in the boards app, bob's live lists of
// cards while, at once, alice adds him to and removes him from her
// boards and two writers create, edit and delete cards on them: at each
// quiescent point each list equals a fresh list of its query made by
// bob, counts included. SQLite, and PostgreSQL when
// STREAMAPI_TEST_POSTGRES is set.
func TestLiveList_RelationProperty(t *testing.T) {
	eachBoardsStore(t, func(t *testing.T, e *boardsEnv) {
		rng := rand.New(rand.NewPCG(5, 6))
		alice, bob := e.dial(t, "alice"), e.dial(t, "bob")
		var boards, cols []int64
		for i := 0; i < 3; i++ {
			b := create(t, alice, "boards", map[string]any{"name": fmt.Sprint("b", i)})
			boards = append(boards, b)
			cols = append(cols, create(t, alice, "columns", map[string]any{"board": b, "name": "c"}))
			for k := 0; k < 4; k++ {
				create(t, alice, "cards", map[string]any{"column": cols[i], "title": fmt.Sprint("t", i, k)})
			}
		}
		own := create(t, bob, "boards", map[string]any{"name": "bob's"})
		ownCol := create(t, bob, "columns", map[string]any{"board": own, "name": "c"})
		create(t, bob, "cards", map[string]any{"column": ownCol, "title": "mine"})
		queries := []map[string]any{
			{"ordering": "-id", "page_size": 3, "with_count": true},
			{"board__in": []int64{boards[0], boards[1], own}, "ordering": "id", "page_size": 4, "with_count": true},
			{"board": boards[2], "ordering": "-position", "page_size": 2},
			{"assignee__isnull": true, "ordering": "position", "page_size": 5, "with_count": true},
		}
		var lists []*client.LiveList
		for _, q := range queries {
			l, err := bob.LiveList(tctx(t), "cards", q)
			if err != nil {
				t.Fatal(err)
			}
			lists = append(lists, l)
		}
		member := map[int64]int64{} // board → bob's member row
		writers := []*client.Client{e.dial(t, "alice"), e.dial(t, "alice")}
		for round := 1; round <= 4; round++ {
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			wg.Add(1)
			seed := rng.Uint64()
			go func() { // memberships
				defer wg.Done()
				r := rand.New(rand.NewPCG(seed, 1))
				for i := 0; i < 6; i++ {
					b := boards[r.IntN(len(boards))]
					if id, ok := member[b]; ok {
						rep, err := alice.Request(longCtx(t), "members", client.Payload{Action: "delete", PK: id})
						if err != nil || rep.Status != 200 {
							errs <- fmt.Errorf("remove bob: %v %v", err, rep)
							return
						}
						delete(member, b)
						continue
					}
					rep, err := alice.Request(longCtx(t), "members", client.Payload{Action: "create", Data: map[string]any{"board": b, "user": "bob"}})
					if err != nil || rep.Status != 201 {
						errs <- fmt.Errorf("add bob: %v %v", err, rep)
						return
					}
					var row struct{ ID int64 }
					_ = json.Unmarshal(rep.Data, &row)
					member[b] = row.ID
				}
			}()
			for w, c := range writers {
				wg.Add(1)
				wseed := rng.Uint64()
				go func() { // cards
					defer wg.Done()
					r := rand.New(rand.NewPCG(wseed, uint64(w)))
					var mine []int64
					for i := 0; i < 15; i++ {
						var rep *client.Reply
						var err error
						switch op := r.IntN(6); {
						case op < 2 || len(mine) == 0:
							rep, err = c.Request(longCtx(t), "cards", client.Payload{Action: "create", Data: map[string]any{"column": cols[r.IntN(len(cols))], "title": fmt.Sprint("w", w, i)}})
							var card struct{ ID int64 }
							if err == nil && rep.Status == 201 && json.Unmarshal(rep.Data, &card) == nil {
								mine = append(mine, card.ID)
							}
						case op < 4:
							var who any = "carol"
							if r.IntN(2) == 0 {
								who = nil
							}
							rep, err = c.Request(longCtx(t), "cards", client.Payload{Action: "patch", PK: mine[r.IntN(len(mine))], Data: map[string]any{"assignee": who, "title": fmt.Sprint("e", w, i)}})
						default:
							k := r.IntN(len(mine))
							rep, err = c.Request(longCtx(t), "cards", client.Payload{Action: "delete", PK: mine[k]})
							mine = slices.Delete(mine, k, k+1)
						}
						if err != nil || rep.Status >= 500 {
							errs <- fmt.Errorf("writer %d: %v %v", w, err, rep)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			for i, l := range lists {
				want, n := freshList(t, bob, "cards", queries[i])
				eventually(t, fmt.Sprintf("round %d: list %v to match a fresh list", round, queries[i]), func() bool {
					got := l.Items()
					if len(got) != len(want) || queries[i]["with_count"] != nil && l.Count() != n {
						return false
					}
					for k := range got {
						if !sameJSON(got[k], want[k]) {
							return false
						}
					}
					return true
				})
			}
		}
	})
}
