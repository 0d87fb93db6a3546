package resource_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/internal/testenv"
	"github.com/streamapi/streamapi/resource"
	"github.com/streamapi/streamapi/store/sqlstore"
	"github.com/uptrace/bun"
)

// Thing has a field of every kind the query language handles, nullable
// ones included.
type Thing struct {
	bun.BaseModel `bun:"table:things" json:"-"`
	ID            int64      `bun:"id,pk,autoincrement" json:"id"`
	N             int64      `bun:"n,notnull" json:"n"`
	M             *int64     `bun:"m" json:"m"`
	F             float64    `bun:"f,notnull" json:"f"`
	S             string     `bun:"s,notnull" json:"s"`
	P             *string    `bun:"p" json:"p"`
	B             bool       `bun:"b,notnull" json:"b"`
	T             time.Time  `bun:"t,notnull" json:"t"`
	U             *time.Time `bun:"u" json:"u"`
}

var allLookups = map[string][]string{
	"n": {"exact", "gt", "gte", "lt", "lte", "in", "isnull"},
	"m": {"exact", "gt", "gte", "lt", "lte", "in", "isnull"},
	"f": {"exact", "gt", "gte", "lt", "lte", "in"},
	"s": {"exact", "gt", "gte", "lt", "lte", "in", "contains", "icontains", "startswith", "isnull"},
	"p": {"exact", "gt", "gte", "lt", "lte", "in", "contains", "icontains", "startswith", "isnull"},
	"b": {"exact", "in", "isnull"},
	"t": {"exact", "gt", "gte", "lt", "lte", "in"},
	"u": {"exact", "gt", "gte", "lt", "lte", "isnull"},
}

// Text values chosen to tell byte order from a locale's, ASCII case
// folding from Unicode's, and prefixes and substrings apart.
var words = []string{"", "a", "A", "ab", "aB", "Ab", "b", "B", "abc", "ÉCOLE", "école", "École", "ß", "SS", "z", "Z", "a b", "a%b", "a_b", "'", `"`, "\\", "ä", "Ä", "x;DROP TABLE things;--"}

func randThing(r *rand.Rand) Thing {
	base := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	t := Thing{
		N: int64(r.IntN(7) - 3),
		F: float64(r.IntN(9)-4) / 2,
		S: words[r.IntN(len(words))],
		B: r.IntN(2) == 0,
		T: base.Add(time.Duration(r.IntN(5)) * 500 * time.Millisecond).Add(time.Duration(r.IntN(3)) * time.Microsecond),
	}
	if r.IntN(3) > 0 {
		m := int64(r.IntN(7) - 3)
		t.M = &m
	}
	if r.IntN(3) > 0 {
		p := words[r.IntN(len(words))]
		t.P = &p
	}
	if r.IntN(3) > 0 {
		u := base.Add(time.Duration(r.IntN(4)) * time.Hour)
		t.U = &u
	}
	return t
}

// randParam returns a random filter parameter and its value, as a REST
// client would send them.
func randParam(r *rand.Rand) (string, string) {
	names := []string{"n", "m", "f", "s", "p", "b", "t", "u"}
	field := names[r.IntN(len(names))]
	ls := allLookups[field]
	lookup := ls[r.IntN(len(ls))]
	one := func() string {
		switch field {
		case "n", "m":
			return fmt.Sprint(r.IntN(7) - 3)
		case "f":
			return fmt.Sprint(float64(r.IntN(9)-4) / 2)
		case "s", "p":
			w := words[r.IntN(len(words))]
			if lookup != "in" || !slices.Contains([]string{"a b"}, w) {
				return w
			}
			return "a"
		case "b":
			return []string{"true", "false", "1", "0"}[r.IntN(4)]
		case "t":
			base := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
			return base.Add(time.Duration(r.IntN(5))*500*time.Millisecond + time.Duration(r.IntN(3))*time.Microsecond).Format(time.RFC3339Nano)
		default:
			base := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
			return base.Add(time.Duration(r.IntN(4)) * time.Hour).Format(time.RFC3339)
		}
	}
	name := field + "__" + lookup
	if lookup == "exact" && r.IntN(2) == 0 {
		name = field
	}
	switch lookup {
	case "isnull":
		return name, []string{"true", "false"}[r.IntN(2)]
	case "in":
		v := one()
		for k := r.IntN(3); k > 0; k-- {
			if o := one(); o != "" && v != "" && !containsComma(o) && !containsComma(v) {
				v += "," + o
			}
		}
		return name, v
	}
	return name, one()
}

func containsComma(s string) bool { return slices.Contains([]byte(s), ',') }

// TestQuery_SQLMatchesMemory: on random data and random filters (one to
// three at once, and a search), the rows the store selects in SQL are
// exactly those Match accepts in memory; random orderings come out in the
// order of an in-memory sort, and walking them by cursor gives the same
// rows. SQLite always; PostgreSQL when STREAMAPI_TEST_POSTGRES is set.
func TestQuery_SQLMatchesMemory(t *testing.T) {
	dsns := map[string]func(t *testing.T) string{
		"sqlite":   func(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "q.db") },
		"postgres": func(t *testing.T) string { return testenv.Postgres(t) },
	}
	for name, dsn := range dsns {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			db, err := sqlstore.Open(ctx, dsn(t), sqlstore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Bun().NewCreateTable().Model((*Thing)(nil)).Exec(ctx); err != nil {
				t.Fatal(err)
			}
			res, err := resource.New(resource.Config[Thing]{
				Stream: "things", Label: "test.thing", Store: db,
				Filters: allLookups, Search: []string{"s", "p"}, Ordering: []string{"n", "m", "f", "s", "b", "t"}, MaxPageSize: 1000,
			})
			if err != nil {
				t.Fatal(err)
			}
			res.Init(streamapi.Defaults{})
			r := rand.New(rand.NewPCG(1, 2))
			var all []Thing
			for i := 0; i < 300; i++ {
				th := randThing(r)
				if err := res.Create(ctx, &th); err != nil {
					t.Fatal(err)
				}
				all = append(all, th)
			}
			const trials = 1500
			nonEmpty := 0
			for trial := 0; trial < trials; trial++ {
				q := map[string][]string{"page_size": {"1000"}}
				for k := 1 + r.IntN(3); k > 0; k-- {
					name, v := randParam(r)
					q[name] = []string{v}
				}
				if r.IntN(5) == 0 {
					q["search"] = []string{words[r.IntN(len(words))]}
				}
				conds, err := res.Conds(q)
				if err != nil {
					t.Fatalf("%v: %v", q, err)
				}
				page, err := res.ListPage(ctx, &streamapi.Request{}, q)
				if err != nil {
					t.Fatalf("%v: %v", q, err)
				}
				var got []int64
				for _, th := range page.Results.([]Thing) {
					got = append(got, th.ID)
				}
				var want []int64
				for i := range all {
					if res.Match(&all[i], conds) {
						want = append(want, all[i].ID)
					}
				}
				slices.Sort(got)
				if !slices.Equal(got, want) {
					t.Fatalf("filters %v: SQL selects %d rows %v, memory %d rows %v", q, len(got), got, len(want), want)
				}
				if len(want) > 0 && len(want) < len(all) {
					nonEmpty++
				}
			}
			// Orderings: the SQL order is the one a plain in-memory sort gives
			// (bytes for text, NULLs first ascending, the id breaking ties),
			// and cursor pages, walked to the end, give the same rows again.
			for trial := 0; trial < 200; trial++ {
				keys := orderings[r.IntN(len(orderings))]
				var ord []string
				for _, k := range keys {
					if r.IntN(2) == 0 {
						k = "-" + k
					}
					ord = append(ord, k)
				}
				q := map[string][]string{"page_size": {"1000"}, "ordering": {join(ord)}}
				if r.IntN(2) == 0 {
					name, v := randParam(r)
					q[name] = []string{v}
				}
				conds, err := res.Conds(q)
				if err != nil {
					t.Fatalf("%v: %v", q, err)
				}
				page, err := res.ListPage(ctx, &streamapi.Request{}, q)
				if err != nil {
					t.Fatalf("%v: %v", q, err)
				}
				got := idsOf(page.Results.([]Thing))
				var want []Thing
				for i := range all {
					if res.Match(&all[i], conds) {
						want = append(want, all[i])
					}
				}
				slices.SortStableFunc(want, func(a, b Thing) int { return compareThings(a, b, ord) })
				if !slices.Equal(got, idsOf(want)) {
					t.Fatalf("ordering %v with %v: SQL order %v, in-memory order %v", ord, q, got, idsOf(want))
				}
				if slices.Contains(keys, "m") {
					continue // cursors refuse nullable orderings (tested end to end)
				}
				var walked []int64
				cq := map[string][]string{"page_size": {"7"}, "ordering": q["ordering"], "cursor": {""}}
				for k, v := range q {
					if k != "page_size" && k != "ordering" {
						cq[k] = v
					}
				}
				for n := 0; ; n++ {
					if n > 100 {
						t.Fatalf("cursor pages do not end for %v", cq)
					}
					p, err := res.ListPage(ctx, &streamapi.Request{}, cq)
					if err != nil {
						t.Fatalf("cursor %v: %v", cq, err)
					}
					walked = append(walked, idsOf(p.Results.([]Thing))...)
					if p.NextCursor == "" {
						break
					}
					cq["cursor"] = []string{p.NextCursor}
				}
				if !slices.Equal(walked, got) {
					t.Fatalf("cursor walk for %v: %v, want %v", cq, walked, got)
				}
			}
			// The trials must discriminate: most select some rows but not all.
			if nonEmpty < trials/3 {
				t.Fatalf("only %d of %d trials selected a proper subset", nonEmpty, trials)
			}
			t.Logf("%d random filter sets agreed; %d selected a proper subset of the 300 rows; 200 orderings agreed with an in-memory sort, and their cursor walks with the full list", trials, nonEmpty)
		})
	}
}

// orderings are the sort keys the ordering trials draw from.
var orderings = [][]string{{"n"}, {"s"}, {"f", "n"}, {"b", "s"}, {"t"}, {"m"}, {"m", "s"}, {"s", "n", "b"}, {"t", "f"}}

func join(ss []string) string {
	out := ""
	for i, s := range ss {
		if i > 0 {
			out += ","
		}
		out += s
	}
	return out
}

func idsOf(ts []Thing) []int64 {
	out := make([]int64, len(ts))
	for i, t := range ts {
		out[i] = t.ID
	}
	return out
}

// compareThings is the oracle: ord's keys in turn (a "-" prefix for
// descending), then the id.
func compareThings(a, b Thing, ord []string) int {
	for _, k := range ord {
		desc := k[0] == '-'
		if desc {
			k = k[1:]
		}
		c := 0
		switch k {
		case "n":
			c = cmpOrdered(a.N, b.N)
		case "f":
			c = cmpOrdered(a.F, b.F)
		case "s":
			c = cmpOrdered(a.S, b.S) // Go compares strings byte by byte
		case "b":
			c = cmpOrdered(boolInt(a.B), boolInt(b.B))
		case "t":
			c = a.T.Compare(b.T)
		case "m":
			switch {
			case a.M == nil && b.M == nil:
			case a.M == nil:
				c = -1 // NULL first ascending (and last descending)
			case b.M == nil:
				c = 1
			default:
				c = cmpOrdered(*a.M, *b.M)
			}
		}
		if desc {
			c = -c
		}
		if c != 0 {
			return c
		}
	}
	return cmpOrdered(a.ID, b.ID)
}

func cmpOrdered[V int64 | float64 | string](a, b V) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
