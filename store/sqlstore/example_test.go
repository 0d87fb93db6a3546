package sqlstore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/streamapi/streamapi/store/sqlstore"
	"github.com/uptrace/bun"
)

type task struct {
	bun.BaseModel `bun:"table:tasks"`
	ID            int64  `bun:"id,pk,autoincrement" json:"id"`
	Title         string `bun:"title,notnull" json:"title"`
}

// SQL of your own inside a write transaction runs on sqlstore.Tx(ctx): it
// sees what the transaction wrote through its tables before the commit.
func ExampleTx() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	db, err := sqlstore.Open(ctx, "sqlite:"+filepath.Join(dir, "tasks.db"), sqlstore.Options{})
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if _, err := db.Bun().NewCreateTable().Model((*task)(nil)).Exec(ctx); err != nil {
		panic(err)
	}
	tasks, err := db.Table((*task)(nil), "todo.task")
	if err != nil {
		panic(err)
	}
	err = db.Tx(ctx, func(ctx context.Context) error {
		for _, title := range []string{"write", "test", "ship"} {
			if err := tasks.Insert(ctx, &task{Title: title}); err != nil {
				return err
			}
		}
		var n int
		if err := sqlstore.Tx(ctx).NewSelect().Table("tasks").ColumnExpr("count(*)").Scan(ctx, &n); err != nil {
			return err
		}
		fmt.Println("tasks before commit:", n)
		return nil
	})
	fmt.Println("committed:", err == nil, "outside a transaction:", sqlstore.Tx(ctx) == nil)
	// Output:
	// tasks before commit: 3
	// committed: true outside a transaction: true
}

// CreateTable writes a model's CREATE TABLE for each dialect, to keep as a
// migration (NAME.up.sql, one folder per dialect) for DB.Migrate.
func ExampleCreateTable() {
	type Card struct {
		bun.BaseModel `bun:"table:board_card"`
		ID            int64   `bun:"id,pk,autoincrement"`
		Title         string  `bun:"title,notnull"`
		Assignee      *string `bun:"assignee"`
	}
	for _, dialect := range []string{"sqlite", "postgres"} {
		up, err := sqlstore.CreateTable(dialect, (*Card)(nil))
		if err != nil {
			panic(err)
		}
		fmt.Print(up)
	}
	// Output:
	// CREATE TABLE "board_card" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, "title" VARCHAR NOT NULL, "assignee" VARCHAR);
	// CREATE TABLE "board_card" ("id" BIGSERIAL NOT NULL, "title" VARCHAR NOT NULL, "assignee" VARCHAR, PRIMARY KEY ("id"));
}
