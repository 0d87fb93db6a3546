package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"runtime"

	"github.com/streamapi/streamapi"
)

// Group commit (SQLite). SQLite has one writer. With a transaction per
// write, the writer connection sat idle between transactions while the
// next waiting goroutine was woken and scheduled, and every write paid for
// its own commit. Instead, one goroutine (the committer) owns the writer:
// Tx hands it the function, and it runs the functions waiting at that
// moment (up to maxBatch) in one transaction, each inside its own
// savepoint, so that one failing rolls back only its own work. One commit
// then makes the batch durable, and the batch's changes are logged and
// published in order. Every caller learns its own result after the commit.
// docs/design.md has the trade-offs.

// maxBatch bounds the writes one transaction carries.
const maxBatch = 128

var (
	// errClosed answers writes made after Close.
	errClosed = errors.New("sqlstore: the store is closed")
	// errBatchLost answers a write whose work was undone because another
	// write of its batch aborted the shared transaction.
	errBatchLost = &streamapi.Error{Code: streamapi.EINTERNAL, Message: "The write was rolled back with its batch; it can be retried."}
)

// writeReq is one Tx call waiting for the committer.
type writeReq struct {
	ctx  context.Context
	fn   func(ctx context.Context) error
	done chan struct{}

	ran      bool // fn was called
	err      error
	panicked bool
	panicVal any
	goexit   bool // fn called runtime.Goexit (t.Fatal in a test)
}

// startCommitter starts the goroutine that owns the writer.
func (db *DB) startCommitter() {
	db.wq, db.wStop, db.wDone = make(chan *writeReq), make(chan struct{}), make(chan struct{})
	go db.commitLoop()
}

// commitLoop runs batches until stopCommitter. A function that calls
// runtime.Goexit ends this goroutine; another takes over, and first runs
// the writes of that batch that had not run (db.pending).
func (db *DB) commitLoop() {
	stopped := false
	defer func() {
		if stopped {
			close(db.wDone)
		} else {
			go db.commitLoop()
		}
	}()
	buf := make([]*writeReq, 0, maxBatch)
	for {
		var batch []*writeReq
		if len(db.pending) > 0 {
			batch, db.pending = append(buf[:0], db.pending...), nil
		} else {
			select {
			case r := <-db.wq:
				batch = append(buf[:0], r)
			case <-db.wStop:
				stopped = true
				return
			}
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case r := <-db.wq:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		// A batch whose transaction a write aborted runs again without
		// the writes that had already run.
		for len(batch) > 0 {
			batch = db.runBatch(batch)
		}
		clear(buf[:cap(buf)])
	}
}

// stopCommitter stops the committer once its current batch is done.
func (db *DB) stopCommitter() {
	if db.wq != nil {
		db.wOnce.Do(func() { close(db.wStop) })
		<-db.wDone
	}
}

// batchTx hands fn to the committer and waits for its result. A context
// done before fn starts ends the wait with its error. fn sees the caller's
// context; the statements it runs through the tables do not see its
// cancellation (stmtCtx), because SQLite rolls back the whole transaction,
// other callers' work included, when a statement is interrupted.
func (db *DB) batchTx(ctx context.Context, fn func(ctx context.Context) error) error {
	r := &writeReq{ctx: ctx, fn: fn, done: make(chan struct{})}
	select {
	case db.wq <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-db.wStop:
		return errClosed
	}
	<-r.done
	switch {
	case r.panicked:
		panic(r.panicVal)
	case r.goexit:
		runtime.Goexit()
	}
	return r.err
}

// runBatch runs the batch's functions in one transaction and answers each
// caller. When a function aborts the whole transaction (a statement SQLite
// answers by rolling everything back), the writes that had run are answered
// errBatchLost and those that had not are returned, to run in a new batch.
func (db *DB) runBatch(batch []*writeReq) (again []*writeReq) {
	ctx := context.Background()
	var tx interface{ Rollback() error }
	finished := false
	defer func() {
		if !finished {
			// A panic outside the functions (the change log) or a
			// function's runtime.Goexit, before the commit: nothing of the
			// batch is written. The writes that had not run yet run in the
			// next batch, here or in the committer that takes over.
			v := recover()
			if tx != nil {
				_ = tx.Rollback()
			}
			for _, r := range batch {
				switch {
				case !r.ran:
					again = append(again, r)
				case r.err == nil && !r.panicked && !r.goexit:
					r.err = errBatchLost
				}
			}
			if v != nil {
				db.log.Error("panic in the committer", "panic", v)
			} else {
				// Goexit: this goroutine ends; its successor runs them.
				db.pending, again = again, nil
				for _, r := range batch {
					if !contains(db.pending, r) {
						close(r.done)
					}
				}
				return
			}
		}
		for _, r := range batch {
			if !contains(again, r) {
				close(r.done)
			}
		}
	}()
	db.prepareInserts(ctx)
	btx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		for _, r := range batch {
			r.err = fmt.Errorf("sqlstore: begin: %w", err)
		}
		finished = true
		return nil
	}
	tx = btx
	db.batches.Add(1)
	db.batchedWrites.Add(uint64(len(batch)))
	st := &txState{db: db, tx: btx, batched: true}
	savepoints := len(batch) > 1
	ok := 0
	for i, r := range batch {
		if r.err = r.ctx.Err(); r.err != nil {
			continue
		}
		if savepoints {
			if _, err := btx.ExecContext(ctx, "SAVEPOINT w"); err != nil {
				r.err = fmt.Errorf("sqlstore: savepoint: %w", err)
				continue
			}
		}
		mark := len(st.changes)
		st.reads = nil // each write is a transaction of its own
		r.run(context.WithValue(r.ctx, txKey{}, st))
		if r.err != nil {
			st.changes = st.changes[:mark]
			if savepoints {
				_, err := btx.ExecContext(ctx, "ROLLBACK TO w")
				if err == nil {
					_, err = btx.ExecContext(ctx, "RELEASE w")
				}
				if err != nil {
					// The transaction is gone: r's statement rolled it
					// all back. r keeps its own error.
					db.log.Warn("a write aborted its batch's transaction", "err", r.err, "rollback", err)
					_ = btx.Rollback()
					for _, o := range batch[:i] {
						if o.ran && o.err == nil {
							o.err = errBatchLost
						}
					}
					finished = true
					return batch[i+1:]
				}
			}
			continue
		}
		if savepoints {
			if _, err := btx.ExecContext(ctx, "RELEASE w"); err != nil {
				db.failBatch(btx, batch[:i+1], fmt.Errorf("sqlstore: release savepoint: %w", err))
				finished = true
				return batch[i+1:]
			}
		}
		ok++
	}
	if ok == 0 {
		_ = btx.Rollback()
		finished = true
		return nil
	}
	if db.changeLog && len(st.changes) > 0 {
		if err := st.logChanges(ctx); err != nil {
			db.failBatch(btx, batch, fmt.Errorf("sqlstore: %w", mapErr(err)))
			finished = true
			return nil
		}
	}
	db.pubMu.Lock()
	defer db.pubMu.Unlock()
	if err := btx.Commit(); err != nil {
		db.failBatch(nil, batch, fmt.Errorf("sqlstore: commit: %w", mapErr(err)))
		finished = true
		return nil
	}
	tx, finished = nil, true // committed: whatever publishing does, the writes stand
	db.publishCommitted(ctx, st.changes)
	return nil
}

// publishCommitted publishes a committed batch's changes. A publisher that
// panics is logged, as a publish error is: the writes are durable, and with
// the change log on, receivers find the changes there.
func (db *DB) publishCommitted(ctx context.Context, changes []streamapi.Change) {
	defer func() {
		if v := recover(); v != nil {
			db.log.Error("panic in the publisher", "panic", v, "changes", len(changes))
		}
	}()
	db.publish(ctx, changes)
}

func contains(rs []*writeReq, r *writeReq) bool {
	for _, o := range rs {
		if o == r {
			return true
		}
	}
	return false
}

// failBatch rolls tx back (when not nil) and answers err to every caller
// whose function had succeeded: none of the batch is written.
func (db *DB) failBatch(tx interface{ Rollback() error }, batch []*writeReq, err error) {
	if tx != nil {
		_ = tx.Rollback()
	}
	for _, r := range batch {
		if r.err == nil && !r.panicked {
			r.err = err
		}
	}
}

// run calls the function, turning a panic into a failure of this write
// alone; batchTx panics again in the caller's goroutine. A runtime.Goexit
// is recorded before it unwinds the committer.
func (r *writeReq) run(ctx context.Context) {
	r.ran, r.goexit = true, true
	defer func() {
		if v := recover(); v != nil {
			r.goexit = false
			r.panicked, r.panicVal = true, v
			r.err = fmt.Errorf("sqlstore: panic in transaction: %v", v)
		}
	}()
	r.err = r.fn(ctx)
	r.goexit = false
}
