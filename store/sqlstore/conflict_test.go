package sqlstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/internal/storetest"
	"github.com/streamapi/streamapi/internal/testenv"
	"github.com/streamapi/streamapi/store/sqlstore"
	"github.com/uptrace/bun"
)

// pair is a row with two columns that two transactions write.
type pair struct {
	bun.BaseModel `bun:"table:sqlstore_pair"`
	ID            int64  `bun:"id,pk,autoincrement" json:"id"`
	X             int64  `bun:"x,notnull" json:"x"`
	Y             string `bun:"y,notnull" json:"y"`
}

func openPairs(t *testing.T, dsn string, rows int, opts sqlstore.Options) (*sqlstore.DB, streamapi.Table, *recorder) {
	t.Helper()
	rec := &recorder{}
	opts.Publisher = rec
	db := mustOpen(t, dsn, opts)
	ctx := context.Background()
	if _, err := db.Bun().NewCreateTable().Model((*pair)(nil)).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	tb, err := db.Table((*pair)(nil), "test.pair")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < rows; i++ {
		if err := tb.Insert(ctx, &pair{Y: "start"}); err != nil {
			t.Fatal(err)
		}
	}
	rec.reset()
	return db, tb, rec
}

// recorder keeps what is published after the rows' inserts.
type recorder struct {
	storetest.Recorder
	from int
}

func (r *recorder) reset() { r.from = len(r.Changes()) }

func (r *recorder) changes() []streamapi.Change { return r.Changes()[r.from:] }

// TestPostgres_DeadlockIsRetried: two transactions lock two rows in
// opposite orders, each waiting for the other to hold its first row, so
// PostgreSQL must kill one with 40P01. Tx runs the victim again: both
// succeed, each write is stored and published once.
func TestPostgres_DeadlockIsRetried(t *testing.T) {
	db, tb, rec := openPairs(t, testenv.Postgres(t), 2, sqlstore.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var held sync.WaitGroup // both hold their first row (first runs only)
	held.Add(2)
	var runs atomic.Int64
	write := func(first, second int64, x int64) error {
		var once sync.Once
		return db.Tx(ctx, func(ctx context.Context) error {
			runs.Add(1)
			var a, b pair
			if err := tb.Lock(ctx, &a, first); err != nil {
				return err
			}
			once.Do(func() { held.Done(); held.Wait() })
			if err := tb.Lock(ctx, &b, second); err != nil {
				return err
			}
			a.X, b.X = x, x
			if err := tb.Update(ctx, &a); err != nil {
				return err
			}
			return tb.Update(ctx, &b)
		})
	}
	errs := make(chan error, 2)
	go func() { errs <- write(1, 2, 10) }()
	go func() { errs <- write(2, 1, 20) }()
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Fatalf("a transaction failed: %v", err)
		}
	}
	if db.Retries() < 1 || runs.Load() < 3 {
		t.Fatalf("no deadlock was retried (%d runs, %d retries): the test did not deadlock", runs.Load(), db.Retries())
	}
	if got := len(rec.changes()); got != 4 {
		t.Errorf("%d changes published, want 4 (2 per committed transaction)", got)
	}
	var p1, p2 pair
	_ = tb.Get(ctx, &p1, int64(1))
	_ = tb.Get(ctx, &p2, int64(2))
	if p1.X != p2.X || (p1.X != 10 && p1.X != 20) {
		t.Errorf("rows ended %d and %d: one transaction's pair of writes, not a mix", p1.X, p2.X)
	}
}

// TestConflict_StaleColumnIsRetried: a transaction reads a row without a
// lock; another changes the column the first then writes, and commits. The
// first run fails on the stale column and the second sees the other's
// value: nothing is lost. A column it did not change is not written, so
// the other's write to it stands (tested on both databases; on SQLite the
// other write goes through another connection, as psql's would).
func TestConflict_StaleColumnIsRetried(t *testing.T) {
	db, tb, _ := openPairs(t, testenv.Postgres(t), 1, sqlstore.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	runs := 0
	err := db.Tx(ctx, func(ctx context.Context) error {
		runs++
		var p pair
		if err := tb.Get(ctx, &p, int64(1)); err != nil {
			return err
		}
		if runs == 1 {
			// Another transaction commits x+1 and a new y after the read.
			if _, err := db.Bun().ExecContext(ctx, "UPDATE sqlstore_pair SET x = x + 1, y = 'other' WHERE id = 1"); err != nil {
				return err
			}
		}
		p.X++
		return tb.Update(ctx, &p)
	})
	if err != nil {
		t.Fatal(err)
	}
	var p pair
	if err := tb.Get(ctx, &p, int64(1)); err != nil {
		t.Fatal(err)
	}
	if runs != 2 || p.X != 2 || p.Y != "other" {
		t.Fatalf("after %d runs the row is x=%d y=%q; want 2 runs, x=2 (both increments), y=other", runs, p.X, p.Y)
	}
}

// TestConflict_UntouchedColumnsKept: an update writes only the columns its
// object changed since the transaction read it; one another transaction
// changed meanwhile keeps that value, with no conflict and no retry, and
// the object and the event carry the row as stored. (On SQLite no other
// transaction can write between a transaction's read and its write.)
func TestConflict_UntouchedColumnsKept(t *testing.T) {
	db, tb, rec := openPairs(t, testenv.Postgres(t), 1, sqlstore.Options{})
	ctx := context.Background()
	runs := 0
	err := db.Tx(ctx, func(ctx context.Context) error {
		runs++
		var p pair
		if err := tb.Get(ctx, &p, int64(1)); err != nil {
			return err
		}
		// Another transaction (another connection of the pool) commits.
		if _, err := db.Bun().ExecContext(ctx, "UPDATE sqlstore_pair SET x = 7 WHERE id = 1"); err != nil {
			return err
		}
		p.Y = "mine"
		if err := tb.Update(ctx, &p); err != nil {
			return err
		}
		if p.X != 7 {
			t.Errorf("the object after Update has x=%d, not the stored 7", p.X)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if runs != 1 {
		t.Errorf("%d runs for a write of a column nobody else changed", runs)
	}
	cs := rec.changes()
	if len(cs) != 1 || string(cs[0].Data) != `{"id":1,"x":7,"y":"mine"}` || string(cs[0].Before) != `{"id":1,"x":7,"y":"start"}` {
		t.Fatalf("published %+v; want one update from x=7 y=start to x=7 y=mine", cs)
	}
}

// TestConflict_GivesUpAsContention: a transaction that fails on a
// retryable conflict every time stops after TxAttempts runs with
// ErrContention (409), not a 500.
func TestConflict_GivesUpAsContention(t *testing.T) {
	db, _, _ := openPairs(t, testenv.Postgres(t), 0, sqlstore.Options{TxAttempts: 3})
	runs := 0
	err := db.Tx(context.Background(), func(ctx context.Context) error {
		runs++
		return fmt.Errorf("a statement: %w", &pgconn.PgError{Code: "40P01", Message: "deadlock detected"})
	})
	if !errors.Is(err, sqlstore.ErrContention) || runs != 3 || streamapi.ErrorCode(err) != streamapi.ECONFLICT {
		t.Fatalf("after %d runs: %v (code %s); want 3 runs and ErrContention", runs, err, streamapi.ErrorCode(err))
	}
	// Any other error is returned at once.
	runs = 0
	other := errors.New("boom")
	if err := db.Tx(context.Background(), func(ctx context.Context) error { runs++; return other }); err != other || runs != 1 {
		t.Fatalf("a plain error: %v after %d runs", err, runs)
	}
}
