package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/streamapi/streamapi"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/schema"
	"modernc.org/sqlite"
)

type table struct {
	db *DB

	getMu   sync.Mutex               // serializes preparing getStmt
	getStmt atomic.Pointer[sql.Stmt] // the read by pk, prepared on first use (SQLite)
	insMu   sync.Mutex               // serializes preparing insStmt
	insStmt atomic.Pointer[sql.Stmt] // the insert, prepared on first use (SQLite, plain tables)

	insFields []*schema.Field // what the prepared insert binds; nil: bun's insert
	insWanted atomic.Bool     // an insert found insStmt unprepared

	label   string
	typ     reflect.Type // the struct type
	meta    *schema.Table
	pk      *schema.Field
	columns map[string]bool
}

var _ streamapi.Table = (*table)(nil)

// Table returns the table of model, a pointer to a struct with bun tags and
// exactly one primary key column.
func (db *DB) Table(model any, label string) (streamapi.Table, error) {
	typ := reflect.TypeOf(model)
	if typ == nil || typ.Kind() != reflect.Pointer || typ.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("sqlstore: table %s: model must be a pointer to a struct, got %T", label, model)
	}
	meta := db.w.Table(typ.Elem())
	if len(meta.PKs) != 1 {
		return nil, fmt.Errorf("sqlstore: table %s: model %s needs exactly one bun primary key (bun:\",pk\"), has %d", label, typ.Elem(), len(meta.PKs))
	}
	cols := make(map[string]bool, len(meta.Fields))
	for _, f := range meta.Fields {
		cols[f.Name] = true
	}
	t := &table{db: db, label: label, typ: typ.Elem(), meta: meta, pk: meta.PKs[0], columns: cols}
	if db.dialect == "sqlite" {
		t.insFields = plainInsert(meta)
	}
	db.tablesMu.Lock()
	db.tables[label] = t
	db.tablesMu.Unlock()
	return t, nil
}

func (t *table) Label() string { return t.label }

func (t *table) Column(index []int) (string, bool) {
	for _, f := range t.meta.Fields {
		if slices.Equal(f.Index, index) {
			return f.Name, true
		}
	}
	return "", false
}
func (t *table) PKType() reflect.Type { return t.pk.IndirectType }

func (t *table) Get(ctx context.Context, dst any, pk any) error {
	if t.db.dialect == "sqlite" && t.db.txFrom(ctx) == nil {
		return t.getPrepared(ctx, dst, pk)
	}
	sel := t.db.idb(ctx).NewSelect().Model(dst).
		Where("? = ?", bun.Ident(t.pk.Name), pk).
		Limit(1)
	if t.db.dialect == "postgres" && t.db.txFrom(ctx) != nil {
		// A read in a write transaction is a read-modify-write: lock the
		// row, so that a concurrent writer's change is not overwritten
		// with the stale copy (SQLite's single writer gives this anyway).
		sel = sel.For("UPDATE")
	}
	err := sel.Scan(t.db.stmtCtx(ctx))
	if err != nil {
		return fmt.Errorf("get %s %v: %w", t.label, pk, mapErr(err))
	}
	return nil
}

// getPrepared reads one row by primary key with a statement prepared once
// per read connection, the pk bound as a parameter: SQLite would otherwise
// parse the query on every call (bun formats arguments into the SQL text),
// which took a fifth of the server's CPU under a retrieve load.
func (t *table) getPrepared(ctx context.Context, dst any, pk any) error {
	stmt, err := t.preparedGet(ctx)
	if err != nil {
		return fmt.Errorf("get %s: prepare: %w", t.label, err)
	}
	rows, err := stmt.QueryContext(ctx, pk)
	if err != nil {
		return fmt.Errorf("get %s %v: %w", t.label, pk, mapErr(err))
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return fmt.Errorf("get %s %v: %w", t.label, pk, mapErr(err))
		}
		return fmt.Errorf("get %s %v: %w", t.label, pk, streamapi.ErrNotFound)
	}
	if err := t.db.r.ScanRow(ctx, rows, dst); err != nil {
		return fmt.Errorf("get %s %v: %w", t.label, pk, mapErr(err))
	}
	return rows.Close()
}

// preparedGet returns the read-by-pk statement, preparing it the first
// time. A failure is not kept: the table may not exist yet (a resource
// declared before the migration that creates it).
func (t *table) preparedGet(ctx context.Context) (*sql.Stmt, error) {
	if stmt := t.getStmt.Load(); stmt != nil {
		return stmt, nil
	}
	t.getMu.Lock()
	defer t.getMu.Unlock()
	if stmt := t.getStmt.Load(); stmt != nil {
		return stmt, nil
	}
	cols := make([]string, len(t.meta.Fields))
	for i, f := range t.meta.Fields {
		cols[i] = string(f.SQLName)
	}
	q := "SELECT " + strings.Join(cols, ", ") + " FROM " + string(t.meta.SQLName) + " WHERE " + string(t.pk.SQLName) + " = ? LIMIT 1"
	stmt, err := t.db.r.DB.PrepareContext(context.WithoutCancel(ctx), q)
	if err != nil {
		return nil, err
	}
	t.getStmt.Store(stmt)
	t.db.tablesMu.Lock()
	t.db.stmts = append(t.db.stmts, stmt)
	t.db.tablesMu.Unlock()
	return stmt, nil
}

func (t *table) List(ctx context.Context, dst any, q streamapi.ListQuery) error {
	sel, err := t.where(t.db.idb(ctx).NewSelect().Model(dst), q)
	if err != nil {
		return fmt.Errorf("list: %w", err)
	}
	if sel, err = t.orderBy(sel, q.Order); err != nil {
		return fmt.Errorf("list: %w", err)
	}
	if q.Limit > 0 {
		sel = sel.Limit(int64(q.Limit))
	}
	if q.Offset > 0 {
		sel = sel.Offset(int64(q.Offset))
	}
	if err := sel.Scan(t.db.stmtCtx(ctx)); err != nil {
		return fmt.Errorf("list %s: %w", t.label, mapErr(err))
	}
	return nil
}

func (t *table) Count(ctx context.Context, q streamapi.ListQuery) (int, error) {
	sel, err := t.where(t.db.idb(ctx).NewSelect().Model(reflect.New(t.typ).Interface()), q)
	if err != nil {
		return 0, fmt.Errorf("count: %w", err)
	}
	n, err := sel.Count(t.db.stmtCtx(ctx))
	if err != nil {
		return 0, fmt.Errorf("count %s: %w", t.label, mapErr(err))
	}
	return int(n), nil
}

func (t *table) Insert(ctx context.Context, obj any) error {
	return t.write(ctx, streamapi.ChangeCreate, obj, func(ctx context.Context, tx bun.Tx) (sql.Result, error) {
		if v := reflect.ValueOf(obj).Elem(); v.Type() == t.typ {
			if args, ok := t.insertArgs(v); ok {
				if done, err := t.insertPrepared(ctx, tx.Tx, v, args); done {
					return driver.RowsAffected(1), err
				}
			}
		}
		return tx.NewInsert().Model(obj).Returning("*").Exec(ctx)
	})
}

func (t *table) Update(ctx context.Context, obj any) error {
	return t.write(ctx, streamapi.ChangeUpdate, obj, func(ctx context.Context, tx bun.Tx) (sql.Result, error) {
		return tx.NewUpdate().Model(obj).WherePK().Returning("*").Exec(ctx)
	})
}

func (t *table) Delete(ctx context.Context, obj any) error {
	return t.write(ctx, streamapi.ChangeDelete, obj, func(ctx context.Context, tx bun.Tx) (sql.Result, error) {
		return tx.NewDelete().Model(obj).WherePK().Exec(ctx)
	})
}

// write runs one statement in the context's transaction (or a new one) and
// records its change for publication after commit.
func (t *table) write(ctx context.Context, action string, obj any, exec func(context.Context, bun.Tx) (sql.Result, error)) error {
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer || v.Elem().Type() != t.typ {
		return fmt.Errorf("sqlstore: %s %s: want *%s, got %T", action, t.label, t.typ, obj)
	}
	return t.db.Tx(ctx, func(ctx context.Context) error {
		st := t.db.txFrom(ctx)
		ctx = t.db.stmtCtx(ctx)
		var before json.RawMessage
		if action == streamapi.ChangeUpdate {
			// The row as it was, in the transaction (and locked on
			// PostgreSQL): events need it to tell visibility changes.
			old := reflect.New(t.typ)
			old.Elem().FieldByIndex(t.pk.Index).Set(v.Elem().FieldByIndex(t.pk.Index))
			sel := st.tx.NewSelect().Model(old.Interface()).WherePK()
			if t.db.dialect == "postgres" {
				sel = sel.For("UPDATE")
			}
			if err := sel.Scan(ctx); err != nil {
				return fmt.Errorf("%s %s: %w", action, t.label, mapErr(err))
			}
			var err error
			if before, err = json.Marshal(old.Interface()); err != nil {
				return fmt.Errorf("%s %s: encode: %w", action, t.label, err)
			}
		}
		res, err := exec(ctx, st.tx)
		if err != nil {
			return fmt.Errorf("%s %s: %w", action, t.label, mapErr(err))
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			return fmt.Errorf("%s %s: %w", action, t.label, streamapi.ErrNotFound)
		}
		data, err := json.Marshal(obj)
		if err != nil {
			return fmt.Errorf("%s %s: encode: %w", action, t.label, err)
		}
		pk := v.Elem().FieldByIndex(t.pk.Index).Interface()
		st.changes = append(st.changes, streamapi.Change{
			Model:  t.label,
			Action: action,
			PK:     streamapi.EncodePK(pk),
			Data:   data,
			Before: before,
		})
		return nil
	})
}

// sqliteConstraint is SQLITE_CONSTRAINT, the primary code of every
// constraint failure (unique, foreign key, check, not null).
const sqliteConstraint = 19

var errConflict = &streamapi.Error{Code: streamapi.ECONFLICT, Message: "The write conflicts with existing data."}

// mapErr turns driver errors into streamapi errors where one fits.
func mapErr(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return streamapi.ErrNotFound
	}
	var se *sqlite.Error
	if errors.As(err, &se) && se.Code()&0xff == sqliteConstraint {
		// The message stays generic: constraint texts name tables and columns.
		return fmt.Errorf("%w (%v)", errConflict, se)
	}
	if pe, ok := pgConflict(err); ok {
		return fmt.Errorf("%w (%v)", errConflict, pe)
	}
	return err
}
