package sqlstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/store/sqlstore"
	"github.com/uptrace/bun"
)

// row is the pagination benchmark's model: a score with many ties,
// indexed with the key as the keyset needs.
type row struct {
	bun.BaseModel `bun:"table:bench_rows"`
	ID            int64 `bun:"id,pk,autoincrement"`
	Score         int64 `bun:"score,notnull"`
}

// BenchmarkPagination reads one page of 50 from a table of a million
// rows, at the start, the middle and near the end, by offset and by cursor
// (keyset): ordered by score (descending; 1,000 rows share each score)
// then id, and by id alone.
//
//	go test -run '^$' -bench Pagination -benchtime 2s ./store/sqlstore/
func BenchmarkPagination(b *testing.B) {
	const total, size = 1_000_000, 50
	ctx := context.Background()
	db, err := sqlstore.Open(ctx, "sqlite:"+filepath.Join(b.TempDir(), "p.db"), sqlstore.Options{NoChangeLog: true})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{
		`CREATE TABLE bench_rows (id INTEGER PRIMARY KEY AUTOINCREMENT, score INTEGER NOT NULL)`,
		`CREATE INDEX bench_rows_score_id ON bench_rows (score DESC, id)`,
	} {
		if _, err := db.Bun().ExecContext(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	// A million rows, in a few transactions of multi-row inserts.
	for start := 0; start < total; start += 100_000 {
		err := db.Bun().RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			batch := make([]row, 0, 1000)
			for i := start; i < start+100_000; i++ {
				batch = append(batch, row{Score: int64(i % 1000)})
				if len(batch) == cap(batch) {
					if _, err := tx.NewInsert().Model(&batch).Exec(ctx); err != nil {
						return err
					}
					batch = batch[:0]
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	tb, err := db.Table((*row)(nil), "bench.row")
	if err != nil {
		b.Fatal(err)
	}
	order := []streamapi.Order{{Column: "score", Desc: true}}
	// cursorAt returns the keyset after the row at offset at-1: the
	// cursor of the page that starts at offset at.
	cursorAt := func(order []streamapi.Order, at int) []any {
		var before []row
		if err := tb.List(ctx, &before, streamapi.ListQuery{Order: order, Offset: at - 1, Limit: 1}); err != nil || len(before) != 1 {
			b.Fatalf("cursor row: %v", err)
		}
		if len(order) == 0 {
			return []any{before[0].ID}
		}
		return []any{before[0].Score, before[0].ID}
	}
	deep, middle := total-2*size, total/2
	var byID []streamapi.Order
	for _, c := range []struct {
		name string
		q    streamapi.ListQuery
	}{
		{"score/offset/first", streamapi.ListQuery{Order: order, Limit: size}},
		{"score/offset/middle", streamapi.ListQuery{Order: order, Offset: middle, Limit: size}},
		{"score/offset/deep", streamapi.ListQuery{Order: order, Offset: deep, Limit: size}},
		{"score/cursor/middle", streamapi.ListQuery{Order: order, After: cursorAt(order, middle), Limit: size}},
		{"score/cursor/deep", streamapi.ListQuery{Order: order, After: cursorAt(order, deep), Limit: size}},
		{"id/offset/first", streamapi.ListQuery{Limit: size}},
		{"id/offset/deep", streamapi.ListQuery{Offset: deep, Limit: size}},
		{"id/cursor/deep", streamapi.ListQuery{Order: byID, After: cursorAt(byID, deep), Limit: size}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				var page []row
				if err := tb.List(ctx, &page, c.q); err != nil || len(page) != size {
					b.Fatal(fmt.Sprint(len(page), err))
				}
			}
		})
	}
}
