package livelist_test

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/internal/livelist"
)

// matches is the brute-force evaluation of a conjunction on an object.
func matches(obj map[string]any, conds []streamapi.Cond) bool {
	for _, c := range conds {
		v, ok := obj[c.Column]
		if !ok || v == nil {
			return false
		}
		switch c.Lookup {
		case streamapi.LookupExact:
			if v != c.Value {
				return false
			}
		case streamapi.LookupIn:
			if !slices.Contains(c.Value.([]any), v) {
				return false
			}
		case streamapi.LookupContains:
			if !strings.Contains(v.(string), c.Value.(string)) {
				return false
			}
		default:
			var d int
			switch x := v.(type) {
			case int64:
				d = compareInt(x, c.Value.(int64))
			case string:
				d = strings.Compare(x, c.Value.(string))
			}
			switch c.Lookup {
			case streamapi.LookupGT:
				if d <= 0 {
					return false
				}
			case streamapi.LookupGTE:
				if d < 0 {
					return false
				}
			case streamapi.LookupLT:
				if d >= 0 {
					return false
				}
			case streamapi.LookupLTE:
				if d > 0 {
					return false
				}
			}
		}
	}
	return true
}

func compareInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func randCond(rng *rand.Rand) streamapi.Cond {
	lookups := []string{streamapi.LookupExact, streamapi.LookupIn, streamapi.LookupGT, streamapi.LookupGTE, streamapi.LookupLT, streamapi.LookupLTE, streamapi.LookupContains}
	l := lookups[rng.IntN(len(lookups))]
	if l == streamapi.LookupContains {
		return streamapi.Cond{Column: "name", Lookup: l, Value: string(rune('a' + rng.IntN(4)))}
	}
	if rng.IntN(2) == 0 {
		val := func() any { return int64(rng.IntN(12)) }
		if l == streamapi.LookupIn {
			return streamapi.Cond{Column: "votes", Lookup: l, Value: []any{val(), val(), val()}}
		}
		return streamapi.Cond{Column: "votes", Lookup: l, Value: val()}
	}
	val := func() any { return string(rune('a' + rng.IntN(6))) }
	if l == streamapi.LookupIn {
		return streamapi.Cond{Column: "name", Lookup: l, Value: []any{val(), val()}}
	}
	return streamapi.Cond{Column: "name", Lookup: l, Value: val()}
}

// Over random lists (conjunctions of 0 to 3 conditions of every lookup)
// and random objects, the candidates hold every list the object matches;
// for lists of one indexable condition, exactly those (so a boundary an
// anchor gets wrong, inclusive or not, fails); a removed list is never a
// candidate.
func TestCandidates_Property(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 50 {
		x := livelist.New()
		lists := map[livelist.ID][]streamapi.Cond{}
		for i := range 200 {
			var conds []streamapi.Cond
			for range rng.IntN(4) {
				conds = append(conds, randCond(rng))
			}
			lists[livelist.ID(i)] = conds
			x.Add(livelist.ID(i), conds)
		}
		for i := 0; i < 200; i += 7 {
			x.Remove(livelist.ID(i))
			delete(lists, livelist.ID(i))
		}
		if x.Len() != len(lists) {
			t.Fatalf("Len %d, want %d", x.Len(), len(lists))
		}
		for range 40 {
			obj := map[string]any{"votes": int64(rng.IntN(12)), "name": string(rune('a' + rng.IntN(6)))}
			if rng.IntN(8) == 0 {
				obj["votes"] = nil
			}
			got := map[livelist.ID]int{}
			x.Candidates(func(col string) (any, bool) { v := obj[col]; return v, v != nil }, func(id livelist.ID) { got[id]++ })
			for id, conds := range lists {
				if got[id] > 1 {
					t.Fatalf("round %d: list %d visited %d times", round, id, got[id])
				}
				m := matches(obj, conds)
				if m && got[id] == 0 {
					t.Fatalf("round %d: list %d %+v matches %v but is no candidate", round, id, conds, obj)
				}
				if len(conds) == 1 && conds[0].Lookup != streamapi.LookupContains && got[id] == 1 && !m {
					t.Fatalf("round %d: list %d %+v is a candidate of %v it does not match", round, id, conds, obj)
				}
			}
			for id := range got {
				if _, ok := lists[id]; !ok {
					t.Fatalf("round %d: removed list %d is a candidate", round, id)
				}
			}
		}
	}
}

// The cost of matching one change does not grow with the lists that do
// not concern it: n lists on "question = i" (distinct keys), one change
// to question 7. Reports the heap per list.
func BenchmarkCandidates_Equality(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			x := livelist.New()
			for i := range n {
				x.Add(livelist.ID(i), []streamapi.Cond{
					{Column: "question_id", Lookup: streamapi.LookupExact, Value: int64(i)},
					{Column: "votes", Lookup: streamapi.LookupGTE, Value: int64(1)},
				})
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			obj := func(col string) (any, bool) {
				switch col {
				case "question_id":
					return int64(7), true
				case "votes":
					return int64(3), true
				}
				return nil, false
			}
			found := 0
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				x.Candidates(obj, func(livelist.ID) { found++ })
			}
			b.StopTimer()
			if found != b.N {
				b.Fatalf("%d candidates over %d changes, want one each", found, b.N)
			}
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "B/list")
			runtime.KeepAlive(x)
		})
	}
}

// One-sided ranges on distinct bounds: n lists "votes >= i"; a change
// with votes = 50 visits the 51 that hold, whatever n.
func BenchmarkCandidates_Range(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			x := livelist.New()
			for i := range n {
				x.Add(livelist.ID(i), []streamapi.Cond{{Column: "votes", Lookup: streamapi.LookupGTE, Value: int64(i)}})
			}
			obj := func(col string) (any, bool) { return int64(50), col == "votes" }
			found := 0
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				x.Candidates(obj, func(livelist.ID) { found++ })
			}
			b.StopTimer()
			if found != 51*b.N {
				b.Fatalf("%d candidates over %d changes, want 51 each", found, b.N)
			}
		})
	}
}
