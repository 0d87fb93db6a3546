package sqlstore_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/internal/storetest"
	"github.com/streamapi/streamapi/store/sqlstore"
)

// UpdateWhere shifts 497 of 500 rows in one statement and records one
// update per row it changed, with the exact before and after, in key
// order; rows it sets to what they held send nothing; two concurrent
// shifts of every row both count (the rows are locked, PostgreSQL too).
func TestUpdateWhere(t *testing.T) {
	for _, c := range dialects {
		t.Run(c.name, func(t *testing.T) {
			db, tb, rec := openPairs(t, c.dsn(t), 0, sqlstore.Options{})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := db.Tx(ctx, func(ctx context.Context) error {
				for i := 0; i < 500; i++ {
					if err := tb.Insert(ctx, &pair{X: int64(i), Y: "start"}); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			rec.reset()
			count := &storetest.Statements{Prefix: "UPDATE"}
			db.Bun().AddQueryHook(count)

			n, err := tb.UpdateWhere(ctx, streamapi.ListQuery{Where: []streamapi.Cond{{Column: "x", Lookup: streamapi.LookupGTE, Value: int64(3)}}},
				streamapi.Set{Column: "x", Value: 1, Add: true})
			if err != nil || n != 497 {
				t.Fatalf("UpdateWhere: %d, %v; want 497", n, err)
			}
			if got := count.Count(); got != 1 {
				t.Fatalf("%d UPDATE statements for 497 rows, want 1", got)
			}
			ch := rec.changes()
			if len(ch) != 497 {
				t.Fatalf("%d changes, want 497", len(ch))
			}
			var last int64
			for _, c := range ch {
				var b, a pair
				if err := json.Unmarshal(c.Before, &b); err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(c.Data, &a); err != nil {
					t.Fatal(err)
				}
				if c.Action != streamapi.ChangeUpdate || a.ID != b.ID || a.X != b.X+1 || b.X < 3 || a.ID <= last {
					t.Fatalf("change %s %s: before %+v, after %+v (previous key %d)", c.Action, c.PK, b, a, last)
				}
				last = a.ID
			}
			var p pair
			if err := tb.Get(ctx, &p, int64(3)); err != nil || p.X != 2 {
				t.Fatalf("an unselected row: %+v, %v; want x=2 kept", p, err)
			}

			// Set to what they hold: selected, not changed.
			rec.reset()
			if n, err := tb.UpdateWhere(ctx, streamapi.ListQuery{Equal: map[string]any{"y": "start"}}, streamapi.Set{Column: "y", Value: "start"}); err != nil || n != 500 || len(rec.changes()) != 0 {
				t.Fatalf("a no-op set: %d rows, %v, %d changes; want 500, none", n, err, len(rec.changes()))
			}
			if _, err := tb.UpdateWhere(ctx, streamapi.ListQuery{}, streamapi.Set{Column: "nope", Value: 1}); streamapi.ErrorCode(err) != streamapi.EINVALID {
				t.Fatalf("an unknown column: %v, want EINVALID", err)
			}
			if _, err := tb.UpdateWhere(ctx, streamapi.ListQuery{}, streamapi.Set{Column: "id", Value: 1}); streamapi.ErrorCode(err) != streamapi.EINVALID {
				t.Fatalf("the key: %v, want EINVALID", err)
			}

			// Concurrent shifts of every row: none is lost.
			rec.reset()
			const writers = 4
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := tb.UpdateWhere(ctx, streamapi.ListQuery{}, streamapi.Set{Column: "x", Value: 10, Add: true})
					errs <- err
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if err := tb.Get(ctx, &p, int64(500)); err != nil || p.X != 499+1+writers*10 {
				t.Fatalf("after %d concurrent shifts: %+v, %v; want x=%d", writers, p, err, 499+1+writers*10)
			}
			if n := len(rec.changes()); n != writers*500 {
				t.Fatalf("%d changes from %d shifts of 500 rows", n, writers)
			}
		})
	}
}
