package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/streamapi/streamapi"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/schema"
)

// The struct and its table agree, checked at start (Check), and the
// table can be written from the struct (CreateTable).

// Check implements streamapi.Checker: it reads the table's columns from
// the database and fails, naming the table, the column and the struct
// field, when the table is missing or lacks a column a field maps to.
// Columns the struct does not map are allowed (a column added for another
// program, or one being phased out).
func (t *table) Check(ctx context.Context) error {
	have, err := t.db.columnsOf(ctx, t.meta.Name)
	if err != nil {
		return fmt.Errorf("sqlstore: check table %s: %w", t.meta.Name, err)
	}
	if len(have) == 0 {
		return fmt.Errorf("sqlstore: table %s (model %s, struct %s) does not exist: run its migration (sqlstore.CreateTable writes one from the struct)", t.meta.Name, t.label, t.typ)
	}
	var missing []string
	for _, f := range t.meta.Fields {
		if !have[f.Name] {
			missing = append(missing, fmt.Sprintf("column %s (field %s.%s)", f.Name, t.typ.Name(), f.GoName))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("sqlstore: table %s (model %s) has no %s: migrate it, or fix the bun tag", t.meta.Name, t.label, strings.Join(missing, ", no "))
	}
	return nil
}

// columnsOf returns the columns the database has for table (none when it
// does not exist).
func (db *DB) columnsOf(ctx context.Context, name string) (map[string]bool, error) {
	var rows *sql.Rows
	var err error
	schemaName, table, qualified := strings.Cut(name, ".")
	if !qualified {
		schemaName, table = "", name
	}
	if db.dialect == "postgres" {
		// to_regclass resolves the name as the queries will: through
		// search_path, or in its schema when it names one.
		rel := `quote_ident(?)`
		args := []any{table}
		if qualified {
			rel, args = `quote_ident(?) || '.' || quote_ident(?)`, []any{schemaName, table}
		}
		rows, err = db.r.QueryContext(ctx, `SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(`+rel+`) AND attnum > 0 AND NOT attisdropped`, args...)
	} else if qualified {
		rows, err = db.r.QueryContext(ctx, `SELECT name FROM pragma_table_info(?, ?)`, table, schemaName)
	} else {
		rows, err = db.r.QueryContext(ctx, `SELECT name FROM pragma_table_info(?)`, table)
	}
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		out[c] = true
	}
	return out, rows.Err()
}

// CreateTable returns the CREATE TABLE statements of models (pointers to
// bun-tagged structs, as Table takes them) in dialect, "sqlite" or
// "postgres", separated by "--bun:split" lines: a migration file
// (NAME.up.sql) for DB.Migrate, to review and extend with the indexes your
// queries need (a membership table's (user, group), a foreign key's
// column). Columns follow the structs' tags: notnull, default, unique,
// pk and autoincrement, and type: for a column type of your own.
func CreateTable(dialect string, models ...any) (string, error) {
	var d schema.Dialect
	switch dialect {
	case "sqlite":
		d = sqlitedialect.New()
	case "postgres":
		d = pgdialect.New()
	default:
		return "", fmt.Errorf("sqlstore: CreateTable: dialect %q, want sqlite or postgres", dialect)
	}
	bdb := bun.NewDB(nil, d)
	parts := make([]string, 0, len(models))
	for _, m := range models {
		typ := reflect.TypeOf(m)
		if typ == nil || typ.Kind() != reflect.Pointer || typ.Elem().Kind() != reflect.Struct {
			return "", fmt.Errorf("sqlstore: CreateTable: model must be a pointer to a struct, got %T", m)
		}
		parts = append(parts, bdb.NewCreateTable().Model(m).String()+";")
	}
	return strings.Join(parts, "\n--bun:split\n") + "\n", nil
}

// Check checks every table declared on db so far against the database
// (Table.Check), and returns every mismatch at once.
func (db *DB) Check(ctx context.Context) error {
	db.tablesMu.Lock()
	labels := make([]string, 0, len(db.tables))
	for l := range db.tables {
		labels = append(labels, l)
	}
	db.tablesMu.Unlock()
	sort.Strings(labels)
	var errs []string
	for _, l := range labels {
		db.tablesMu.Lock()
		t := db.tables[l]
		db.tablesMu.Unlock()
		if err := t.Check(ctx); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

var _ streamapi.Checker = (*table)(nil)
