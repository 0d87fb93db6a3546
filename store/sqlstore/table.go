package sqlstore

import (
	"context"
	"database/sql"
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
	return t.get(ctx, dst, pk, false)
}

// Lock is Get that, inside a write transaction, also locks the row until
// commit (PostgreSQL: SELECT … FOR NO KEY UPDATE; SQLite's single writer
// holds every row already): the read of an object the transaction will
// change from what it read, so that concurrent writers of the row wait
// for it instead of conflicting with it.
func (t *table) Lock(ctx context.Context, dst any, pk any) error {
	return t.get(ctx, dst, pk, true)
}

func (t *table) get(ctx context.Context, dst any, pk any, lock bool) error {
	st := t.db.txFrom(ctx)
	if t.db.dialect == "sqlite" && st == nil {
		return t.getPrepared(ctx, dst, pk)
	}
	sel := t.db.idb(ctx).NewSelect().Model(dst).
		Where("? = ?", bun.Ident(t.pk.Name), pk).
		Limit(1)
	if st != nil && !st.readOnly && (lock || st.lockReads) && t.db.dialect == "postgres" {
		sel = sel.For("NO KEY UPDATE")
	}
	err := sel.Scan(t.db.stmtCtx(ctx))
	if err != nil {
		return fmt.Errorf("get %s %v: %w", t.label, pk, mapErr(err))
	}
	if st != nil && !st.readOnly {
		t.remember(st, dst)
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
	if st := t.db.txFrom(ctx); st != nil && st.lockReads && t.db.dialect == "postgres" {
		sel = sel.For("NO KEY UPDATE")
	}
	if err := sel.Scan(t.db.stmtCtx(ctx)); err != nil {
		return fmt.Errorf("list %s: %w", t.label, mapErr(err))
	}
	if st := t.db.txFrom(ctx); st != nil && !st.readOnly {
		t.rememberAll(st, dst)
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
	return t.write(ctx, streamapi.ChangeCreate, obj, func(ctx context.Context, st *txState, v reflect.Value) (json.RawMessage, error) {
		if args, ok := t.insertArgs(v); ok {
			if done, err := t.insertPrepared(ctx, st.tx.Tx, v, args); done {
				return nil, err
			}
		}
		_, err := st.tx.NewInsert().Model(obj).Returning("*").Exec(ctx)
		return nil, err
	})
}

// Update writes the columns of obj that differ from the row as this
// transaction read it into obj (rows.go), or, for an object the
// transaction did not read, from the row as it is: a column it did not
// change keeps whatever another transaction wrote there. obj is then
// loaded with the row as stored. A column obj changes that another
// transaction changed after the read fails the transaction with a
// retryable conflict (Tx runs it again).
func (t *table) Update(ctx context.Context, obj any) error {
	return t.write(ctx, streamapi.ChangeUpdate, obj, func(ctx context.Context, st *txState, v reflect.Value) (json.RawMessage, error) {
		// The row as it is, locked until commit: the event's "before",
		// and what the columns written are checked against.
		cur := reflect.New(t.typ)
		cur.Elem().FieldByIndex(t.pk.Index).Set(v.FieldByIndex(t.pk.Index))
		sel := st.tx.NewSelect().Model(cur.Interface()).WherePK()
		if t.db.dialect == "postgres" {
			sel = sel.For("NO KEY UPDATE")
		}
		if err := sel.Scan(ctx); err != nil {
			return nil, err
		}
		before, err := json.Marshal(cur.Interface())
		if err != nil {
			return nil, fmt.Errorf("encode: %w", err)
		}
		k := t.key(v)
		cols, stale := t.dirty(st.baseOf(k, obj), t.imageOf(cur.Elem(), nil), t.imageOf(v, nil))
		if stale {
			return nil, errStale
		}
		if len(cols) == 0 {
			v.Set(cur.Elem()) // nothing to write: obj is the row as stored
			return before, nil
		}
		res, err := st.tx.NewUpdate().Model(obj).Column(cols...).WherePK().Returning("*").Exec(ctx)
		if err != nil {
			return nil, err
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			return nil, streamapi.ErrNotFound
		}
		return before, nil
	})
}

// Delete removes the row with obj's key and loads obj with the row as it
// was, which the delete event carries.
func (t *table) Delete(ctx context.Context, obj any) error {
	return t.write(ctx, streamapi.ChangeDelete, obj, func(ctx context.Context, st *txState, v reflect.Value) (json.RawMessage, error) {
		res, err := st.tx.NewDelete().Model(obj).WherePK().Returning("*").Exec(ctx)
		if err != nil {
			return nil, err
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			return nil, streamapi.ErrNotFound
		}
		return nil, nil
	})
}

// key returns the row key of the struct v.
func (t *table) key(v reflect.Value) rowKey {
	return rowKey{t.label, string(streamapi.EncodePK(v.FieldByIndex(t.pk.Index).Interface()))}
}

// write runs one statement in the context's transaction (or a new one) and
// records its change for publication after commit. exec returns the
// object before the change, for updates. A write in a transaction of its
// own may run again (Tx retries conflicts): each run starts from obj as
// the caller passed it.
func (t *table) write(ctx context.Context, action string, obj any, exec func(context.Context, *txState, reflect.Value) (json.RawMessage, error)) error {
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer || v.Elem().Type() != t.typ {
		return fmt.Errorf("sqlstore: %s %s: want *%s, got %T", action, t.label, t.typ, obj)
	}
	v = v.Elem()
	var orig reflect.Value
	if t.db.txFrom(ctx) == nil {
		orig = reflect.New(t.typ).Elem()
		orig.Set(v)
	}
	return t.db.Tx(ctx, func(ctx context.Context) error {
		if orig.IsValid() {
			v.Set(orig)
		}
		st := t.db.txFrom(ctx)
		ctx = t.db.stmtCtx(ctx)
		before, err := exec(ctx, st, v)
		if err != nil {
			if errors.Is(err, errStale) {
				return err
			}
			return fmt.Errorf("%s %s: %w", action, t.label, mapErr(err))
		}
		data, err := json.Marshal(obj)
		if err != nil {
			return fmt.Errorf("%s %s: encode: %w", action, t.label, err)
		}
		k := t.key(v)
		if action == streamapi.ChangeDelete {
			delete(st.reads, k)
		} else {
			st.written(k, t.imageOf(v, obj))
		}
		st.changes = append(st.changes, streamapi.Change{
			Model:  t.label,
			Action: action,
			PK:     json.RawMessage(k.pk),
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
