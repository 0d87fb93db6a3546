package sqlstore

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TrimKeep keeps each model's newest changes, deleting the rest a chunk
// of seqs at a time (here 3 to a statement); other models are untouched.
// (internal/storetest checks TrimKeep on PostgreSQL too.)
func TestTrimKeep(t *testing.T) {
	defer func(n int64) { trimChunk = n }(trimChunk)
	trimChunk = 3
	dsns := map[string]func() string{
		"sqlite": func() string { return "sqlite:" + filepath.Join(t.TempDir(), "t.db") },
	}
	for name, dsn := range dsns {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			db, err := Open(ctx, dsn(), Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.w.NewCreateTable().Model((*plainRow)(nil)).Exec(ctx); err != nil {
				t.Fatal(err)
			}
			a, _ := db.Table((*plainRow)(nil), "test.a")
			b, _ := db.Table((*plainRow)(nil), "test.b")
			for i := 0; i < 11; i++ {
				if err := a.Insert(ctx, &plainRow{Text: "a", At: time.Unix(0, 0)}); err != nil {
					t.Fatal(err)
				}
			}
			if err := b.Insert(ctx, &plainRow{Text: "b", At: time.Unix(0, 0)}); err != nil {
				t.Fatal(err)
			}
			n, err := db.TrimKeep(ctx, "test.a", 4)
			if err != nil || n != 7 {
				t.Fatalf("TrimKeep(4) of 11: %d, %v; want 7 deleted", n, err)
			}
			if first, last, _ := db.Bounds(ctx, "test.a"); first != 8 || last != 11 {
				t.Fatalf("bounds %d..%d, want 8..11", first, last)
			}
			if n, _ := db.TrimKeep(ctx, "test.a", 4); n != 0 {
				t.Fatalf("a second TrimKeep(4) deleted %d", n)
			}
			if n, _ := db.TrimKeep(ctx, "test.a", 0); n != 3 {
				t.Fatalf("TrimKeep(0) deleted %d: it keeps the newest", n)
			}
			if first, last, _ := db.Bounds(ctx, "test.b"); first != 1 || last != 1 {
				t.Fatalf("another model's bounds %d..%d", first, last)
			}
			// Numbering goes on after the trim.
			if err := a.Insert(ctx, &plainRow{Text: "a", At: time.Unix(0, 0)}); err != nil {
				t.Fatal(err)
			}
			if _, last, _ := db.Bounds(ctx, "test.a"); last != 12 {
				t.Fatalf("the next change after the trim is %d, want 12", last)
			}
		})
	}
}
