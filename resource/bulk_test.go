package resource_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/internal/storetest"
	"github.com/streamapi/streamapi/resource"
	"github.com/streamapi/streamapi/store/sqlstore"
	"github.com/uptrace/bun"
)

type Card struct {
	bun.BaseModel `bun:"table:cards" json:"-"`
	ID            int64  `bun:"id,pk,autoincrement" json:"id"`
	Column        int64  `bun:"col,notnull" json:"column"`
	Position      int    `bun:"position,notnull" json:"position" validate:"gte=0"`
	Title         string `bun:"title,notnull" json:"title"`
}

// Moving the last of 500 cards to the top is two statements, not 500: one
// UpdateWhere shifting the 499 others down, one Update of the card; the
// commit sends an update for each of the 500, each with its before.
func TestUpdateWhere_MoveToTop(t *testing.T) {
	ctx := context.Background()
	rec := &storetest.Recorder{}
	db, err := sqlstore.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "c.db"), sqlstore.Options{Publisher: rec})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Bun().NewCreateTable().Model((*Card)(nil)).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	cards, err := resource.New(resource.Config[Card]{Stream: "cards", Label: "board.card", Store: db})
	if err != nil {
		t.Fatal(err)
	}
	cards.Init(streamapi.Defaults{})
	var last *Card
	if err := db.Tx(ctx, func(ctx context.Context) error {
		for i := 0; i < 500; i++ {
			last = &Card{Column: 1, Position: i, Title: "c"}
			if err := cards.Create(ctx, last); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	other := &Card{Column: 2, Position: 0, Title: "elsewhere"}
	if err := cards.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	from := len(rec.Changes())
	count := &storetest.Statements{Prefix: "UPDATE"}
	db.Bun().AddQueryHook(count)
	err = db.Tx(ctx, func(ctx context.Context) error {
		n, err := cards.UpdateWhere(ctx, resource.And(resource.Where("column", 1), resource.Where("position__lt", last.Position)), resource.Add("position", 1))
		if err != nil {
			return err
		}
		if n != 499 {
			t.Errorf("shifted %d cards, want 499", n)
		}
		if err := cards.Table().Lock(ctx, last, last.ID); err != nil {
			return err
		}
		last.Position = 0
		return cards.Update(ctx, last)
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := count.Count(); n != 2 {
		t.Fatalf("%d UPDATE statements, want 2", n)
	}
	if n := len(rec.Changes()) - from; n != 500 {
		t.Fatalf("%d update events, want 500", n)
	}
	all, err := cards.List(ctx, streamapi.ListQuery{Equal: map[string]any{"column": int64(1)}, Order: []streamapi.Order{{Column: "position"}}})
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range all {
		if c.Position != i {
			t.Fatalf("card %d at position %d, want %d: positions not contiguous", c.ID, c.Position, i)
		}
	}
	if all[0].ID != last.ID {
		t.Fatalf("the top card is %d, want the moved %d", all[0].ID, last.ID)
	}
	if got, err := cards.Get(ctx, other.ID); err != nil || got.Position != 0 {
		t.Fatalf("a card of another column: %+v, %v", got, err)
	}
	for _, bad := range []resource.Assign{resource.Set("id", 1), resource.Set("nope", 1), resource.Add("title", 1), resource.Set("position", "x"), resource.Set("title", "a\x00b")} {
		if _, err := cards.UpdateWhere(ctx, resource.All(), bad); err == nil {
			t.Errorf("UpdateWhere(%+v) succeeded", bad)
		}
	}
}
