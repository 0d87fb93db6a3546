package sqlstore_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/streamapi/streamapi/internal/testenv"
	"github.com/streamapi/streamapi/store/sqlstore"
)

// sqlstore.Tx(ctx) is the transaction DB.Tx runs in: SQL on it sees the
// transaction's own writes, which other sessions do not see before commit,
// and it rolls back with it; outside a transaction it is nil, and IDB
// falls back to the writer's pool. (A query through Bun() inside Tx waited
// forever on SQLite, whose one writer connection the transaction holds.)
func TestTxHandle(t *testing.T) {
	for _, c := range []struct {
		name string
		dsn  func(*testing.T) string
	}{
		{"sqlite", func(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "tx.db") }},
		{"postgres", func(t *testing.T) string { return testenv.Postgres(t) }},
	} {
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
