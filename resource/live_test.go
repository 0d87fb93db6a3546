package resource_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/internal/testenv"
	"github.com/streamapi/streamapi/resource"
	"github.com/streamapi/streamapi/store/sqlstore"
)

// changeRecorder is a Publisher keeping the committed changes.
type changeRecorder struct {
	mu sync.Mutex
	cs []streamapi.Change
}

func (r *changeRecorder) Publish(_ context.Context, cs ...streamapi.Change) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cs = append(r.cs, cs...)
	return nil
}

func (r *changeRecorder) take() []streamapi.Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	cs := r.cs
	r.cs = nil
	return cs
}

// clientList applies live list events by the protocol's rule.
type clientList struct {
	pks   []string
	items []json.RawMessage
	count int
}

func (c *clientList) apply(t *testing.T, up streamapi.LiveUpdate) {
	t.Helper()
	for _, e := range up.Events {
		if i := slices.Index(c.pks, string(e.PK)); i >= 0 {
			c.pks, c.items = slices.Delete(c.pks, i, i+1), slices.Delete(c.items, i, i+1)
		}
		if e.Action == streamapi.ChangeDelete {
			continue
		}
		if e.Index < 0 || e.Index > len(c.pks) {
			t.Fatalf("event %s at %d of a list of %d", e.Action, e.Index, len(c.pks))
		}
		c.pks, c.items = slices.Insert(c.pks, e.Index, string(e.PK)), slices.Insert(c.items, e.Index, e.Data)
	}
	c.count = up.Count
}

// TestLiveList_WindowMatchesStore: random live lists over Thing (sorts on
// nullable fields, text byte by byte, times; filters of every lookup;
// sparse fields) fed every committed change of random creates, updates
// and deletes, one at a time: after each change, a client list built from
// the events alone equals a fresh list of the query, and so does the
// count; every few changes, after writes it is not told of, the list is read
// again (as a membership change does) and the events of the difference
// also give the fresh list. SQLite always; PostgreSQL when STREAMAPI_TEST_POSTGRES is set.
func TestLiveList_WindowMatchesStore(t *testing.T) {
	dsns := map[string]func(t *testing.T) string{
		"sqlite":   func(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "l.db") },
		"postgres": func(t *testing.T) string { return testenv.Postgres(t) },
	}
	for name, dsn := range dsns {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			rec := &changeRecorder{}
			db, err := sqlstore.Open(ctx, dsn(t), sqlstore.Options{Publisher: rec})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Bun().NewCreateTable().Model((*Thing)(nil)).Exec(ctx); err != nil {
				t.Fatal(err)
			}
			res, err := resource.New(resource.Config[Thing]{
				Stream: "things", Label: "test.thing", Store: db,
				Filters: allLookups, Search: []string{"s", "p"}, Ordering: []string{"id", "n", "m", "f", "s", "p", "b", "t", "u"}, MaxPageSize: 1000,
			})
			if err != nil {
				t.Fatal(err)
			}
			res.Init(streamapi.Defaults{})
			r := rand.New(rand.NewPCG(3, 4))
			var ids []int64
			for i := 0; i < 40; i++ {
				th := randThing(r)
				if err := res.Create(ctx, &th); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, th.ID)
			}
			rec.take()
			orderings := []string{"n", "-n", "m", "-m", "s", "-s", "p", "-p", "t", "-u", "u", "b,-m", "-f,s", "m,p,-id"}
			for trial := 0; trial < 12; trial++ {
				query := map[string]any{"ordering": orderings[r.IntN(len(orderings))], "page_size": 1 + r.IntN(6), "with_count": r.IntN(2) == 0}
				rest := url.Values{}
				if r.IntN(3) > 0 {
					name, v := randParam(r)
					rest.Set(name, v)
				}
				for k, vs := range rest {
					query[k] = vs[0] // text, as a query string gives it: parsed the same way
				}
				if r.IntN(4) == 0 {
					query["fields"] = []string{"id", "m", "p"}
				}
				raw, _ := json.Marshal(query)
				l, err := res.LiveList(ctx, nil, raw)
				if err != nil {
					t.Fatalf("%s: %v", raw, err)
				}
				_, install, err := l.Read(ctx)
				if err != nil {
					t.Fatal(err)
				}
				install()
				var cl clientList
				if err := json.Unmarshal(mustResults(t, l), &cl.items); err != nil {
					t.Fatal(err)
				}
				cl.count, _ = l.Count()
				for _, it := range cl.items {
					var o struct{ ID int64 }
					_ = json.Unmarshal(it, &o)
					cl.pks = append(cl.pks, fmt.Sprint(o.ID))
				}
				fresh := func(step string) {
					t.Helper()
					want, err := json.Marshal(mustFresh(t, res, raw))
					if err != nil {
						t.Fatal(err)
					}
					got, _ := json.Marshal(cl.items)
					if string(got) != string(want) {
						t.Fatalf("%s, %s: client list %s, fresh %s", raw, step, got, want)
					}
					if n, asked := l.Count(); asked {
						page, err := res.ListPage(ctx, &streamapi.Request{}, queryValues(raw))
						if err != nil {
							t.Fatal(err)
						}
						if n != page.Count || cl.count != page.Count {
							t.Fatalf("%s, %s: count %d (client %d), fresh %d", raw, step, n, cl.count, page.Count)
						}
					}
				}
				fresh("snapshot")
				for step := 0; step < 40; step++ {
					switch op := r.IntN(10); {
					case op < 3:
						th := randThing(r)
						if err := res.Create(ctx, &th); err != nil {
							t.Fatal(err)
						}
						ids = append(ids, th.ID)
					case op < 8 && len(ids) > 0:
						th := randThing(r)
						th.ID = ids[r.IntN(len(ids))]
						if err := res.Update(ctx, &th); err != nil {
							t.Fatal(err)
						}
					case len(ids) > 0:
						i := r.IntN(len(ids))
						if err := res.Delete(ctx, ids[i]); err != nil {
							t.Fatal(err)
						}
						ids = slices.Delete(ids, i, i+1)
					}
					for _, c := range rec.take() {
						up, err := l.Change(ctx, res.DecodeLive(&c))
						if err != nil {
							t.Fatal(err)
						}
						cl.apply(t, up)
					}
					fresh(fmt.Sprint("step ", step))
					if step%10 == 9 {
						// Writes the list does not hear of (as objects
						// entering a user's view with a membership),
						// then a read: its events take the client there.
						for k := 0; k < 4 && len(ids) > 0; k++ {
							th := randThing(r)
							th.ID = ids[r.IntN(len(ids))]
							if k%2 == 0 && len(cl.pks) > 0 {
								// One in the window: its data changes, and
								// maybe its place.
								fmt.Sscan(cl.pks[r.IntN(len(cl.pks))], &th.ID)
								th.M, th.P = nil, nil
							}
							if err := res.Update(ctx, &th); err != nil {
								t.Fatal(err)
							}
						}
						rec.take()
						_, install, err := l.Read(ctx)
						if err != nil {
							t.Fatal(err)
						}
						up := install()
						cl.apply(t, up)
						fresh(fmt.Sprint("reload at step ", step))
					}
				}
			}
		})
	}
}

func mustResults(t *testing.T, l streamapi.LiveList) json.RawMessage {
	t.Helper()
	b, err := l.Results()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// queryValues turns a live list's query into REST query parameters.
func queryValues(raw json.RawMessage) map[string][]string {
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	out := map[string][]string{}
	for k, v := range m {
		switch x := v.(type) {
		case string:
			out[k] = []string{x}
		case []any:
			s := ""
			for i, it := range x {
				if i > 0 {
					s += ","
				}
				s += fmt.Sprint(it)
			}
			out[k] = []string{s}
		default:
			out[k] = []string{fmt.Sprint(x)}
		}
	}
	return out
}

// mustFresh lists the live list's query as a list request does: its
// first page, as JSON objects.
func mustFresh(t *testing.T, res *resource.Resource[Thing], raw json.RawMessage) []json.RawMessage {
	t.Helper()
	page, err := res.ListPage(context.Background(), &streamapi.Request{}, queryValues(raw))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(page.Results)
	if err != nil {
		t.Fatal(err)
	}
	var out []json.RawMessage
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out == nil {
		out = []json.RawMessage{}
	}
	return out
}
