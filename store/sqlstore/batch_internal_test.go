package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/streamapi/streamapi"
)

// openBatchTest opens a SQLite store with plain_rows and a trigger that
// aborts the whole transaction (RAISE(ROLLBACK)) when a row's text is
// "abort", and holds the committer until the returned release is called,
// so that the writes made meanwhile form one batch.
func openBatchTest(t *testing.T) (db *DB, tb *table, release func()) {
	t.Helper()
	ctx := context.Background()
	db, err := Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "t.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.w.NewCreateTable().Model((*plainRow)(nil)).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := db.w.ExecContext(ctx, `CREATE UNIQUE INDEX plain_rows_text ON plain_rows (text)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.w.ExecContext(ctx, `CREATE TRIGGER plain_rows_abort BEFORE INSERT ON plain_rows
		WHEN NEW.text = 'abort' BEGIN SELECT RAISE(ROLLBACK, 'aborted by trigger'); END`); err != nil {
		t.Fatal(err)
	}
	st, err := db.Table((*plainRow)(nil), "plain")
	if err != nil {
		t.Fatal(err)
	}
	hold, held := make(chan struct{}), make(chan struct{})
	go func() {
		_ = db.Tx(ctx, func(context.Context) error {
			close(held)
			<-hold
			return nil
		})
	}()
	<-held
	var once sync.Once
	release = func() { once.Do(func() { close(hold) }) }
	t.Cleanup(release)
	return db, st.(*table), release
}

// queue starts one insert per text, in order, each blocked on the committer
// before the next starts (the channel serves waiting senders in order).
func queue(tb *table, texts ...string) []chan error {
	out := make([]chan error, len(texts))
	for i, text := range texts {
		out[i] = make(chan error, 1)
		go func() {
			out[i] <- tb.Insert(context.Background(), &plainRow{Text: text, At: time.Unix(0, 0)})
		}()
		time.Sleep(20 * time.Millisecond)
	}
	return out
}

func texts(t *testing.T, db *DB) map[string]bool {
	t.Helper()
	var rows []plainRow
	if err := db.r.NewSelect().Model(&rows).Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, r := range rows {
		got[r.Text] = true
	}
	return got
}

// In one batch, a constraint failure undoes only its own write.
func TestBatch_StatementFailureIsItsOwn(t *testing.T) {
	db, tb, release := openBatchTest(t)
	before := db.batches.Load()
	res := queue(tb, "a", "b", "a", "c")
	release()
	for i, want := range []bool{true, true, false, true} {
		err := <-res[i]
		if (err == nil) != want {
			t.Errorf("insert %d: %v, want success %v", i, err, want)
		}
	}
	if got := texts(t, db); len(got) != 3 || !got["a"] || !got["b"] || !got["c"] {
		t.Fatalf("rows %v", got)
	}
	if n, w := db.batches.Load()-before, db.batchedWrites.Load(); n > 2 || w < 5 {
		t.Fatalf("%d transactions for the held one and 4 queued writes (%d writes batched): not batched", n, w)
	}
}

// A write that aborts the whole transaction fails alone: the writes that
// ran before it in its batch are lost with it (errBatchLost) and Tx runs
// them again, the ones after it run again in a new transaction; all of
// them succeed.
func TestBatch_TransactionAbortFailsOnlyItsBatchmates(t *testing.T) {
	db, tb, release := openBatchTest(t)
	retries := db.Retries()
	res := queue(tb, "before1", "before2", "abort", "after1", "after2")
	release()
	errs := make([]error, len(res))
	for i := range res {
		errs[i] = <-res[i]
	}
	if errs[2] == nil {
		t.Fatal("the aborting insert succeeded")
	}
	for i, err := range errs {
		if i != 2 && err != nil {
			t.Errorf("insert %d: %v, want success", i, err)
		}
	}
	if n := db.Retries() - retries; n != 2 {
		t.Errorf("%d writes run again after being lost with their batch, want 2", n)
	}
	got := texts(t, db)
	if len(got) != 4 || got["abort"] {
		t.Fatalf("rows %v, want all but abort", got)
	}
	// The store still works.
	if err := tb.Insert(context.Background(), &plainRow{Text: "later", At: time.Unix(0, 0)}); err != nil {
		t.Fatal(err)
	}
}

// A function that calls runtime.Goexit (t.Fatal in a test) ends the
// caller's goroutine as it would have without the committer; the batch is
// not committed, and the store keeps working.
func TestBatch_GoexitInFunction(t *testing.T) {
	db, tb, release := openBatchTest(t)
	release()
	exited := make(chan bool)
	go func() {
		returned := false
		defer func() { exited <- !returned }()
		_ = db.Tx(context.Background(), func(ctx context.Context) error {
			if err := tb.Insert(ctx, &plainRow{Text: "x", At: time.Unix(0, 0)}); err != nil {
				return err
			}
			runtimeGoexit()
			return nil
		})
		returned = true
	}()
	if !<-exited {
		t.Fatal("Tx returned to a caller whose function called runtime.Goexit")
	}
	if got := texts(t, db); len(got) != 0 {
		t.Fatalf("rows %v after the function exited", got)
	}
	for i := range 3 {
		if err := tb.Insert(context.Background(), &plainRow{Text: fmt.Sprint(i), At: time.Unix(0, 0)}); err != nil {
			t.Fatalf("insert after the Goexit: %v", err)
		}
	}
}

// runtimeGoexit is runtime.Goexit, named for the test's reader.
var runtimeGoexit = runtime.Goexit

// A function that calls runtime.Goexit inside a batch: the writes that ran
// before it are lost with the batch (errBatchLost) and run again by Tx,
// those after it run in the next committer's first batch; all succeed.
func TestBatch_GoexitAmongBatchmates(t *testing.T) {
	db, tb, release := openBatchTest(t)
	insert := func(text string, exit bool) chan error {
		out := make(chan error, 1)
		go func() {
			returned := false
			defer func() {
				if !returned {
					out <- errors.New("goexit")
				}
			}()
			err := db.Tx(context.Background(), func(ctx context.Context) error {
				if err := tb.Insert(ctx, &plainRow{Text: text, At: time.Unix(0, 0)}); err != nil {
					return err
				}
				if exit {
					runtimeGoexit()
				}
				return nil
			})
			returned = true
			out <- err
		}()
		time.Sleep(20 * time.Millisecond)
		return out
	}
	retries := db.Retries()
	a, b, c := insert("a", false), insert("b", true), insert("c", false)
	release()
	if err := <-a; err != nil {
		t.Errorf("write before the Goexit: %v, want success (run again)", err)
	}
	if err := <-b; err == nil || err.Error() != "goexit" {
		t.Errorf("the exiting write's caller: %v, want its goroutine ended", err)
	}
	if err := <-c; err != nil {
		t.Errorf("write after the Goexit: %v, want success", err)
	}
	if n := db.Retries() - retries; n != 1 {
		t.Errorf("%d writes run again after the Goexit, want 1", n)
	}
	if got := texts(t, db); len(got) != 2 || !got["a"] || !got["c"] {
		t.Fatalf("rows %v, want a and c", got)
	}
}

type panickyPublisher struct{}

func (panickyPublisher) Publish(context.Context, ...streamapi.Change) error { panic("publisher") }

// A publisher that panics after the commit does not turn a durable write
// into a reported failure, nor kill the committer.
func TestBatch_PublisherPanicAfterCommit(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "t.db"), Options{Publisher: panickyPublisher{}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.w.NewCreateTable().Model((*plainRow)(nil)).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := db.Table((*plainRow)(nil), "plain")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := st.Insert(ctx, &plainRow{Text: fmt.Sprint(i), At: time.Unix(0, 0)}); err != nil {
			t.Fatalf("insert %d: %v", i, err)
		}
	}
	if got := texts(t, db); len(got) != 2 {
		t.Fatalf("rows %v", got)
	}
}
