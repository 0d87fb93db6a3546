package livelist_test

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/google/btree"
	"github.com/streamapi/streamapi/internal/livelist"
)

type row struct {
	pk   int
	key  int // the sort key
	keep bool
}

func rowPK(r *row) string { return fmt.Sprint(r.pk) }

func rowCmp(a, b *row) int {
	if c := cmp.Compare(a.key, b.key); c != 0 {
		return c
	}
	return cmp.Compare(a.pk, b.pk)
}

// top is the brute-force window: the first n matching rows in order.
func top(db map[int]*row, n int) []*row {
	var all []*row
	for _, r := range db {
		if r.keep {
			all = append(all, r)
		}
	}
	slices.SortFunc(all, rowCmp)
	return all[:min(n, len(all))]
}

func show(rs []*row) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "%d:%d ", r.pk, r.key)
	}
	return b.String()
}

// Random creates, updates (of sort key and of matching) and deletes on a
// small table, applied to windows of sizes 1 to 6: after every change
// the window equals the first n matching rows, and a client list built by
// the events' rule (remove the pk, then insert at index unless a delete)
// equals it too; the store is read (next) only when an object leaves a
// full window, at most twice per change.
func TestWindow_Property(t *testing.T) {
	for seed := range 200 {
		rng := rand.New(rand.NewPCG(uint64(seed), 9))
		limit := 1 + rng.IntN(6)
		db := map[int]*row{}
		for pk := range 12 {
			db[pk] = &row{pk: pk, key: rng.IntN(10), keep: rng.IntN(3) > 0}
		}
		snap := top(db, limit)
		w, err := livelist.NewWindow(limit, rowCmp, rowPK, snap)
		if err != nil {
			t.Fatal(err)
		}
		client := slices.Clone(snap)
		reads := 0
		next := func(after *row) (*row, error) {
			reads++
			var best *row
			for _, r := range db {
				if r.keep && (after == nil || rowCmp(r, after) > 0) && (best == nil || rowCmp(r, best) < 0) {
					best = r
				}
			}
			return best, nil
		}
		nextPK := 12
		for step := range 60 {
			var pk int
			var now *row
			switch op := rng.IntN(4); op {
			case 0: // create
				pk = nextPK
				nextPK++
				now = &row{pk: pk, key: rng.IntN(10), keep: rng.IntN(3) > 0}
				db[pk] = now
			case 1: // delete
				if len(db) == 0 {
					continue
				}
				keys := make([]int, 0, len(db))
				for k := range db {
					keys = append(keys, k)
				}
				slices.Sort(keys)
				pk = keys[rng.IntN(len(keys))]
				delete(db, pk)
			default: // update the key, or whether it matches
				keys := make([]int, 0, len(db))
				for k := range db {
					keys = append(keys, k)
				}
				if len(keys) == 0 {
					continue
				}
				slices.Sort(keys)
				pk = keys[rng.IntN(len(keys))]
				old := db[pk]
				now = &row{pk: pk, key: old.key, keep: old.keep}
				if rng.IntN(2) == 0 {
					now.key = rng.IntN(10)
				} else {
					now.keep = !now.keep
				}
				db[pk] = now
			}
			var after *row
			if now != nil && now.keep {
				after = now
			}
			reads = 0
			before := show(w.Items())
			evs, err := w.Change(fmt.Sprint(pk), after, next)
			_ = before
			if err != nil {
				t.Fatal(err)
			}
			if reads > 2 {
				t.Fatalf("seed %d step %d: %d reads for one change", seed, step, reads)
			}
			for _, ev := range evs {
				client = slices.DeleteFunc(client, func(r *row) bool { return r.pk == ev.Obj.pk })
				if ev.Action != "delete" {
					if ev.Index < 0 || ev.Index > len(client) {
						t.Fatalf("seed %d step %d: %s at %d in a list of %d", seed, step, ev.Action, ev.Index, len(client))
					}
					client = slices.Insert(client, ev.Index, ev.Obj)
				}
				if len(client) > limit {
					t.Fatalf("seed %d step %d: the client holds %d of a window of %d mid-change", seed, step, len(client), limit)
				}
			}
			want := show(top(db, limit))
			if got := show(w.Items()); got != want {
				t.Fatalf("seed %d step %d (limit %d): window %s, want %s (before %s; change of %d to %+v; events %+v)", seed, step, limit, got, want, before, pk, now, evs)
			}
			if got := show(client); got != want {
				t.Fatalf("seed %d step %d (limit %d): client %s, want %s (events %+v)", seed, step, limit, got, want, evs)
			}
		}
	}
}

// One hot window: a window of 10 over 10,000 matching rows. Each change
// updates a row's sort key: half of them a row in the window (it moves
// in it, or out of it and the next comes in), half a row from outside
// given a key among the window's (it comes in, and pushes the last out).
// The store is a B-tree in memory, so this is the window's own cost per
// change plus an in-memory seek where a real store would run an indexed
// query.
func BenchmarkWindow_HotUpdates(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	const n = 10_000
	rows := make([]*row, n)
	store := btree.NewG(32, func(a, b *row) bool { return rowCmp(a, b) < 0 })
	for i := range rows {
		rows[i] = &row{pk: i, key: rng.IntN(1_000_000), keep: true}
		store.ReplaceOrInsert(rows[i])
	}
	var first []*row
	store.Ascend(func(r *row) bool { first = append(first, r); return len(first) < 10 })
	w, err := livelist.NewWindow(10, rowCmp, rowPK, first)
	if err != nil {
		b.Fatal(err)
	}
	next := func(after *row) (*row, error) {
		var got *row
		pick := func(r *row) bool {
			if after != nil && rowCmp(r, after) <= 0 {
				return true
			}
			got = r
			return false
		}
		if after == nil {
			store.Ascend(pick)
		} else {
			store.AscendGreaterOrEqual(after, pick)
		}
		return got, nil
	}
	events := 0
	b.ResetTimer()
	for i := range b.N {
		items := w.Items()
		var r *row
		if i%2 == 0 {
			r = items[rng.IntN(len(items))]
		} else {
			r = rows[rng.IntN(n)]
		}
		lo, hi := items[0].key, items[len(items)-1].key
		store.Delete(r)
		now := &row{pk: r.pk, key: lo + rng.IntN(hi-lo+2), keep: true}
		rows[r.pk] = now
		store.ReplaceOrInsert(now)
		evs, err := w.Change(rowPK(now), now, next)
		if err != nil {
			b.Fatal(err)
		}
		events += len(evs)
	}
	b.StopTimer()
	var want []*row
	store.Ascend(func(r *row) bool { want = append(want, r); return len(want) < 10 })
	if got := show(w.Items()); got != show(want) {
		b.Fatalf("window %s, want %s", got, show(want))
	}
	b.ReportMetric(float64(events)/float64(b.N), "events/change")
}
