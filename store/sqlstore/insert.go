package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/schema"
)

// A prepared insert (SQLite). bun formats every argument into the SQL text,
// so each insert was a new statement for SQLite to parse: 18% of the CPU of
// a create-heavy server (docs/performance.md). Tables whose columns are all
// plain values insert with one statement prepared on the writer connection
// instead, the values bound. Others (pointers, nullzero, SQL defaults,
// custom encoders, JSON) keep bun's path, which knows those rules.

// bunTimeFormat is how bun writes a time.Time for SQLite (schema.BaseDialect
// AppendTime, always UTC). Bound times use it too, so that rows written by
// either path compare and sort alike.
const bunTimeFormat = "2006-01-02 15:04:05.999999-07:00"

var (
	timeType      = reflect.TypeFor[time.Time]()
	valuerType    = reflect.TypeFor[driver.Valuer]()
	marshalerType = reflect.TypeFor[json.Marshaler]()
	textType      = reflect.TypeFor[encoding.TextMarshaler]()
	appenderType  = reflect.TypeFor[schema.QueryAppender]()
)

// plainInsert returns the fields a prepared insert binds, in order (the
// autoincrement primary key left out), or nil when the table must keep
// bun's insert: a field bun encodes by its tag (msgpack, json, jsonb), one
// inside an embedded pointer (bun writes NULL for a nil one), or a model
// with insert hooks, which only bun's insert runs.
func plainInsert(meta *schema.Table) []*schema.Field {
	if meta.HasBeforeAppendModelHook() {
		return nil
	}
	model := reflect.PointerTo(meta.Type)
	for _, hook := range []reflect.Type{reflect.TypeFor[bun.BeforeInsertHook](), reflect.TypeFor[bun.AfterInsertHook]()} {
		if model.Implements(hook) {
			return nil
		}
	}
	var fields []*schema.Field
	for _, f := range meta.Fields {
		if f.IsPK && f.AutoIncrement {
			continue
		}
		if f.IsPtr || f.NullZero || f.SQLDefault != "" || !plainType(f.IndirectType) ||
			f.Tag.HasOption("msgpack") || f.UserSQLType != "" && strings.HasPrefix(strings.ToUpper(f.UserSQLType), "JSON") ||
			throughPointer(meta.Type, f.Index) {
			return nil
		}
		fields = append(fields, f)
	}
	if len(fields) == 0 {
		return nil
	}
	return fields
}

// throughPointer reports whether the field at index is reached through a
// pointer (an embedded *Struct).
func throughPointer(t reflect.Type, index []int) bool {
	for _, i := range index[:len(index)-1] {
		t = t.Field(i).Type
		if t.Kind() == reflect.Pointer {
			return true
		}
	}
	return false
}

// plainType reports whether t binds to SQLite as bun would write it.
func plainType(t reflect.Type) bool {
	if t == timeType {
		return true
	}
	for _, i := range []reflect.Type{valuerType, marshalerType, textType, appenderType} {
		if t.Implements(i) || reflect.PointerTo(t).Implements(i) {
			return false
		}
	}
	switch t.Kind() {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Float64:
		return true
	}
	return false
}

// insertArgs returns obj's values for the prepared insert, or false when
// one of them is an edge bun writes its own way (NaN and infinities, text
// with NUL or that is not UTF-8), and the insert must take bun's path.
func (t *table) insertArgs(obj reflect.Value) ([]any, bool) {
	if t.insFields == nil || !obj.FieldByIndex(t.pk.Index).IsZero() {
		return nil, false
	}
	args := make([]any, len(t.insFields))
	for i, f := range t.insFields {
		v := obj.FieldByIndex(f.Index)
		switch {
		case v.Type() == timeType:
			args[i] = v.Interface().(time.Time).UTC().Format(bunTimeFormat)
			continue
		case v.Kind() == reflect.Float64:
			x := v.Float()
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return nil, false
			}
			// bun writes a whole number without a fraction ('f', -1): an
			// integer literal, which SQLite stores as INTEGER in a column
			// without REAL affinity. Bind it as one too.
			if x == math.Trunc(x) && math.Abs(x) < 1<<63 {
				args[i] = int64(x)
				continue
			}
		case v.Kind() == reflect.String:
			if str := v.String(); strings.IndexByte(str, 0) >= 0 || !utf8.ValidString(str) {
				return nil, false
			}
		}
		args[i] = v.Interface()
	}
	return args, true
}

// insertPrepared inserts obj (a pointer to the table's struct) in the
// transaction with the prepared statement and args (from insertArgs), and
// reads the row back into it, as bun's RETURNING * does. It reports false,
// having done nothing, when the statement is not prepared yet.
func (t *table) insertPrepared(ctx context.Context, tx *sql.Tx, obj reflect.Value, args []any) (bool, error) {
	stmt := t.insStmt.Load()
	if stmt == nil {
		// The writer is the transaction's connection: the statement can
		// only be prepared before the next transaction begins.
		t.insWanted.Store(true)
		t.db.insWanted.Store(true)
		return false, nil
	}
	rows, err := tx.StmtContext(ctx, stmt).QueryContext(ctx, args...)
	if err != nil {
		return true, err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return true, err
		}
		return true, sql.ErrNoRows
	}
	if err := t.db.w.ScanRow(ctx, rows, obj.Addr().Interface()); err != nil {
		return true, err
	}
	return true, rows.Close()
}

// prepareInserts prepares the inserts that tables asked for, on the
// writer, while no transaction holds it. A failure (the table may not
// exist yet) is not kept: the next insert asks again.
func (db *DB) prepareInserts(ctx context.Context) {
	if !db.insWanted.Swap(false) {
		return
	}
	db.tablesMu.RLock()
	var want []*table
	for _, t := range db.tables {
		if t.insWanted.Swap(false) {
			want = append(want, t)
		}
	}
	db.tablesMu.RUnlock()
	for _, t := range want {
		if err := t.prepareInsert(ctx); err != nil {
			db.log.DebugContext(ctx, "prepare insert", "table", t.label, "err", err)
		}
	}
}

func (t *table) prepareInsert(ctx context.Context) error {
	t.insMu.Lock()
	defer t.insMu.Unlock()
	if t.insStmt.Load() != nil {
		return nil
	}
	cols := make([]string, len(t.insFields))
	for i, f := range t.insFields {
		cols[i] = string(f.SQLName)
	}
	all := make([]string, len(t.meta.Fields))
	for i, f := range t.meta.Fields {
		all[i] = string(f.SQLName)
	}
	q := "INSERT INTO " + string(t.meta.SQLName) + " (" + strings.Join(cols, ", ") + ") VALUES (?" +
		strings.Repeat(", ?", len(cols)-1) + ") RETURNING " + strings.Join(all, ", ")
	stmt, err := t.db.w.DB.PrepareContext(context.WithoutCancel(ctx), q)
	if err != nil {
		return err
	}
	t.insStmt.Store(stmt)
	t.db.tablesMu.Lock()
	t.db.stmts = append(t.db.stmts, stmt)
	t.db.tablesMu.Unlock()
	return nil
}
