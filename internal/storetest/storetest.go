// Package storetest is the conformance suite every streamapi.Store passes:
// reads, writes, not-found, transactions, and changes published once, after
// commit, never for a rolled-back write.
package storetest

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"testing"
	"time"

	"github.com/streamapi/streamapi"
	"github.com/uptrace/bun"
)

//go:embed migrations
var migrations embed.FS

// Migrations returns the suite's schema (table storetest_widget), one
// folder per dialect; a Factory must apply it.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err)
	}
	return sub
}

// Widget is the suite's model.
type Widget struct {
	bun.BaseModel `bun:"table:storetest_widget"`
	ID            int64  `bun:"id,pk,autoincrement" json:"id"`
	Name          string `bun:"name,notnull" json:"name"`
	Size          int64  `bun:"size,notnull" json:"size"`
}

// Label is the model label of Widget in the suite.
const Label = "storetest.widget"

// Factory opens a new, empty store with the suite's schema applied, whose
// committed changes go to pub.
type Factory func(t testing.TB, pub streamapi.Publisher) streamapi.Store

// Recorder is a Publisher that keeps what it receives.
type Recorder struct {
	mu      sync.Mutex
	changes []streamapi.Change
}

// Publish records changes.
func (r *Recorder) Publish(_ context.Context, cs ...streamapi.Change) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, cs...)
	return nil
}

// Changes returns a copy of what was published.
func (r *Recorder) Changes() []streamapi.Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]streamapi.Change(nil), r.changes...)
}

// insertConcurrently inserts n widgets from n goroutines at once.
func insertConcurrently(t *testing.T, tb streamapi.Table, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			errs <- tb.Insert(ctx, &Widget{Name: fmt.Sprintf("c%d", i)})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// Run runs the suite against stores made by open.
func Run(t *testing.T, open Factory) {
	ctx := context.Background()
	setup := func(t *testing.T) (streamapi.Store, streamapi.Table, *Recorder) {
		t.Helper()
		rec := &Recorder{}
		s := open(t, rec)
		tb, err := s.Table((*Widget)(nil), Label)
		if err != nil {
			t.Fatal(err)
		}
		return s, tb, rec
	}
	// insert writes through ctx: inside a Tx, pass the Tx's context, or the
	// write waits for the transaction's own connection.
	insert := func(ctx context.Context, t *testing.T, tb streamapi.Table, name string, size int64) *Widget {
		t.Helper()
		w := &Widget{Name: name, Size: size}
		if err := tb.Insert(ctx, w); err != nil {
			t.Fatal(err)
		}
		return w
	}

	t.Run("TableRejectsNonStruct", func(t *testing.T) {
		s, _, _ := setup(t)
		if _, err := s.Table(Widget{}, Label); err == nil {
			t.Fatal("Table accepted a non-pointer model")
		}
	})

	t.Run("InsertGet", func(t *testing.T) {
		_, tb, _ := setup(t)
		w := insert(ctx, t, tb, "a", 3)
		if w.ID == 0 {
			t.Fatal("Insert did not fill the primary key")
		}
		var got Widget
		if err := tb.Get(ctx, &got, w.ID); err != nil {
			t.Fatal(err)
		}
		if got.ID != w.ID || got.Name != "a" || got.Size != 3 {
			t.Fatalf("got %+v, want %+v", got, *w)
		}
		if tb.PKType().Kind().String() != "int64" {
			t.Fatalf("PKType %v, want int64", tb.PKType())
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		_, tb, rec := setup(t)
		var w Widget
		if code := streamapi.ErrorCode(tb.Get(ctx, &w, int64(999))); code != streamapi.ENOTFOUND {
			t.Errorf("Get: code %q, want not_found", code)
		}
		if code := streamapi.ErrorCode(tb.Update(ctx, &Widget{ID: 999, Name: "x"})); code != streamapi.ENOTFOUND {
			t.Errorf("Update: code %q, want not_found", code)
		}
		if code := streamapi.ErrorCode(tb.Delete(ctx, &Widget{ID: 999})); code != streamapi.ENOTFOUND {
			t.Errorf("Delete: code %q, want not_found", code)
		}
		if n := len(rec.Changes()); n != 0 {
			t.Errorf("%d changes published for failed writes", n)
		}
	})

	t.Run("List", func(t *testing.T) {
		_, tb, _ := setup(t)
		for i := 0; i < 7; i++ {
			insert(ctx, t, tb, fmt.Sprintf("w%d", i), int64(i%2))
		}
		var page []Widget
		if err := tb.List(ctx, &page, streamapi.ListQuery{Offset: 2, Limit: 3}); err != nil {
			t.Fatal(err)
		}
		if len(page) != 3 || page[0].Name != "w2" || page[2].Name != "w4" {
			t.Fatalf("page %+v, want w2..w4", page)
		}
		var odd []Widget
		if err := tb.List(ctx, &odd, streamapi.ListQuery{Equal: map[string]any{"size": 1}}); err != nil {
			t.Fatal(err)
		}
		if len(odd) != 3 {
			t.Fatalf("Equal size=1 gave %d rows, want 3", len(odd))
		}
		if n, err := tb.Count(ctx, streamapi.ListQuery{Offset: 2, Limit: 1}); err != nil || n != 7 {
			t.Fatalf("Count = %d, %v; want 7 (offset and limit ignored)", n, err)
		}
		if n, err := tb.Count(ctx, streamapi.ListQuery{Equal: map[string]any{"size": 1}}); err != nil || n != 3 {
			t.Fatalf("Count size=1 = %d, %v; want 3", n, err)
		}
		if _, err := tb.Count(ctx, streamapi.ListQuery{Equal: map[string]any{"nope": 1}}); streamapi.ErrorCode(err) != streamapi.EINVALID {
			t.Fatalf("Count on an unknown column: %v, want invalid", err)
		}
		var none []Widget
		if err := tb.List(ctx, &none, streamapi.ListQuery{Offset: 100, Limit: 5}); err != nil || len(none) != 0 {
			t.Fatalf("past the end: %v rows, err %v", len(none), err)
		}
		err := tb.List(ctx, &none, streamapi.ListQuery{Equal: map[string]any{"name; DROP TABLE storetest_widget": 1}})
		if code := streamapi.ErrorCode(err); code != streamapi.EINVALID {
			t.Fatalf("unknown column: code %q, want invalid", code)
		}
	})

	t.Run("UpdateDelete", func(t *testing.T) {
		_, tb, _ := setup(t)
		w := insert(ctx, t, tb, "a", 1)
		w.Size = 9
		if err := tb.Update(ctx, w); err != nil {
			t.Fatal(err)
		}
		var got Widget
		if err := tb.Get(ctx, &got, w.ID); err != nil || got.Size != 9 {
			t.Fatalf("after update: %+v, %v", got, err)
		}
		if err := tb.Delete(ctx, w); err != nil {
			t.Fatal(err)
		}
		if code := streamapi.ErrorCode(tb.Get(ctx, &got, w.ID)); code != streamapi.ENOTFOUND {
			t.Fatalf("after delete: code %q", code)
		}
	})

	t.Run("ConstraintIsConflict", func(t *testing.T) {
		_, tb, rec := setup(t)
		insert(ctx, t, tb, "same", 1)
		err := tb.Insert(ctx, &Widget{Name: "same"})
		if code := streamapi.ErrorCode(err); code != streamapi.ECONFLICT {
			t.Fatalf("duplicate unique name: code %q (%v), want conflict", code, err)
		}
		if n := len(rec.Changes()); n != 1 {
			t.Fatalf("%d changes published, want 1", n)
		}
	})

	t.Run("PublishesEachWrite", func(t *testing.T) {
		_, tb, rec := setup(t)
		w := insert(ctx, t, tb, "a", 1)
		w.Size = 2
		if err := tb.Update(ctx, w); err != nil {
			t.Fatal(err)
		}
		if err := tb.Delete(ctx, w); err != nil {
			t.Fatal(err)
		}
		got := rec.Changes()
		if len(got) != 3 {
			t.Fatalf("%d changes, want 3", len(got))
		}
		pk := fmt.Sprint(w.ID)
		for i, action := range []string{"create", "update", "delete"} {
			c := got[i]
			if c.Model != Label || c.Action != action || string(c.PK) != pk {
				t.Errorf("change %d: %s %s pk %s, want %s %s pk %s", i, c.Model, c.Action, c.PK, Label, action, pk)
			}
			var data Widget
			if err := json.Unmarshal(c.Data, &data); err != nil || data.ID != w.ID {
				t.Errorf("change %d: data %s", i, c.Data)
			}
		}
		var deleted Widget
		_ = json.Unmarshal(got[2].Data, &deleted)
		if deleted.Name != "a" || deleted.Size != 2 {
			t.Errorf("delete carries %+v, want the object as it was", deleted)
		}
		// An update carries the object as it was before, too.
		var before Widget
		if err := json.Unmarshal(got[1].Before, &before); err != nil || before.Size != 1 || before.ID != w.ID {
			t.Errorf("update's Before %s, want the object with size 1", got[1].Before)
		}
		if got[0].Before != nil || got[2].Before != nil {
			t.Errorf("create and delete carry a Before: %s, %s", got[0].Before, got[2].Before)
		}
	})

	t.Run("TxCommitPublishesAfterCommitInOrder", func(t *testing.T) {
		s, tb, rec := setup(t)
		err := s.Tx(ctx, func(ctx context.Context) error {
			a := insert(ctx, t, tb, "a", 1)
			insert(ctx, t, tb, "b", 2)
			if n := len(rec.Changes()); n != 0 {
				return fmt.Errorf("%d changes published before commit", n)
			}
			// Reads in the transaction see its writes.
			var got Widget
			if err := tb.Get(ctx, &got, a.ID); err != nil {
				return fmt.Errorf("read own write: %w", err)
			}
			// Nested Tx joins the outer one.
			return s.Tx(ctx, func(ctx context.Context) error {
				return tb.Update(ctx, &Widget{ID: a.ID, Name: "a", Size: 5})
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		got := rec.Changes()
		if len(got) != 3 || got[0].Action != "create" || got[1].Action != "create" || got[2].Action != "update" {
			t.Fatalf("changes %+v, want create, create, update", got)
		}
	})

	t.Run("TxRollbackPublishesNothing", func(t *testing.T) {
		s, tb, rec := setup(t)
		var id int64
		boom := errors.New("boom")
		err := s.Tx(ctx, func(ctx context.Context) error {
			w := &Widget{Name: "gone"}
			if err := tb.Insert(ctx, w); err != nil {
				return err
			}
			id = w.ID
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Tx returned %v, want boom", err)
		}
		var w Widget
		if code := streamapi.ErrorCode(tb.Get(ctx, &w, id)); code != streamapi.ENOTFOUND {
			t.Fatalf("rolled-back row is there (code %q)", code)
		}
		func() {
			defer func() {
				if recover() == nil {
					t.Error("panic was swallowed")
				}
			}()
			_ = s.Tx(ctx, func(ctx context.Context) error {
				insert(ctx, t, tb, "panicky", 1)
				panic("boom")
			})
		}()
		var all []Widget
		if err := tb.List(ctx, &all, streamapi.ListQuery{}); err != nil || len(all) != 0 {
			t.Fatalf("after rollbacks: %d rows, err %v", len(all), err)
		}
		if n := len(rec.Changes()); n != 0 {
			t.Fatalf("%d changes published for rolled-back writes", n)
		}
		// The store still works after a panic.
		insert(ctx, t, tb, "after", 1)
	})

	t.Run("UncommittedIsInvisibleOutside", func(t *testing.T) {
		s, tb, _ := setup(t)
		inTx, release := make(chan int64), make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- s.Tx(ctx, func(ctx context.Context) error {
				w := &Widget{Name: "pending"}
				if err := tb.Insert(ctx, w); err != nil {
					close(inTx)
					return err
				}
				inTx <- w.ID
				<-release
				return nil
			})
		}()
		id, ok := <-inTx
		if !ok {
			t.Fatal(<-done)
		}
		var w Widget
		if code := streamapi.ErrorCode(tb.Get(ctx, &w, id)); code != streamapi.ENOTFOUND {
			t.Errorf("uncommitted row visible outside its transaction (code %q)", code)
		}
		close(release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if err := tb.Get(ctx, &w, id); err != nil {
			t.Fatalf("committed row not visible: %v", err)
		}
	})

	t.Run("ConcurrentWritersEachPublishedOnce", func(t *testing.T) {
		_, tb, rec := setup(t)
		const n = 40
		insertConcurrently(t, tb, n)
		seen := map[string]int{}
		for _, c := range rec.Changes() {
			seen[string(c.PK)]++
		}
		if len(seen) != n {
			t.Fatalf("%d distinct objects published, want %d", len(seen), n)
		}
		for pk, k := range seen {
			if k != 1 {
				t.Errorf("pk %s published %d times", pk, k)
			}
		}
	})
}

// RunChangeLog runs the change-log part of the suite against stores that
// keep one: every committed change is logged with a per-model seq that
// follows commit order with no gap and no repeat, publishes carry the same
// seq, and the log reads, bounds and trims as streamapi.ChangeLog says.
func RunChangeLog(t *testing.T, open Factory) {
	ctx := context.Background()
	setup := func(t *testing.T) (streamapi.Store, streamapi.ChangeLog, streamapi.Table, *Recorder) {
		t.Helper()
		rec := &Recorder{}
		s := open(t, rec)
		log, ok := s.(streamapi.ChangeLog)
		if !ok {
			t.Fatalf("%T is not a streamapi.ChangeLog", s)
		}
		tb, err := s.Table((*Widget)(nil), Label)
		if err != nil {
			t.Fatal(err)
		}
		return s, log, tb, rec
	}
	// same reports whether the logged and published changes agree.
	same := func(t *testing.T, logged, published []streamapi.Change) {
		t.Helper()
		if len(logged) != len(published) {
			t.Fatalf("log holds %d changes, %d were published", len(logged), len(published))
		}
		for i := range logged {
			l, p := logged[i], published[i]
			if l.Model != p.Model || l.Seq != p.Seq || l.Action != p.Action || string(l.PK) != string(p.PK) || string(l.Data) != string(p.Data) || string(l.Before) != string(p.Before) {
				t.Fatalf("change %d: logged %+v, published %+v", i, l, p)
			}
		}
	}

	t.Run("SeqFollowsCommitsWithoutGaps", func(t *testing.T) {
		s, log, tb, rec := setup(t)
		first, last, err := log.Bounds(ctx, Label)
		if err != nil || first != 1 || last != 0 {
			t.Fatalf("empty log: Bounds = %d, %d, %v; want 1, 0", first, last, err)
		}
		w := &Widget{Name: "a"}
		if err := tb.Insert(ctx, w); err != nil {
			t.Fatal(err)
		}
		// A rolled-back transaction takes no number.
		_ = s.Tx(ctx, func(ctx context.Context) error {
			if err := tb.Insert(ctx, &Widget{Name: "b"}); err != nil {
				return err
			}
			return errors.New("roll back")
		})
		// Nor does a write the database refuses.
		if err := tb.Insert(ctx, &Widget{Name: "a"}); streamapi.ErrorCode(err) != streamapi.ECONFLICT {
			t.Fatalf("duplicate insert: %v", err)
		}
		err = s.Tx(ctx, func(ctx context.Context) error {
			w.Size = 5
			if err := tb.Update(ctx, w); err != nil {
				return err
			}
			return tb.Insert(ctx, &Widget{Name: "c"})
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := tb.Delete(ctx, w); err != nil {
			t.Fatal(err)
		}
		pub := rec.Changes()
		for i, c := range pub {
			if c.Seq != int64(i+1) {
				t.Fatalf("published change %d has seq %d, want %d", i, c.Seq, i+1)
			}
		}
		logged, err := log.ChangesAfter(ctx, Label, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		same(t, logged, pub)
		if len(logged) != 4 {
			t.Fatalf("%d changes logged, want 4", len(logged))
		}
		tail, err := log.ChangesAfter(ctx, Label, 2, 1)
		if err != nil || len(tail) != 1 || tail[0].Seq != 3 {
			t.Fatalf("ChangesAfter(2, limit 1) = %+v, %v; want seq 3 only", tail, err)
		}
		if other, err := log.ChangesAfter(ctx, "storetest.other", 0, 0); err != nil || len(other) != 0 {
			t.Fatalf("another model's log: %+v, %v", other, err)
		}
		// One object's changes: w was created (1), updated (2) and
		// deleted (4); c was created (3).
		wpk := pub[0].PK
		of, err := log.ChangesOf(ctx, Label, wpk, 0, 4, 0)
		if err != nil || len(of) != 3 || of[0].Seq != 1 || of[1].Seq != 2 || of[2].Seq != 4 {
			t.Fatalf("ChangesOf(w, 0, 4) = %+v, %v; want seqs 1, 2, 4", of, err)
		}
		if of, err := log.ChangesOf(ctx, Label, wpk, 1, 3, 0); err != nil || len(of) != 1 || of[0].Seq != 2 {
			t.Fatalf("ChangesOf(w, 1, 3) = %+v, %v; want seq 2", of, err)
		}
		if of, err := log.ChangesOf(ctx, Label, wpk, 0, 4, 2); err != nil || len(of) != 2 {
			t.Fatalf("ChangesOf(w, limit 2) = %+v, %v", of, err)
		}
		if of, err := log.ChangesOf(ctx, Label, json.RawMessage("999"), 0, 4, 0); err != nil || len(of) != 0 {
			t.Fatalf("ChangesOf(an object never written) = %+v, %v", of, err)
		}
		if first, last, err := log.Bounds(ctx, Label); err != nil || first != 1 || last != 4 {
			t.Fatalf("Bounds = %d, %d, %v; want 1, 4", first, last, err)
		}
		// The bound by size: the newest 3 stay.
		if n, err := log.TrimKeep(ctx, Label, 3); err != nil || n != 1 {
			t.Fatalf("TrimKeep(3) = %d, %v; want 1 deleted", n, err)
		}
		if first, last, err := log.Bounds(ctx, Label); err != nil || first != 2 || last != 4 {
			t.Fatalf("after TrimKeep(3) Bounds = %d, %d, %v; want 2, 4", first, last, err)
		}
		if n, err := log.TrimKeep(ctx, Label, 3); err != nil || n != 0 {
			t.Fatalf("TrimKeep(3) again = %d, %v", n, err)
		}
	})

	t.Run("SeqIsPerModel", func(t *testing.T) {
		s, log, tb, rec := setup(t)
		other, err := s.Table((*Widget)(nil), "storetest.other")
		if err != nil {
			t.Fatal(err)
		}
		err = s.Tx(ctx, func(ctx context.Context) error {
			if err := other.Insert(ctx, &Widget{Name: "x"}); err != nil {
				return err
			}
			if err := tb.Insert(ctx, &Widget{Name: "y"}); err != nil {
				return err
			}
			return other.Insert(ctx, &Widget{Name: "z"})
		})
		if err != nil {
			t.Fatal(err)
		}
		seqs := map[string][]int64{}
		for _, c := range rec.Changes() {
			seqs[c.Model] = append(seqs[c.Model], c.Seq)
		}
		if fmt.Sprint(seqs[Label]) != "[1]" || fmt.Sprint(seqs["storetest.other"]) != "[1 2]" {
			t.Fatalf("seqs by model %v; want %s [1], storetest.other [1 2]", seqs, Label)
		}
		logged, err := log.ChangesAfter(ctx, "storetest.other", 0, 0)
		if err != nil || len(logged) != 2 {
			t.Fatalf("other's log: %+v, %v", logged, err)
		}
	})

	t.Run("ConcurrentWritersNumberedOnce", func(t *testing.T) {
		_, log, tb, rec := setup(t)
		const n = 40
		insertConcurrently(t, tb, n)
		logged, err := log.ChangesAfter(ctx, Label, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(logged) != n {
			t.Fatalf("%d changes logged, want %d", len(logged), n)
		}
		bySeq := map[int64]streamapi.Change{}
		for i, c := range logged {
			if c.Seq != int64(i+1) {
				t.Fatalf("logged change %d has seq %d: a gap or a repeat", i, c.Seq)
			}
			bySeq[c.Seq] = c
		}
		pub := rec.Changes()
		if len(pub) != n {
			t.Fatalf("%d changes published, want %d", len(pub), n)
		}
		for _, p := range pub {
			if l, ok := bySeq[p.Seq]; !ok || string(l.PK) != string(p.PK) {
				t.Fatalf("published %+v does not match the log's seq %d (%+v)", p, p.Seq, l)
			}
			delete(bySeq, p.Seq)
		}
	})

	t.Run("Trim", func(t *testing.T) {
		_, log, tb, _ := setup(t)
		for _, name := range []string{"a", "b", "c"} {
			if err := tb.Insert(ctx, &Widget{Name: name}); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := log.Trim(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
			t.Fatalf("Trim of nothing old: %d, %v", n, err)
		}
		// Everything goes, but a log may keep the model's newest change.
		n, err := log.Trim(ctx, time.Now().Add(time.Second))
		if err != nil || n < 2 || n > 3 {
			t.Fatalf("Trim: %d, %v; want 3 (or 2, keeping the newest)", n, err)
		}
		kept := 3 - n
		if first, last, err := log.Bounds(ctx, Label); err != nil || first != 4-kept || last != 3 {
			t.Fatalf("Bounds after trimming all but %d = %d, %d, %v; want %d, 3", kept, first, last, err, 4-kept)
		}
		if err := tb.Insert(ctx, &Widget{Name: "d"}); err != nil {
			t.Fatal(err)
		}
		logged, err := log.ChangesAfter(ctx, Label, 0, 0)
		if err != nil || int64(len(logged)) != 1+kept || logged[len(logged)-1].Seq != 4 {
			t.Fatalf("after trim and a write: %+v, %v; want seq 4 last, the numbering going on", logged, err)
		}
		if first, last, err := log.Bounds(ctx, Label); err != nil || first != 4-kept || last != 4 {
			t.Fatalf("Bounds = %d, %d, %v; want %d, 4", first, last, err, 4-kept)
		}
	})
}
