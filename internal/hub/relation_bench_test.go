package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/internal/hub"
	"github.com/streamapi/streamapi/resource"
	"github.com/streamapi/streamapi/store/sqlstore"
	"github.com/uptrace/bun"
)

// The relation scope's in-memory side: a membership index fed with
// changes, and the fan-out of a card's update to subscribers spread over
// boards (docs/performance.md).

type benchMember struct {
	bun.BaseModel `bun:"table:bench_member" json:"-"`
	ID            int64  `bun:"id,pk,autoincrement" json:"id"`
	Board         int64  `bun:"board,notnull" json:"board"`
	User          string `bun:"user_id,notnull" json:"user"`
}

type benchCard struct {
	bun.BaseModel `bun:"table:bench_card" json:"-"`
	ID            int64  `bun:"id,pk,autoincrement" json:"id"`
	Board         int64  `bun:"board,notnull" json:"board"`
	Title         string `bun:"title,notnull" json:"title"`
}

type userPeer struct {
	u    *streamapi.User
	sent int
}

func (p *userPeer) Send(streamapi.Frame)           { p.sent++ }
func (p *userPeer) User() *streamapi.User          { return p.u }
func (p *userPeer) SendBatch(fs []streamapi.Frame) { p.sent += len(fs) }

// relationFixture declares members and cards on a store that is never
// written: the index is fed changes directly.
func relationFixture(tb testing.TB) (*resource.Relation, *resource.Resource[benchCard]) {
	tb.Helper()
	db, err := sqlstore.Open(context.Background(), "sqlite:"+filepath.Join(tb.TempDir(), "b.db"), sqlstore.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	members, err := resource.New(resource.Config[benchMember]{Stream: "members", Label: "bench.member", Store: db})
	if err != nil {
		tb.Fatal(err)
	}
	rel := resource.MustMembership(members, "board", "user")
	cards, err := resource.New(resource.Config[benchCard]{
		Stream: "cards", Label: "bench.card", Store: db,
		Scope: func(u *streamapi.User) resource.Q { return rel.Includes(u, "board") },
	})
	if err != nil {
		tb.Fatal(err)
	}
	return rel, cards
}

func memberChange(id int64, board int64, user string) streamapi.Change {
	data, _ := json.Marshal(benchMember{ID: id, Board: board, User: user})
	return streamapi.Change{Model: "bench.member", Action: streamapi.ChangeCreate, PK: streamapi.EncodePK(id), Data: data, Seq: id}
}

// BenchmarkRelation_IndexMemory reports the heap the index holds per
// membership row: 100,000 rows, 10,000 users in 10 boards each.
func BenchmarkRelation_IndexMemory(b *testing.B) {
	const rows = 100_000
	for range b.N {
		rel, _ := relationFixture(b)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		// What the index keeps of a change (its row's JSON) counts: the
		// changes are made inside the measure, then dropped.
		changes := make([]streamapi.Change, rows)
		for i := range changes {
			changes[i] = memberChange(int64(i+1), int64(i%1000), fmt.Sprint("user-", i/10))
		}
		for i := range changes {
			rel.Apply(&changes[i])
		}
		changes = nil
		runtime.GC()
		runtime.ReadMemStats(&after)
		if rel.Len() != rows {
			b.Fatalf("index holds %d rows", rel.Len())
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/rows, "B/row")
		runtime.KeepAlive(rel)
	}
}

// BenchmarkRelation_Authorize10kSubscribers is the cost of one card
// update on one board for 10,000 subscribers (one user each) spread over
// 1,000 boards (10 members a board, every user in one board): each
// subscriber's scope is evaluated from the index, no query.
func BenchmarkRelation_Authorize10kSubscribers(b *testing.B) {
	rel, cards := relationFixture(b)
	h := hub.New(nil)
	h.Bind("bench.card", "cards")
	h.BindScope("cards", cards)
	peers := make([]*userPeer, 10_000)
	for i := range peers {
		user := fmt.Sprint("user-", i)
		c := memberChange(int64(i+1), int64(i%1000), user)
		rel.Apply(&c)
		peers[i] = &userPeer{u: &streamapi.User{ID: user}}
		h.Subscribe(peers[i], "cards", "update", nil)
	}
	data := json.RawMessage(`{"id":1,"board":7,"title":"t"}`)
	c := streamapi.Change{Model: "bench.card", Action: streamapi.ChangeUpdate, PK: json.RawMessage("1"), Data: data, Before: data, Seq: 1}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		h.Publish(context.Background(), c)
	}
	b.StopTimer()
	sent := 0
	for _, p := range peers {
		sent += p.sent
	}
	if want := 10 * b.N; sent != want {
		b.Fatalf("%d events sent, want %d (10 members of board 7, %d updates)", sent, want, b.N)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/10_000, "ns/subscriber")
}

type closingPeer struct {
	userPeer
	closed chan uint16
}

func (p *closingPeer) Close(code uint16, _ string) { p.closed <- code }

// A connection that subscribed before it authenticated is filed under its
// user once the mux says so (UserChanged): bursts and CloseUser reach it.
func TestHub_UserChanged(t *testing.T) {
	h := hub.New(nil)
	h.Bind("bench.card", "cards")
	p := &closingPeer{userPeer: userPeer{}, closed: make(chan uint16, 1)}
	h.Subscribe(p, "cards", "create", nil)
	if h.Watching("cards", "ann") {
		t.Fatal("an anonymous peer watches as ann")
	}
	p.u = &streamapi.User{ID: "ann"}
	h.UserChanged(p)
	if !h.Watching("cards", "ann") || h.Watching("other", "ann") {
		t.Fatal("after UserChanged, ann does not watch cards (or watches another stream)")
	}
	c := streamapi.Change{Model: "bench.card", Action: streamapi.ChangeCreate, PK: json.RawMessage("1"), Data: json.RawMessage(`{"id":1}`), Seq: 3}
	n := h.Burst(context.Background(), "cards", "ann", []streamapi.Change{c}, func(int) streamapi.Visibility {
		return func(*streamapi.User) (bool, bool) { return false, true }
	})
	if n != 1 || p.sent != 1 {
		t.Fatalf("burst sent %d frames, the peer got %d", n, p.sent)
	}
	h.CloseUser("ann", 1011, "x")
	if code := <-p.closed; code != 1011 {
		t.Fatalf("closed with %d", code)
	}
	h.Drop(p)
	if h.Watching("cards", "ann") {
		t.Fatal("a dropped peer still watches")
	}
}
