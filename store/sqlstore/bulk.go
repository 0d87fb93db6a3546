package sqlstore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/streamapi/streamapi"
	"github.com/uptrace/bun"
)

// bulkChunk is how many rows one UPDATE of UpdateWhere names.
const bulkChunk = 1000

// UpdateWhere applies set to the rows q selects; see streamapi.Table. It
// locks and reads the rows (their before), updates them by primary key,
// so that a row inserted meanwhile is not touched without a before, and
// reads each back with RETURNING (its after).
func (t *table) UpdateWhere(ctx context.Context, q streamapi.ListQuery, set ...streamapi.Set) (int, error) {
	if len(set) == 0 {
		return 0, fmt.Errorf("sqlstore: update %s: nothing to set", t.label)
	}
	for _, s := range set {
		if _, ok := t.columns[s.Column]; !ok || s.Column == t.pk.Name {
			return 0, streamapi.Errorf(streamapi.EINVALID, "%s: no column %q to set", t.label, s.Column)
		}
	}
	var n int
	err := t.db.Tx(ctx, func(ctx context.Context) error {
		st := t.db.txFrom(ctx)
		ctx = t.db.stmtCtx(ctx)
		before := reflect.New(reflect.SliceOf(t.typ))
		sel, err := t.where(st.tx.NewSelect().Model(before.Interface()), streamapi.ListQuery{Equal: q.Equal, Where: q.Where})
		if err != nil {
			return err
		}
		sel = sel.OrderExpr("?", bun.Ident(t.pk.Name))
		if t.db.dialect == "postgres" {
			sel = sel.For("NO KEY UPDATE")
		}
		if err := sel.Scan(ctx); err != nil {
			return fmt.Errorf("update %s: read: %w", t.label, mapErr(err))
		}
		rows := before.Elem()
		n = rows.Len()
		for from := 0; from < n; from += bulkChunk {
			if err := t.updateChunk(ctx, st, rows.Slice(from, min(from+bulkChunk, n)), set); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// updateChunk updates the rows of befores (a slice of the model) in one
// statement and records a change for each that changed.
func (t *table) updateChunk(ctx context.Context, st *txState, befores reflect.Value, set []streamapi.Set) error {
	pks := make([]any, befores.Len())
	for i := range pks {
		pks[i] = befores.Index(i).FieldByIndex(t.pk.Index).Interface()
	}
	upd := st.tx.NewUpdate().Model(reflect.New(t.typ).Interface()).
		Where("? IN (?)", bun.Ident(t.pk.Name), bun.In(pks)).
		Returning("*")
	for _, s := range set {
		if s.Add {
			upd = upd.Set("? = ? + ?", bun.Ident(s.Column), bun.Ident(s.Column), s.Value)
		} else {
			upd = upd.Set("? = ?", bun.Ident(s.Column), s.Value)
		}
	}
	after := reflect.New(reflect.SliceOf(t.typ))
	if _, err := upd.Exec(ctx, after.Interface()); err != nil {
		return fmt.Errorf("update %s: %w", t.label, mapErr(err))
	}
	byKey := make(map[rowKey]reflect.Value, after.Elem().Len())
	for i := 0; i < after.Elem().Len(); i++ {
		v := after.Elem().Index(i)
		byKey[t.key(v)] = v
	}
	for i := 0; i < befores.Len(); i++ {
		b := befores.Index(i)
		k := t.key(b)
		a, ok := byKey[k]
		if !ok {
			return fmt.Errorf("update %s: row %s was not returned", t.label, k.pk)
		}
		bj, err := json.Marshal(b.Addr().Interface())
		if err != nil {
			return fmt.Errorf("update %s: encode: %w", t.label, err)
		}
		aj, err := json.Marshal(a.Addr().Interface())
		if err != nil {
			return fmt.Errorf("update %s: encode: %w", t.label, err)
		}
		st.written(k, t.imageOf(a, nil))
		if bytes.Equal(aj, bj) {
			continue // set to what it held: no change to tell
		}
		st.changes = append(st.changes, streamapi.Change{
			Model: t.label, Action: streamapi.ChangeUpdate,
			PK: json.RawMessage(k.pk), Data: aj, Before: bj,
		})
	}
	return nil
}
