package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/internal/hub"
	"github.com/streamapi/streamapi/resource"
	"github.com/streamapi/streamapi/store/sqlstore"
	"github.com/uptrace/bun"
)

// Live lists end to end in process: the hub's index, each list's window
// over a real store (SQLite), encoding and sending (docs/performance.md).

type benchChoice struct {
	bun.BaseModel `bun:"table:bench_choice" json:"-"`
	ID            int64  `bun:"id,pk,autoincrement" json:"id"`
	Question      int64  `bun:"question,notnull" json:"question"`
	Text          string `bun:"text,notnull" json:"text"`
	Votes         int64  `bun:"votes,notnull" json:"votes"`
}

// recorder is a Publisher that keeps the changes of the writes made, to
// hand them to the hub without a broker.
type recorder struct {
	mu      sync.Mutex
	changes []streamapi.Change
}

func (r *recorder) Publish(_ context.Context, cs ...streamapi.Change) error {
	r.mu.Lock()
	r.changes = append(r.changes, cs...)
	r.mu.Unlock()
	return nil
}

type framePeer struct{ sent, bytes int }

func (p *framePeer) Send(f streamapi.Frame) { p.sent++; p.bytes += f.Len() }

// choicesFixture opens a store with rows choices, question i%questions,
// and votes from votes(i), and declares the resource on it.
func choicesFixture(tb testing.TB, rows, questions int, votes func(i int) int64) (*sqlstore.DB, *resource.Resource[benchChoice], *recorder) {
	tb.Helper()
	ctx := context.Background()
	rec := &recorder{}
	db, err := sqlstore.Open(ctx, "sqlite:"+filepath.Join(tb.TempDir(), "l.db"), sqlstore.Options{Publisher: rec})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	if _, err := db.Bun().NewCreateTable().Model((*benchChoice)(nil)).Exec(ctx); err != nil {
		tb.Fatal(err)
	}
	for _, idx := range []string{"CREATE INDEX bq ON bench_choice (question, votes)", "CREATE INDEX bv ON bench_choice (votes)"} {
		if _, err := db.Bun().ExecContext(ctx, idx); err != nil {
			tb.Fatal(err)
		}
	}
	for start := 0; start < rows; start += 1000 {
		var batch []benchChoice
		for i := start; i < min(rows, start+1000); i++ {
			batch = append(batch, benchChoice{Question: int64(i % questions), Text: "c" + strconv.Itoa(i), Votes: votes(i)})
		}
		if _, err := db.Bun().NewInsert().Model(&batch).Exec(ctx); err != nil {
			tb.Fatal(err)
		}
	}
	res, err := resource.New(resource.Config[benchChoice]{
		Stream: "choices", Label: "bench.choice", Store: db,
		Filters:     map[string][]string{"question": {"exact"}, "votes": {"gte"}},
		Ordering:    []string{"votes", "id"},
		MaxPageSize: 100,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return db, res, rec
}

// openLive registers the live list of query for p on h.
func openLive(tb testing.TB, h *hub.Hub, res *resource.Resource[benchChoice], p streamapi.Peer, rid int, query string) {
	tb.Helper()
	l, err := res.LiveList(context.Background(), nil, json.RawMessage(query))
	if err != nil {
		tb.Fatal(err)
	}
	_, install, err := l.Read(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	install()
	if !h.SubscribeLive(p, "choices", json.RawMessage(strconv.Itoa(rid)), false, l) {
		tb.Fatal("stream serves no live lists")
	}
}

// BenchmarkLive_ChangeAgainstLists: one update of a choice against N
// live lists, each "question = i" on its own question with a window of
// one object (the question's one choice): the change reaches one list,
// which sends one event. The cost must not grow with N (the issue: at
// most 2× from 1,000 to 100,000). The heap per list is measured once.
func BenchmarkLive_ChangeAgainstLists(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprint("lists=", n), func(b *testing.B) {
			db, res, _ := choicesFixture(b, n, n, func(int) int64 { return 1 })
			h := hub.New(nil)
			h.Bind("bench.choice", "choices")
			h.BindLive("choices", "bench.choice", res, db.ReadTx)
			p := &framePeer{}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			for i := 0; i < n; i++ {
				openLive(b, h, res, p, i, fmt.Sprintf(`{"question":%d,"ordering":"-votes","page_size":10}`, i))
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			perList := float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
			// The change: choice 7+1 (question 7) gets a vote.
			before1, _ := json.Marshal(benchChoice{ID: 8, Question: 7, Text: "c7", Votes: 1})
			after1, _ := json.Marshal(benchChoice{ID: 8, Question: 7, Text: "c7", Votes: 2})
			c := streamapi.Change{Model: "bench.choice", Action: streamapi.ChangeUpdate, PK: json.RawMessage("8"), Data: after1, Before: before1, Seq: 1}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				h.Publish(context.Background(), c)
			}
			b.StopTimer()
			if p.sent != b.N {
				b.Fatalf("%d events for %d changes", p.sent, b.N)
			}
			b.ReportMetric(perList, "B/list") // (after ResetTimer, which clears metrics)
		})
	}
}

// BenchmarkLive_HotWindow: one live list, the 10 choices with the most
// votes among 10,000, and a stream of real updates aimed at it: nine in
// ten give one of 40 hot choices a new count, so that choices enter,
// leave and move in the window, and one leaving a full window is
// replaced by a read of the store; one in ten changes another choice. Each
// write is committed, then its change delivered to the hub, as a node
// does; only the delivery is timed (decode, match, window, refill
// reads, encode, send): the metric "ns/update" and the rate from it.
func BenchmarkLive_HotWindow(b *testing.B) {
	const rows = 10_000
	rng := rand.New(rand.NewPCG(1, 2))
	// Choice i+1 starts with i/10 votes: the top is the highest ids.
	db, res, rec := choicesFixture(b, rows, 100, func(i int) int64 { return int64(i / 10) })
	ctx := context.Background()
	h := hub.New(nil)
	h.Bind("bench.choice", "choices")
	h.BindLive("choices", "bench.choice", res, db.ReadTx)
	p := &framePeer{}
	openLive(b, h, res, p, 1, `{"ordering":"-votes","page_size":10}`)
	var spent time.Duration
	b.ResetTimer()
	for range b.N {
		// Nine in ten: one of 40 hot choices, to any count (in, out of
		// or within the window); else any choice, under the window.
		id, votes := int64(rows-rng.IntN(40)), int64(rng.IntN(1100))
		if rng.IntN(10) == 0 {
			id, votes = int64(rng.IntN(rows)+1), int64(rng.IntN(1000))
		}
		if err := db.Tx(ctx, func(ctx context.Context) error {
			var c benchChoice
			if err := res.Table().Get(ctx, &c, id); err != nil {
				return err
			}
			c.Votes = votes
			return res.Table().Update(ctx, &c)
		}); err != nil {
			b.Fatal(err)
		}
		rec.mu.Lock()
		cs := rec.changes
		rec.changes = nil
		rec.mu.Unlock()
		start := time.Now()
		for _, c := range cs {
			h.Publish(ctx, c)
		}
		spent += time.Since(start)
	}
	b.StopTimer()
	// The limit beside it: the refill's query alone, in a read
	// transaction, as the store answers it (1,000 times).
	q := streamapi.ListQuery{Order: []streamapi.Order{{Column: "votes", Desc: true}}, Limit: 11}
	start := time.Now()
	for range 1000 {
		if err := db.ReadTx(ctx, func(ctx context.Context) error {
			var objs []benchChoice
			return res.Table().List(ctx, &objs, q)
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/1000, "ns/refill-query")
	b.ReportMetric(float64(spent.Nanoseconds())/float64(b.N), "ns/update")
	b.ReportMetric(float64(b.N)/spent.Seconds(), "updates/s")
	b.ReportMetric(float64(p.sent)/float64(b.N), "events/update")
}
