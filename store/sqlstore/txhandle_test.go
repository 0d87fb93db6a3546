package sqlstore_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/internal/testenv"
	"github.com/streamapi/streamapi/store/sqlstore"
)

// dialects open a fresh store of each kind; PostgreSQL's skips without
// STREAMAPI_TEST_POSTGRES.
var dialects = []struct {
	name string
	dsn  func(*testing.T) string
}{
	{"sqlite", func(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "t.db") }},
	{"postgres", func(t *testing.T) string { return testenv.Postgres(t) }},
}

// sqlstore.Tx(ctx) is the transaction DB.Tx runs in: SQL on it sees the
// transaction's own writes, which other sessions do not see before commit,
// and it rolls back with it; outside a transaction it is nil, and IDB
// falls back to the writer's pool. (A query through Bun() inside Tx waited
// forever on SQLite, whose one writer connection the transaction holds.)
func TestTxHandle(t *testing.T) {
	for _, c := range dialects {
		t.Run(c.name, func(t *testing.T) {
			db, tb, rec := openPairs(t, c.dsn(t), 1, sqlstore.Options{})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if sqlstore.Tx(ctx) != nil {
				t.Fatal("Tx outside a transaction is not nil")
			}
			if _, err := db.IDB(ctx).NewUpdate().Table("sqlstore_pair").Set("y = ?", "pool").Where("id = 1").Exec(ctx); err != nil {
				t.Fatalf("IDB outside a transaction: %v", err)
			}
			var inside, outside int
			boom := errors.New("roll back")
			err := db.Tx(ctx, func(ctx context.Context) error {
				tx := sqlstore.Tx(ctx)
				if tx == nil {
					return errors.New("Tx inside a transaction is nil")
				}
				if err := tb.Insert(ctx, &pair{Y: "in tx"}); err != nil {
					return err
				}
				// The row the transaction inserted through its table.
				if err := tx.NewSelect().Table("sqlstore_pair").ColumnExpr("count(*)").Where("y = ?", "in tx").Scan(ctx, &inside); err != nil {
					return err
				}
				if _, err := tx.NewUpdate().Table("sqlstore_pair").Set("x = 41").Where("id = 1").Exec(ctx); err != nil {
					return err
				}
				if db.IDB(ctx) != tx {
					return errors.New("IDB inside a transaction is not its transaction")
				}
				return boom
			})
			if !errors.Is(err, boom) {
				t.Fatalf("Tx: %v, want the function's error", err)
			}
			if inside != 1 {
				t.Fatalf("inside the transaction its own insert counted %d times, want 1", inside)
			}
			if err := db.Bun().NewSelect().Table("sqlstore_pair").ColumnExpr("count(*)").Where("y = ? OR x = 41", "in tx").Scan(ctx, &outside); err != nil {
				t.Fatal(err)
			}
			if outside != 0 {
				t.Fatalf("after the rollback %d rows hold the transaction's writes, want none", outside)
			}
			if n := len(rec.changes()); n != 0 {
				t.Fatalf("%d changes published for a rolled-back transaction", n)
			}
			// Committed, its raw write stays.
			if err := db.Tx(ctx, func(ctx context.Context) error {
				_, err := sqlstore.Tx(ctx).NewUpdate().Table("sqlstore_pair").Set("x = 7").Where("id = 1").Exec(ctx)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			var p pair
			if err := tb.Get(ctx, &p, int64(1)); err != nil || p.X != 7 || p.Y != "pool" {
				t.Fatalf("after commit: %+v, %v; want x=7, y=pool", p, err)
			}
		})
	}
}

// ReadTx is one snapshot off the write path: a row read twice inside it
// reads the same while another session commits a change between the
// reads (the writer does not wait for it), Lock reads without locking,
// and a write inside it fails without being made.
func TestReadTx(t *testing.T) {
	for _, c := range dialects {
		t.Run(c.name, func(t *testing.T) {
			db, tb, rec := openPairs(t, c.dsn(t), 1, sqlstore.Options{})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var first, second, locked pair
			err := db.ReadTx(ctx, func(rctx context.Context) error {
				if sqlstore.Tx(rctx) == nil {
					return errors.New("no transaction inside ReadTx")
				}
				if err := tb.Get(rctx, &first, int64(1)); err != nil {
					return err
				}
				// Another session's write commits meanwhile.
				if err := tb.Update(ctx, &pair{ID: 1, X: 5, Y: "later"}); err != nil {
					return err
				}
				if err := tb.Get(rctx, &second, int64(1)); err != nil {
					return err
				}
				if err := tb.Lock(rctx, &locked, int64(1)); err != nil {
					return err
				}
				if err := tb.Insert(rctx, &pair{Y: "no"}); err == nil {
					return errors.New("an insert inside ReadTx succeeded")
				}
				if err := db.Tx(rctx, func(context.Context) error { return nil }); err == nil {
					return errors.New("Tx inside ReadTx succeeded")
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if first.Y != "start" || second != first || locked != first {
				t.Fatalf("reads inside one ReadTx: %+v, then %+v, then %+v; want the snapshot's row each time", first, second, locked)
			}
			var now pair
			if err := tb.Get(ctx, &now, int64(1)); err != nil || now.Y != "later" {
				t.Fatalf("after ReadTx: %+v, %v; want the committed write", now, err)
			}
			all := make([]pair, 0)
			if err := tb.List(ctx, &all, streamapi.ListQuery{}); err != nil || len(all) != 1 {
				t.Fatalf("%d rows (%v): the insert inside ReadTx was made", len(all), err)
			}
			if n := len(rec.changes()); n != 1 {
				t.Fatalf("%d changes published, want the one update", n)
			}
		})
	}
}
