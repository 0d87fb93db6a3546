package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/auth/jwtauth"
	"github.com/streamapi/streamapi/broker/memory"
	"github.com/streamapi/streamapi/client"
	"github.com/streamapi/streamapi/examples/boards"
	"github.com/streamapi/streamapi/internal/testenv"
	"github.com/streamapi/streamapi/server"
	"github.com/streamapi/streamapi/store/sqlstore"
)

// boardsEnv is the boards app served on one store. Users are named by the
// X-User header, on the handshake and on REST requests alike.
type boardsEnv struct {
	t        *testing.T
	ws, base string
	app      *boards.App
	db       *sqlstore.DB
}

func boardsOn(t *testing.T, dsn string, cfg func(*server.Config)) *boardsEnv {
	t.Helper()
	ctx := context.Background()
	broker := memory.New()
	db, err := sqlstore.Open(ctx, dsn, sqlstore.Options{Publisher: broker})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(ctx, boards.Migrations()); err != nil {
		t.Fatal(err)
	}
	app, err := boards.New(db)
	if err != nil {
		t.Fatal(err)
	}
	scfg := server.Config{
		Resources: app.Resources(), Broker: broker, ChangeLog: db,
		Authenticator: streamapi.AuthenticatorFunc(func(r *http.Request) (*streamapi.User, error) {
			if id := r.Header.Get("X-User"); id != "" {
				return &streamapi.User{ID: id}, nil
			}
			return nil, nil
		}),
	}
	if cfg != nil {
		cfg(&scfg)
	}
	srv, err := server.New(ctx, scfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		hs.Close()
		broker.Close()
		db.Close()
	})
	return &boardsEnv{t: t, ws: "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws", base: hs.URL, app: app, db: db}
}

func boardsSQLite(t *testing.T, cfg func(*server.Config)) *boardsEnv {
	return boardsOn(t, "sqlite:"+filepath.Join(t.TempDir(), "boards.db"), cfg)
}

// eachBoardsStore runs fn on SQLite, and on PostgreSQL when
// STREAMAPI_TEST_POSTGRES is set.
func eachBoardsStore(t *testing.T, fn func(t *testing.T, e *boardsEnv)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, boardsSQLite(t, nil)) })
	t.Run("postgres", func(t *testing.T) { fn(t, boardsOn(t, testenv.Postgres(t), nil)) })
}

func (e *boardsEnv) dial(t *testing.T, user string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, e.ws, &client.Options{HTTPHeader: http.Header{"X-User": {user}}, EventBuffer: 8192})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rest sends one REST request as user and returns the status and body.
func (e *boardsEnv) rest(t *testing.T, user, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(mustJSON(body))
	}
	req, err := http.NewRequestWithContext(tctx(t), method, e.base+"/api/"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if user != "" {
		req.Header.Set("X-User", user)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

func create(t *testing.T, c *client.Client, stream string, data any) int64 {
	t.Helper()
	r := do(t, c, stream, client.Payload{Action: "create", Data: data})
	if r.Status != 201 {
		t.Fatalf("create %s %s: %d %s", stream, mustJSON(data), r.Status, r.Errors)
	}
	return r.id(t)
}

// watch subscribes c to every kind of event on stream.
func watch(t *testing.T, c *client.Client, stream string) map[string]*client.Subscription {
	t.Helper()
	out := map[string]*client.Subscription{}
	for _, a := range []string{"create", "update", "delete"} {
		out[a] = mustSubscribe(t, c, stream, a, nil)
	}
	return out
}

// collect reads n events from sub and returns their pks in order.
func collect(t *testing.T, sub *client.Subscription, n int) []string {
	t.Helper()
	var out []string
	for range n {
		out = append(out, string(next(t, sub).PK))
	}
	return out
}

func sortedPKs(ids ...int64) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = fmt.Sprint(id)
	}
	sort.Strings(out)
	return out
}

func sameSet(a, b []string) bool {
	a, b = append([]string(nil), a...), append([]string(nil), b...)
	sort.Strings(a)
	sort.Strings(b)
	return strings.Join(a, ",") == strings.Join(b, ",")
}

// TestBoards_MembershipIsVisibility: a non-member sees nothing on either
// surface (404 as for a missing object, empty lists, no events); being
// added brings the board, its columns, cards and members into view as
// create events; removal sends their deletes; changes made meanwhile are
// told to members only.
func TestBoards_MembershipIsVisibility(t *testing.T) {
	eachBoardsStore(t, func(t *testing.T, e *boardsEnv) {
		alice, bob := e.dial(t, "alice"), e.dial(t, "bob")
		bb, bm, bc, bk := watch(t, bob, "boards"), watch(t, bob, "members"), watch(t, bob, "columns"), watch(t, bob, "cards")

		board := create(t, alice, "boards", map[string]any{"name": "Launch"})
		col := create(t, alice, "columns", map[string]any{"board": board, "name": "To do"})
		card1 := create(t, alice, "cards", map[string]any{"column": col, "title": "Write the post"})
		card2 := create(t, alice, "cards", map[string]any{"column": col, "title": "Ship", "position": 0})

		// bob sees none of it.
		do(t, bob, "boards", client.Payload{Action: "retrieve", PK: board}).want(t, 404, `["Not found."]`)
		do(t, bob, "cards", client.Payload{Action: "retrieve", PK: card1}).want(t, 404, `["Not found."]`)
		if r := do(t, bob, "boards", client.Payload{Action: "list"}); r.Status != 200 || compact(r.Data) != "[]" {
			t.Fatalf("bob's list of boards: %d %s", r.Status, r.Data)
		}
		if st, b := e.rest(t, "bob", "GET", fmt.Sprintf("boards/%d/", board), nil); st != 404 {
			t.Fatalf("REST retrieve by bob: %d %s", st, b)
		}
		if st, b := e.rest(t, "bob", "GET", "cards/", nil); st != 200 || !strings.Contains(string(b), `"results":[]`) {
			t.Fatalf("REST list by bob: %d %s", st, b)
		}
		// bob may not add himself, nor write to the board's column.
		if st, b := e.rest(t, "bob", "POST", "members/", map[string]any{"board": board, "user": "bob"}); st != 400 || !strings.Contains(string(b), `"board"`) {
			t.Fatalf("bob adds himself: %d %s", st, b)
		}
		do(t, bob, "cards", client.Payload{Action: "create", Data: map[string]any{"column": col, "title": "x"}}).want(t, 400, fmt.Sprintf(`[{"column":["Invalid pk \"%d\" - object does not exist."]}]`, col))

		// alice adds bob, over REST: the board, its column, its two cards
		// and its members (alice's row, and bob's own) enter his view.
		st, b := e.rest(t, "alice", "POST", "members/", map[string]any{"board": board, "user": "bob"})
		if st != 201 {
			t.Fatalf("add bob: %d %s", st, b)
		}
		var bobRow struct{ ID int64 }
		_ = json.Unmarshal(b, &bobRow)
		if got := collect(t, bb["create"], 1); !sameSet(got, sortedPKs(board)) {
			t.Fatalf("boards entering view: %v", got)
		}
		if got := collect(t, bc["create"], 1); !sameSet(got, sortedPKs(col)) {
			t.Fatalf("columns entering view: %v", got)
		}
		if got := collect(t, bk["create"], 2); !sameSet(got, sortedPKs(card1, card2)) {
			t.Fatalf("cards entering view: %v", got)
		}
		rows, err := e.app.Members.List(tctx(t), streamapi.ListQuery{Equal: map[string]any{"board": board}})
		if err != nil || len(rows) != 2 {
			t.Fatalf("the board's members: %v %v", rows, err)
		}
		if got := collect(t, bm["create"], 2); !sameSet(got, sortedPKs(rows[0].ID, rows[1].ID)) || !slices.Contains(got, fmt.Sprint(bobRow.ID)) {
			t.Fatalf("members entering view: %v, want alice's row and bob's of %+v", got, rows)
		}
		// Now he reads and writes it, on both surfaces.
		do(t, bob, "cards", client.Payload{Action: "retrieve", PK: card1}).want(t, 200, "[]")
		if st, b := e.rest(t, "bob", "PATCH", fmt.Sprintf("cards/%d/", card1), map[string]any{"assignee": "bob"}); st != 200 {
			t.Fatalf("bob patches a card: %d %s", st, b)
		}
		if ev := next(t, bk["update"]); string(ev.PK) != fmt.Sprint(card1) || !strings.Contains(string(ev.Data), `"assignee":"bob"`) {
			t.Fatalf("update event: %s", ev.Raw)
		}
		// He is not the owner: he may not add members.
		if st, b := e.rest(t, "bob", "POST", "members/", map[string]any{"board": board, "user": "carol"}); st != 403 {
			t.Fatalf("bob adds carol: %d %s", st, b)
		}
		// A duplicate member is a 400 on user.
		if st, b := e.rest(t, "alice", "POST", "members/", map[string]any{"board": board, "user": "bob"}); st != 400 || !strings.Contains(string(b), `"user":["This user is already a member of this board."]`) {
			t.Fatalf("duplicate member: %d %s", st, b)
		}

		// alice removes bob: deletes of everything he saw.
		do(t, alice, "members", client.Payload{Action: "delete", PK: bobRow.ID}).want(t, 200, "[]")
		if got := collect(t, bk["delete"], 2); !sameSet(got, sortedPKs(card1, card2)) {
			t.Fatalf("cards leaving view: %v", got)
		}
		if got := collect(t, bc["delete"], 1); !sameSet(got, sortedPKs(col)) {
			t.Fatalf("columns leaving view: %v", got)
		}
		if got := collect(t, bb["delete"], 1); !sameSet(got, sortedPKs(board)) {
			t.Fatalf("boards leaving view: %v", got)
		}
		if got := collect(t, bm["delete"], 2); !sameSet(got, sortedPKs(rows[0].ID, rows[1].ID)) {
			t.Fatalf("members leaving view: %v, want %+v", got, rows)
		}
		// A card made on the board now is not his; one on a board he
		// belongs to is, and comes after (one model's events keep commit
		// order): had the first reached him, it would come first.
		create(t, alice, "cards", map[string]any{"column": col, "title": "Not for bob"})
		other := create(t, bob, "boards", map[string]any{"name": "Bob's"})
		if got := collect(t, bb["create"], 1); !sameSet(got, sortedPKs(other)) {
			t.Fatalf("bob's own board: %v", got)
		}
		otherCol := create(t, bob, "columns", map[string]any{"board": other, "name": "Doing"})
		mine := create(t, bob, "cards", map[string]any{"column": otherCol, "title": "Mine"})
		if ev := next(t, bk["create"]); string(ev.PK) != fmt.Sprint(mine) {
			t.Fatalf("bob got card %s first, want %d: %s", ev.PK, mine, ev.Raw)
		}
		do(t, bob, "cards", client.Payload{Action: "retrieve", PK: card1}).want(t, 404, `["Not found."]`)
	})
}

// TestBoards_DeleteBoard: deleting a board deletes its members, columns
// and cards in one transaction; a member hears every delete.
func TestBoards_DeleteBoard(t *testing.T) {
	eachBoardsStore(t, func(t *testing.T, e *boardsEnv) {
		alice, bob := e.dial(t, "alice"), e.dial(t, "bob")
		board := create(t, alice, "boards", map[string]any{"name": "Old"})
		col := create(t, alice, "columns", map[string]any{"board": board, "name": "A"})
		var cards []int64
		for i := range 3 {
			cards = append(cards, create(t, alice, "cards", map[string]any{"column": col, "title": fmt.Sprint("c", i), "position": i}))
		}
		create(t, alice, "members", map[string]any{"board": board, "user": "bob"})
		bb, bm, bc, bk := watch(t, bob, "boards"), watch(t, bob, "members"), watch(t, bob, "columns"), watch(t, bob, "cards")
		do(t, bob, "boards", client.Payload{Action: "delete", PK: board}).want(t, 403, `["Permission Denied"]`)
		do(t, alice, "boards", client.Payload{Action: "delete", PK: board}).want(t, 200, "[]")
		if got := collect(t, bk["delete"], 3); !sameSet(got, sortedPKs(cards...)) {
			t.Fatalf("card deletes: %v", got)
		}
		if got := collect(t, bc["delete"], 1); !sameSet(got, sortedPKs(col)) {
			t.Fatalf("column deletes: %v", got)
		}
		if got := collect(t, bm["delete"], 2); len(got) != 2 {
			t.Fatalf("member deletes: %v", got)
		}
		if got := collect(t, bb["delete"], 1); !sameSet(got, sortedPKs(board)) {
			t.Fatalf("board deletes: %v", got)
		}
		for _, tbl := range []string{"board_card", "board_column", "board_member", "board_board"} {
			n, err := e.db.Bun().NewSelect().Table(tbl).Count(tctx(t))
			if err != nil || n != 0 {
				t.Fatalf("%s holds %d rows (%v)", tbl, n, err)
			}
		}
		none(t, bk["create"], "no card created")
	})
}

// TestBoards_BurstOfAThousandCards: a board of 1,000 cards enters a new
// member's view as 1,000 create events, and a client that reads them is
// not closed as a slow consumer, with a queue bound (100 frames) far
// below the burst: the burst is bounded by bytes (docs/auth.md).
func TestBoards_BurstOfAThousandCards(t *testing.T) {
	e := boardsSQLite(t, func(c *server.Config) { c.Conn.MaxQueue = 100 })
	ctx, b := seedBoard(t, e, 1000)
	bob := e.dial(t, "bob")
	creates := mustSubscribe(t, bob, "cards", "create", nil)
	if err := e.app.Members.Create(ctx, &boards.Member{BoardID: b.ID, User: "bob"}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 1000 {
		seen[string(next(t, creates).PK)] = true
	}
	if len(seen) != 1000 {
		t.Fatalf("%d distinct cards of 1,000", len(seen))
	}
	none(t, creates, "1,000 cards, each once")
	// Still connected and served.
	if r := do(t, bob, "cards", client.Payload{Action: "list", Data: map[string]any{"page_size": 1, "with_count": true}}); r.Status != 200 || !strings.Contains(string(r.Data), `"count":1000`) {
		t.Fatalf("bob's list after the burst: %d %s", r.Status, r.Data)
	}
	if bob.Dropped() != 0 {
		t.Fatalf("client dropped %d events", bob.Dropped())
	}
}

// TestBoards_ConcurrentMoves: members move cards at random within and
// across two columns at once, over several connections; every column's
// positions stay 0..n-1, no card is lost, and every card whose position
// changed sent an update.
func TestBoards_ConcurrentMoves(t *testing.T) {
	eachBoardsStore(t, func(t *testing.T, e *boardsEnv) {
		owner := e.dial(t, "alice")
		board := create(t, owner, "boards", map[string]any{"name": "Moves"})
		create(t, owner, "members", map[string]any{"board": board, "user": "bob"})
		cols := []int64{
			create(t, owner, "columns", map[string]any{"board": board, "name": "A"}),
			create(t, owner, "columns", map[string]any{"board": board, "name": "B"}),
		}
		var cards []int64
		for i := range 24 {
			cards = append(cards, create(t, owner, "cards", map[string]any{"column": cols[i%2], "title": fmt.Sprint("c", i), "position": 99}))
		}
		checkContiguous(t, e, cols, len(cards))

		// One move, watched: the updates are exactly the cards whose
		// column or position changed.
		watcher := e.dial(t, "bob")
		updates := mustSubscribe(t, watcher, "cards", "update", nil)
		before := positions(t, e)
		do(t, owner, "cards", client.Payload{Action: "move", PK: cards[0], Data: map[string]any{"column": cols[1], "position": 3}}).want(t, 200, "[]")
		after := positions(t, e)
		var changed []string
		for id, p := range after {
			if before[id] != p {
				changed = append(changed, fmt.Sprint(id))
			}
		}
		if got := collect(t, updates, len(changed)); !sameSet(got, changed) {
			t.Fatalf("updates for %v, want %v", got, changed)
		}
		if len(changed) < 2 {
			t.Fatalf("a move across columns changed only %v", changed)
		}
		// Bad input: a column of no visible board, a negative position.
		do(t, owner, "cards", client.Payload{Action: "move", PK: cards[1], Data: map[string]any{"column": 999999, "position": 0}}).want(t, 400, `[{"column":["Invalid pk \"999999\" - object does not exist."]}]`)
		do(t, owner, "cards", client.Payload{Action: "move", PK: cards[1], Data: map[string]any{"column": cols[0], "position": -1}}).want(t, 400, `[{"position":["Ensure this value is greater than or equal to 0."]}]`)

		// Four connections move cards at random; two more create and
		// delete cards in the same columns meanwhile.
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		var churn sync.Mutex
		total := len(cards)
		for w := range 2 {
			c := e.dial(t, "bob")
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), 11))
				var mine []int64
				for i := range 10 {
					if i%3 == 2 && len(mine) > 0 {
						rep, err := c.Request(longCtx(t), "cards", client.Payload{Action: "delete", PK: mine[0]})
						if err != nil || rep.Status != 200 {
							errs <- fmt.Errorf("delete %d: %v %v", mine[0], err, rep)
							return
						}
						mine = mine[1:]
						churn.Lock()
						total--
						churn.Unlock()
						continue
					}
					rep, err := c.Request(longCtx(t), "cards", client.Payload{Action: "create", Data: map[string]any{"column": cols[rng.IntN(2)], "title": "churn", "position": rng.IntN(14)}})
					if err != nil || rep.Status != 201 {
						errs <- fmt.Errorf("create: %v %v", err, rep)
						return
					}
					var made struct{ ID int64 }
					_ = json.Unmarshal(rep.Data, &made)
					mine = append(mine, made.ID)
					churn.Lock()
					total++
					churn.Unlock()
				}
			}()
		}
		for w := range 4 {
			user := "alice"
			if w%2 == 1 {
				user = "bob"
			}
			c := e.dial(t, user)
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), 7))
				for range 20 {
					card := cards[rng.IntN(len(cards))]
					data := map[string]any{"column": cols[rng.IntN(2)], "position": rng.IntN(14)}
					rep, err := c.Request(longCtx(t), "cards", client.Payload{Action: "move", PK: card, Data: data})
					if err != nil {
						errs <- fmt.Errorf("move %d %v: %v", card, data, err)
						return
					}
					if rep.Status != 200 {
						errs <- fmt.Errorf("move %d %v: %s", card, data, rep.Raw)
						return
					}
				}
			}()
		}
		start := time.Now()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		checkContiguous(t, e, cols, total)
		t.Logf("80 moves, 20 creates and deletes over 6 connections in %v; positions contiguous, %d cards", time.Since(start).Round(time.Millisecond), total)
	})
}

// positions returns every card's (column, position).
func positions(t *testing.T, e *boardsEnv) map[int64][2]int64 {
	t.Helper()
	cards, err := e.app.Cards.List(tctx(t), streamapi.ListQuery{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64][2]int64{}
	for _, c := range cards {
		out[c.ID] = [2]int64{c.ColumnID, c.Position}
	}
	return out
}

// checkContiguous checks that each column's cards hold positions 0..n-1
// and that there are total cards, all on their column's board.
func checkContiguous(t *testing.T, e *boardsEnv, cols []int64, total int) {
	t.Helper()
	n := 0
	for _, col := range cols {
		cards, err := e.app.Cards.List(tctx(t), streamapi.ListQuery{Equal: map[string]any{"column": col}, Order: []streamapi.Order{{Column: "position"}}})
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		for i, c := range cards {
			fmt.Fprintf(&buf, "%d@%d ", c.ID, c.Position)
			if c.Position != int64(i) {
				t.Fatalf("column %d: positions not contiguous: %s", col, buf.String())
			}
		}
		n += len(cards)
	}
	if n != total {
		t.Fatalf("%d cards, want %d", n, total)
	}
}

// TestBoards_TwoNodes: on two nodes sharing PostgreSQL, with Redis and
// with NATS between them, a member added on one node while cards are being
// created there gets, on the other node, every card of the board once:
// those before the cut as the burst, those after live; removal sends each
// a delete, once.
func TestBoards_TwoNodes(t *testing.T) {
	const secret = "a-test-secret-of-at-least-32-bytes!!"
	for name, url := range brokers(t) {
		t.Run(name, func(t *testing.T) {
			dsn := testenv.Postgres(t)
			flags := []string{"--app", "boards", "--jwt-secret", secret, "--change-poll", "1h"}
			a := startNode(t, "A", dsn, url, flags...)
			b := startNode(t, "B", dsn, url, flags...)
			dial := func(n *node, user string) *client.Client {
				tok, err := jwtauth.Sign([]byte(secret), user, time.Hour)
				if err != nil {
					t.Fatal(err)
				}
				c, err := client.Dial(tctx(t), n.ws(), &client.Options{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}, EventBuffer: 1 << 14})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				return c
			}
			alice, bob := dial(a, "alice"), dial(b, "bob")
			writers := []*client.Client{dial(a, "alice"), dial(a, "alice"), dial(a, "alice")}
			creates, deletes := mustSubscribe(t, bob, "cards", "create", nil), mustSubscribe(t, bob, "cards", "delete", nil)
			board := create(t, alice, "boards", map[string]any{"name": "Shared"})
			col := create(t, alice, "columns", map[string]any{"board": board, "name": "A"})
			var ids []int64
			for i := range 20 {
				ids = append(ids, create(t, alice, "cards", map[string]any{"column": col, "title": fmt.Sprint("before ", i), "position": i}))
			}
			// Cards keep coming, from three connections, while bob is
			// added: the cards model's delivery on node B lags behind
			// the log when the membership arrives.
			var mu sync.Mutex
			var wg sync.WaitGroup
			for _, writer := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 20 {
						rep, err := writer.Request(longCtx(t), "cards", client.Payload{Action: "create", Data: map[string]any{"column": col, "title": fmt.Sprint("during ", i), "position": 0}})
						if err != nil || rep.Status != 201 {
							t.Errorf("create card: %v %v", err, rep)
							return
						}
						var c struct{ ID int64 }
						_ = json.Unmarshal(rep.Data, &c)
						mu.Lock()
						ids = append(ids, c.ID)
						mu.Unlock()
					}
				}()
			}
			time.Sleep(20 * time.Millisecond)
			member := create(t, alice, "members", map[string]any{"board": board, "user": "bob"})
			wg.Wait()
			mu.Lock()
			all := append([]int64(nil), ids...)
			mu.Unlock()
			got := map[string]int{}
			for range all {
				got[string(next(t, creates).PK)]++
			}
			for _, id := range all {
				if got[fmt.Sprint(id)] != 1 {
					t.Fatalf("card %d reached bob %d times (all: %v)", id, got[fmt.Sprint(id)], got)
				}
			}
			do(t, alice, "members", client.Payload{Action: "delete", PK: member}).want(t, 200, "[]")
			gone := map[string]int{}
			for range all {
				gone[string(next(t, deletes).PK)]++
			}
			for _, id := range all {
				if gone[fmt.Sprint(id)] != 1 {
					t.Fatalf("card %d's delete reached bob %d times", id, gone[fmt.Sprint(id)])
				}
			}
			// Then nothing of the board: a card of his own board comes
			// first.
			create(t, alice, "cards", map[string]any{"column": col, "title": "after"})
			own := create(t, bob, "boards", map[string]any{"name": "Bob's"})
			ownCol := create(t, bob, "columns", map[string]any{"board": own, "name": "X"})
			mine := create(t, bob, "cards", map[string]any{"column": ownCol, "title": "mine"})
			if ev := next(t, creates); string(ev.PK) != fmt.Sprint(mine) {
				t.Fatalf("bob got card %s, want his own %d", ev.PK, mine)
			}
			burst := regexp.MustCompile(`stream=cards user=bob group=\d+ joined=true objects=(\d+)`).FindStringSubmatch(b.log())
			if burst == nil {
				t.Fatalf("node B logged no burst of cards for bob")
			}
			t.Logf("%s: %d cards reached bob on node B once each (%s in the burst, the rest live), and %d deletes", name, len(all), burst[1], len(all))
		})
	}
}

// TestBoards_ResumeAcrossMembership: a subscription resumes with since
// when its user's memberships did not change meanwhile; when they did (a
// board entered or left their view), a replay of the cards' changes cannot
// say so, and the server answers 410.
func TestBoards_ResumeAcrossMembership(t *testing.T) {
	e := boardsSQLite(t, nil)
	// Within the grace after a user's own join or leave, any resume of
	// theirs is refused; here the seqs decide.
	e.app.Membership.SetResumeGrace(0)
	alice := e.dial(t, "alice")
	board := create(t, alice, "boards", map[string]any{"name": "R"})
	col := create(t, alice, "columns", map[string]any{"board": board, "name": "A"})
	create(t, alice, "members", map[string]any{"board": board, "user": "bob"})
	create(t, alice, "cards", map[string]any{"column": col, "title": "one"})

	bob := e.dial(t, "bob")
	sub := mustSubscribe(t, bob, "cards", "create", nil)
	since := sub.Seq
	card := create(t, alice, "cards", map[string]any{"column": col, "title": "two"})
	if ev := next(t, sub); string(ev.PK) != fmt.Sprint(card) {
		t.Fatalf("live event %s", ev.Raw)
	}
	// Nothing changed for bob: he resumes, and gets the card again on the
	// new subscription (it follows since).
	again := e.dial(t, "bob")
	resumed, err := again.SubscribeSince(tctx(t), "cards", "create", nil, since)
	if err != nil {
		t.Fatalf("resume with no membership change: %v", err)
	}
	if ev := next(t, resumed); string(ev.PK) != fmt.Sprint(card) {
		t.Fatalf("replayed %s", ev.Raw)
	}
	// bob joins another board: a resume from before that is refused.
	other := create(t, e.dial(t, "carol"), "boards", map[string]any{"name": "Carol's"})
	carol := e.dial(t, "carol")
	create(t, carol, "members", map[string]any{"board": other, "user": "bob"})
	eventually(t, "bob's membership indexed", func() bool { return e.app.Membership.Has("bob", fmt.Sprint(other)) })
	_, err = e.dial(t, "bob").SubscribeSince(tctx(t), "cards", "create", nil, since)
	var se *client.StatusError
	if !errors.As(err, &se) || se.Status != 410 {
		t.Fatalf("resume across a membership change: %v, want 410", err)
	}
	// alice's memberships did not change: she resumes.
	if _, err := e.dial(t, "alice").SubscribeSince(tctx(t), "cards", "create", nil, since); err != nil {
		t.Fatalf("alice's resume: %v", err)
	}
	// A resume from exactly the seq at which bob's view changed is refused
	// too: nothing changed in the cards since, but he left a board.
	sub2 := mustSubscribe(t, e.dial(t, "bob"), "cards", "create", nil)
	at := sub2.Seq
	var row struct{ ID int64 }
	rows, err := e.app.Members.List(tctx(t), streamapi.ListQuery{Equal: map[string]any{"board": other, "user": "bob"}})
	if err != nil || len(rows) != 1 {
		t.Fatalf("bob's row: %v %v", rows, err)
	}
	row.ID = rows[0].ID
	do(t, carol, "members", client.Payload{Action: "delete", PK: row.ID}).want(t, 200, "[]")
	eventually(t, "bob's leaving indexed", func() bool { return !e.app.Membership.Has("bob", fmt.Sprint(other)) })
	if _, err := e.dial(t, "bob").SubscribeSince(tctx(t), "cards", "create", nil, at); !errors.As(err, &se) || se.Status != 410 {
		t.Fatalf("resume from the seq of the cut: %v, want 410", err)
	}
	// Within the grace, even a since after the cut is refused.
	e.app.Membership.SetResumeGrace(time.Hour)
	create(t, alice, "cards", map[string]any{"column": col, "title": "three"})
	sub3 := mustSubscribe(t, e.dial(t, "bob"), "cards", "create", nil)
	if _, err := e.dial(t, "bob").SubscribeSince(tctx(t), "cards", "create", nil, sub3.Seq); !errors.As(err, &se) || se.Status != 410 {
		t.Fatalf("resume within the grace: %v, want 410", err)
	}
	if _, err := e.dial(t, "dan").SubscribeSince(tctx(t), "cards", "create", nil, sub3.Seq); err != nil {
		t.Fatalf("dan, whose memberships never changed, within bob's grace: %v", err)
	}
}

// The structs and their tables are checked at start: a table or column
// the database lacks fails server.New with its name and the field it
// serves, rather than a 500 on the first write.
func TestBoards_SchemaCheckedAtStart(t *testing.T) {
	ctx := context.Background()
	open := func() *sqlstore.DB {
		db, err := sqlstore.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "s.db"), sqlstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	start := func(db *sqlstore.DB) error {
		app, err := boards.New(db)
		if err != nil {
			t.Fatal(err)
		}
		broker := memory.New()
		defer broker.Close()
		srv, err := server.New(ctx, server.Config{Resources: app.Resources(), Broker: broker, ChangeLog: db})
		if err == nil {
			_ = srv.Shutdown(ctx)
		}
		return err
	}
	err := start(open())
	if err == nil || !strings.Contains(err.Error(), "table board_board (model board.board, struct boards.Board) does not exist") {
		t.Fatalf("no migration: %v", err)
	}
	db := open()
	if err := db.Migrate(ctx, boards.Migrations()); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Bun().ExecContext(ctx, "ALTER TABLE board_card DROP COLUMN assignee"); err != nil {
		t.Fatal(err)
	}
	err = start(db)
	if err == nil || !strings.Contains(err.Error(), "resource cards: sqlstore: table board_card (model board.card) has no column assignee (field Card.Assignee)") {
		t.Fatalf("a dropped column: %v", err)
	}
}

// Two concurrent adds of one user to a board: one is a member, the other
// is a 400 on user (not a conflict from the unique index).
func TestBoards_ConcurrentDuplicateMember(t *testing.T) {
	eachBoardsStore(t, func(t *testing.T, e *boardsEnv) {
		alice := e.dial(t, "alice")
		board := create(t, alice, "boards", map[string]any{"name": "Dup"})
		for round := range 5 {
			user := fmt.Sprint("user-", round)
			var wg sync.WaitGroup
			statuses := make([]int, 4)
			bodies := make([]string, 4)
			for i := range statuses {
				wg.Add(1)
				go func() {
					defer wg.Done()
					st, b := e.rest(t, "alice", "POST", "members/", map[string]any{"board": board, "user": user})
					statuses[i], bodies[i] = st, string(b)
				}()
			}
			wg.Wait()
			created := 0
			for i, st := range statuses {
				switch {
				case st == 201:
					created++
				case st == 400 && strings.Contains(bodies[i], `"user":["This user is already a member of this board."]`):
				default:
					t.Fatalf("round %d: %d %s", round, st, bodies[i])
				}
			}
			if created != 1 {
				t.Fatalf("round %d: %d members created of 4 concurrent adds", round, created)
			}
		}
	})
}

// A board deleted while its cards are being moved: the deletion succeeds,
// each move either succeeds or finds the card gone (404) or its column
// gone (400), never a 500 or a conflict, and nothing of the board is left.
func TestBoards_DeleteWhileMoving(t *testing.T) {
	eachBoardsStore(t, func(t *testing.T, e *boardsEnv) {
		alice := e.dial(t, "alice")
		board := create(t, alice, "boards", map[string]any{"name": "Doomed"})
		cols := []int64{
			create(t, alice, "columns", map[string]any{"board": board, "name": "A"}),
			create(t, alice, "columns", map[string]any{"board": board, "name": "B"}),
		}
		var cards []int64
		for i := range 16 {
			cards = append(cards, create(t, alice, "cards", map[string]any{"column": cols[i%2], "title": "c", "position": 99}))
		}
		var wg sync.WaitGroup
		bad := make(chan string, 64)
		for w := range 3 {
			c := e.dial(t, "alice")
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), 3))
				for range 30 {
					rep, err := c.Request(longCtx(t), "cards", client.Payload{Action: "move", PK: cards[rng.IntN(len(cards))], Data: map[string]any{"column": cols[rng.IntN(2)], "position": rng.IntN(10)}})
					switch {
					case err != nil:
						bad <- err.Error()
						return
					case rep.Status == 200, rep.Status == 404, rep.Status == 400 && strings.Contains(string(rep.Errors), `"column"`):
					default:
						bad <- string(rep.Raw)
						return
					}
				}
			}()
		}
		time.Sleep(30 * time.Millisecond)
		rep, err := alice.Request(longCtx(t), "boards", client.Payload{Action: "delete", PK: board})
		if err != nil || rep.Status != 200 {
			t.Fatalf("delete the board while moving: %v %v", err, rep)
		}
		wg.Wait()
		close(bad)
		for b := range bad {
			t.Errorf("a move answered %s", b)
		}
		for _, tbl := range []string{"board_card", "board_column", "board_member", "board_board"} {
			n, err := e.db.Bun().NewSelect().Table(tbl).Count(tctx(t))
			if err != nil || n != 0 {
				t.Fatalf("%s holds %d rows (%v)", tbl, n, err)
			}
		}
	})
}

// --max-burst at its edge: a board of exactly MaxBurst cards enters a new
// member's view as events; one more card, and the member's connection is
// closed with 1008 instead, and their resume from before answers 410,
// while a fresh list shows every card.
func TestBoards_MaxBurst(t *testing.T) {
	for _, n := range []int{5, 6} {
		t.Run(fmt.Sprint(n, " cards"), func(t *testing.T) {
			e := boardsSQLite(t, func(c *server.Config) { c.Conn.MaxBurst = 5 })
			e.app.Membership.SetResumeGrace(0)
			ctx, b := seedBoard(t, e, n)
			bob := e.dial(t, "bob")
			creates := mustSubscribe(t, bob, "cards", "create", nil)
			since := creates.Seq
			if err := e.app.Members.Create(ctx, &boards.Member{BoardID: b.ID, User: "bob"}); err != nil {
				t.Fatal(err)
			}
			if n <= 5 {
				for range n {
					next(t, creates)
				}
				return
			}
			select {
			case <-bob.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("bob's connection stayed open past --max-burst")
			}
			if code := bob.CloseStatus(); code != 1008 {
				t.Fatalf("closed with %d, want 1008", code)
			}
			_, err := e.dial(t, "bob").SubscribeSince(tctx(t), "cards", "create", nil, since)
			var se *client.StatusError
			if !errors.As(err, &se) || se.Status != 410 {
				t.Fatalf("resume from before the change: %v, want 410", err)
			}
			if r := do(t, e.dial(t, "bob"), "cards", client.Payload{Action: "list", Data: map[string]any{"page_size": 1, "with_count": true}}); !strings.Contains(string(r.Data), fmt.Sprintf(`"count":%d`, n)) {
				t.Fatalf("bob's list: %s", r.Data)
			}
		})
	}
}

// seedBoard makes, from Go as alice, a board with one column of n cards,
// and returns alice's context and the board.
func seedBoard(t *testing.T, e *boardsEnv, n int) (context.Context, *boards.Board) {
	t.Helper()
	ctx := streamapi.WithUser(longCtx(t), &streamapi.User{ID: "alice"})
	b := &boards.Board{Name: "Seeded", Owner: "alice"}
	if err := e.app.Boards.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	col := &boards.Column{BoardID: b.ID, Name: "All"}
	if err := e.app.Columns.Create(ctx, col); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := e.app.Cards.Create(ctx, &boards.Card{ColumnID: col.ID, Title: fmt.Sprint("card ", i), Position: int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	return ctx, b
}
