package sqlstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/internal/storetest"
)

// Concurrent transactions on SQLite share commits (group commit), yet each
// keeps its own outcome: a failing or panicking one leaves no row and no
// change, the others are written, published once each, in seq order with
// no gaps.
func TestSQLite_GroupCommitKeepsEachOutcome(t *testing.T) {
	rec := &storetest.Recorder{}
	db := MustOpen(t, rec)
	tb, err := db.Table((*storetest.Widget)(nil), storetest.Label)
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	errBoom := errors.New("boom")
	var wg sync.WaitGroup
	results := make([]error, n)
	panics := make([]any, n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { panics[i] = recover() }()
			<-start
			ctx := context.Background()
			results[i] = db.Tx(ctx, func(ctx context.Context) error {
				// Two writes per transaction: a failure after the first
				// must undo it.
				if err := tb.Insert(ctx, &storetest.Widget{Name: fmt.Sprintf("a%d", i), Size: int64(i)}); err != nil {
					return err
				}
				switch i % 10 {
				case 3:
					return errBoom
				case 7:
					panic(fmt.Sprintf("panic %d", i))
				}
				return tb.Insert(ctx, &storetest.Widget{Name: fmt.Sprintf("b%d", i), Size: int64(i)})
			})
		}()
	}
	close(start)
	wg.Wait()
	want := map[string]bool{}
	for i := 0; i < n; i++ {
		switch i % 10 {
		case 3:
			if !errors.Is(results[i], errBoom) {
				t.Errorf("tx %d: %v, want boom", i, results[i])
			}
		case 7:
			if panics[i] != fmt.Sprintf("panic %d", i) {
				t.Errorf("tx %d: recovered %v, want its own panic", i, panics[i])
			}
		default:
			if results[i] != nil || panics[i] != nil {
				t.Errorf("tx %d: %v %v", i, results[i], panics[i])
			}
			want[fmt.Sprintf("a%d", i)], want[fmt.Sprintf("b%d", i)] = true, true
		}
	}
	var rows []storetest.Widget
	if err := tb.List(context.Background(), &rows, streamapi.ListQuery{}); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, r := range rows {
		got[r.Name] = true
	}
	if len(rows) != len(want) || len(got) != len(want) {
		t.Fatalf("%d rows (%d names), want %d", len(rows), len(got), len(want))
	}
	for name := range want {
		if !got[name] {
			t.Fatalf("row %s missing", name)
		}
	}
	changes := rec.Changes()
	if len(changes) != len(want) {
		t.Fatalf("%d changes published, want %d", len(changes), len(want))
	}
	seqs := make([]int64, len(changes))
	for i, c := range changes {
		seqs[i] = c.Seq
	}
	if !slices.IsSorted(seqs) || seqs[0] != 1 || seqs[len(seqs)-1] != int64(len(seqs)) {
		t.Fatalf("seqs not 1..%d in order: first %d last %d sorted %v", len(seqs), seqs[0], seqs[len(seqs)-1], slices.IsSorted(seqs))
	}
}

// A transaction whose context ends while it waits for the writer returns
// the context's error and writes nothing; after Close, Tx fails at once.
func TestSQLite_GroupCommitCancelAndClose(t *testing.T) {
	db := MustOpen(t, nil)
	tb, err := db.Table((*storetest.Widget)(nil), storetest.Label)
	if err != nil {
		t.Fatal(err)
	}
	hold, held := make(chan struct{}), make(chan struct{})
	go func() {
		_ = db.Tx(context.Background(), func(ctx context.Context) error {
			close(held)
			<-hold // keeps the committer busy
			return nil
		})
	}()
	<-held
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	ran := false
	err = db.Tx(ctx, func(ctx context.Context) error {
		ran = true
		return tb.Insert(ctx, &storetest.Widget{Name: "late"})
	})
	close(hold)
	if !errors.Is(err, context.DeadlineExceeded) || ran {
		t.Fatalf("Tx with an expired context: %v (ran %v), want deadline exceeded without running", err, ran)
	}
	var n int
	if n, err = tb.Count(context.Background(), streamapi.ListQuery{}); err != nil || n != 0 {
		t.Fatalf("count %d, %v; want 0", n, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tb.Insert(context.Background(), &storetest.Widget{Name: "after"}); err == nil {
		t.Fatal("insert after Close succeeded")
	}
}
