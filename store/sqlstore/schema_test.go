package sqlstore_test

import (
	"context"
	"strings"
	"testing"

	"github.com/streamapi/streamapi/store/sqlstore"
	"github.com/uptrace/bun"
)

type Gadget struct {
	bun.BaseModel `bun:"table:schema_gadget" json:"-"`
	ID            int64   `bun:"id,pk,autoincrement" json:"id"`
	Name          string  `bun:"name,notnull" json:"name"`
	Weight        int64   `bun:"weight,notnull,default:0" json:"weight"`
	Label         *string `bun:"label" json:"label"`
}

// The struct and its table are checked against each other: a missing
// table or column is named, with the field it serves; the CREATE TABLE
// that CreateTable writes from the struct makes a table that passes.
func TestCheckAndCreateTable(t *testing.T) {
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			ctx := context.Background()
			db, err := sqlstore.Open(ctx, d.dsn(t), sqlstore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			tb, err := db.Table((*Gadget)(nil), "test.gadget")
			if err != nil {
				t.Fatal(err)
			}
			check := tb.(interface{ Check(context.Context) error })
			if err := check.Check(ctx); err == nil || !strings.Contains(err.Error(), "table schema_gadget (model test.gadget, struct sqlstore_test.Gadget) does not exist") {
				t.Fatalf("no table: %v", err)
			}
			if _, err := db.Bun().ExecContext(ctx, `CREATE TABLE schema_gadget (id INTEGER PRIMARY KEY, name TEXT NOT NULL)`); err != nil {
				t.Fatal(err)
			}
			err = check.Check(ctx)
			if err == nil || !strings.Contains(err.Error(), "table schema_gadget (model test.gadget) has no column weight (field Gadget.Weight), no column label (field Gadget.Label)") {
				t.Fatalf("missing columns: %v", err)
			}
			if err := db.Check(ctx); err == nil || !strings.Contains(err.Error(), "no column weight") {
				t.Fatalf("DB.Check: %v", err)
			}
			if _, err := db.Bun().ExecContext(ctx, `DROP TABLE schema_gadget`); err != nil {
				t.Fatal(err)
			}
			up, err := sqlstore.CreateTable(d.name, (*Gadget)(nil))
			if err != nil {
				t.Fatal(err)
			}
			for _, stmt := range strings.Split(up, "--bun:split") {
				if _, err := db.Bun().ExecContext(ctx, stmt); err != nil {
					t.Fatalf("%s: %v", stmt, err)
				}
			}
			if err := check.Check(ctx); err != nil {
				t.Fatalf("the generated table: %v\n%s", err, up)
			}
			// And it works as a table.
			g := &Gadget{Name: "lever"}
			if err := tb.Insert(ctx, g); err != nil || g.ID == 0 {
				t.Fatalf("insert into the generated table: %v (%+v)", err, g)
			}
		})
	}
	if _, err := sqlstore.CreateTable("mysql", (*Gadget)(nil)); err == nil {
		t.Fatal("mysql accepted")
	}
	if _, err := sqlstore.CreateTable("sqlite", Gadget{}); err == nil {
		t.Fatal("a struct value accepted")
	}
}
