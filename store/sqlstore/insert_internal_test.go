package sqlstore

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/uptrace/bun"
)

type plainRow struct {
	bun.BaseModel `bun:"table:plain_rows"`
	ID            int64     `bun:"id,pk,autoincrement"`
	Text          string    `bun:"text,notnull"`
	Flag          bool      `bun:"flag,notnull"`
	Small         int8      `bun:"small,notnull"`
	Count         uint32    `bun:"count,notnull"`
	Big           int64     `bun:"big,notnull"`
	Ratio         float64   `bun:"ratio,notnull"`
	AsText        float64   `bun:"as_text,type:text,notnull"` // TEXT affinity
	At            time.Time `bun:"at,notnull"`
}

type jsonText struct {
	bun.BaseModel `bun:"table:json_text"`
	ID            int64  `bun:"id,pk,autoincrement"`
	Note          string `bun:"note,type:json"`
}

type hooked struct {
	bun.BaseModel `bun:"table:hooked"`
	ID            int64  `bun:"id,pk,autoincrement"`
	Name          string `bun:"name"`
}

func (*hooked) BeforeInsert(context.Context, *bun.InsertQuery) error { return nil }

type Inner struct {
	Extra string `bun:"extra"`
}

type embedsPointer struct {
	bun.BaseModel `bun:"table:embeds_pointer"`
	ID            int64 `bun:"id,pk,autoincrement"`
	*Inner
}

type fancyRow struct {
	bun.BaseModel `bun:"table:fancy_rows"`
	ID            int64          `bun:"id,pk,autoincrement"`
	Note          *string        `bun:"note"`
	Tags          map[string]int `bun:"tags,type:json"`
}

// The prepared insert writes exactly what bun's insert writes: the same
// storage class and the same value in every column, for each kind of field
// it accepts, and reads back the same struct.
func TestPreparedInsert_StoresWhatBunStores(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "t.db"), Options{NoChangeLog: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, m := range []any{(*plainRow)(nil), (*fancyRow)(nil)} {
		if _, err := db.w.NewCreateTable().Model(m).Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	st, err := db.Table((*plainRow)(nil), "plain")
	if err != nil {
		t.Fatal(err)
	}
	tb := st.(*table)
	if len(tb.insFields) != 8 {
		t.Fatalf("plain table binds %d fields, want 8", len(tb.insFields))
	}
	for _, m := range []any{(*fancyRow)(nil), (*jsonText)(nil), (*hooked)(nil), (*embedsPointer)(nil)} {
		if ft, _ := db.Table(m, fmt.Sprintf("%T", m)); ft.(*table).insFields != nil {
			t.Errorf("%T must keep bun's insert", m)
		}
	}
	// The first insert asks for the statement; the next transaction
	// prepares it.
	if err := tb.Insert(ctx, &plainRow{Text: "warm-up"}); err != nil {
		t.Fatal(err)
	}
	zone := time.FixedZone("X", -7*3600-30*60)
	rows := []plainRow{
		{Text: "héllo 'quoted' \"double\" \\ ;--", Flag: true, Small: -128, Count: math.MaxUint32, Big: math.MinInt64, Ratio: -1.0 / 3, At: time.Date(2026, 11, 29, 16, 0, 0, 123456789, zone)},
		{Text: "", Flag: false, Small: 127, Count: 0, Big: math.MaxInt64, Ratio: 1e300, At: time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Text: "日本語 🎉", Ratio: 5e-324, At: time.Date(2026, 1, 2, 3, 4, 5, 999999000, time.Local)},
		// Whole numbers, which bun writes as integer literals, in columns of
		// each affinity; and negative zero.
		{Ratio: 3, AsText: 3, At: time.Unix(0, 0)},
		{Ratio: math.Copysign(0, -1), AsText: -2.5, At: time.Unix(0, 0)},
		{Ratio: 1 << 62, AsText: 1e15, At: time.Unix(0, 0)},
	}
	for i, r := range rows {
		viaPrepared, viaBun := r, r
		if err := tb.Insert(ctx, &viaPrepared); err != nil {
			t.Fatalf("row %d: prepared insert: %v", i, err)
		}
		if tb.insStmt.Load() == nil {
			t.Fatal("the insert did not take the prepared path")
		}
		if _, err := db.w.NewInsert().Model(&viaBun).Returning("*").Exec(ctx); err != nil {
			t.Fatalf("row %d: bun insert: %v", i, err)
		}
		viaBun.ID = viaPrepared.ID
		if !reflect.DeepEqual(viaPrepared, viaBun) {
			t.Errorf("row %d read back differently:\nprepared %+v\nbun      %+v", i, viaPrepared, viaBun)
		}
		for _, col := range []string{"text", "flag", "small", "count", "big", "ratio", "as_text", "at"} {
			var a, b string
			q := "SELECT typeof(" + col + ") || ':' || quote(" + col + ") FROM plain_rows ORDER BY id DESC LIMIT 1 OFFSET ?"
			if err := db.w.QueryRowContext(ctx, q, 1).Scan(&a); err != nil {
				t.Fatal(err)
			}
			if err := db.w.QueryRowContext(ctx, q, 0).Scan(&b); err != nil {
				t.Fatal(err)
			}
			if a != b {
				t.Errorf("row %d column %s: prepared stored %s, bun stored %s", i, col, a, b)
			}
		}
	}
	// Values bun writes its own way take bun's path.
	for _, r := range []plainRow{{Ratio: math.NaN()}, {Text: "a\x00b"}, {Text: "a\xffb"}, {ID: 99}} {
		if _, ok := tb.insertArgs(reflect.ValueOf(&r).Elem()); ok {
			t.Errorf("%+v should take bun's path", r)
		}
	}
}
