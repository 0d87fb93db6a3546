package resource

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"github.com/streamapi/streamapi"
)

// Assign is one field assignment of a bulk update (UpdateWhere): made by
// Set or Add.
type Assign struct {
	field string
	value any
	add   bool
}

// Set assigns value to the field named field (its JSON name).
func Set(field string, value any) Assign { return Assign{field: field, value: value} }

// Add adds delta, a number, to the numeric field named field.
func Add(field string, delta any) Assign { return Assign{field: field, value: delta, add: true} }

// UpdateWhere changes every object q selects in one statement (per 1,000
// objects) inside the context's write transaction, or one of its own, and
// sends one update event per object it changed, all in the same commit,
// each carrying the object before and after: "shift every card below
// position 3 down by one" is
//
//	cards.UpdateWhere(ctx, resource.And(resource.Where("column", col), resource.Where("position__gte", 3)), resource.Add("position", 1))
//
// It is server code's tool, like Create and Update: no user, no scope, and
// no Validate, BeforeWrite or AfterWrite (the statement is the write). It
// returns how many objects q selected. An object read earlier in the
// transaction holds the old values: read it again before writing it back.
func (r *Resource[T]) UpdateWhere(ctx context.Context, q Q, assign ...Assign) (int, error) {
	conds, err := r.compile(q)
	if err != nil {
		return 0, err
	}
	sets := make([]streamapi.Set, len(assign))
	for i, a := range assign {
		qf := r.qfields[a.field]
		if qf == nil || qf.column == r.pkField.column {
			return 0, fmt.Errorf("resource %s: UpdateWhere sets %q, which is not a stored field other than the key", r.cfg.Stream, a.field)
		}
		base := qf.typ
		if base.Kind() == reflect.Pointer {
			base = base.Elem()
		}
		v := a.value
		switch {
		case a.add:
			rv := reflect.ValueOf(v)
			if !isNumber(base) || !rv.IsValid() || !isNumber(rv.Type()) {
				return 0, fmt.Errorf("resource %s: UpdateWhere adds %v (%T) to %s: want numbers", r.cfg.Stream, v, v, a.field)
			}
		case v == nil:
			if qf.typ.Kind() != reflect.Pointer {
				return 0, fmt.Errorf("resource %s: UpdateWhere sets %s, which may not be null, to nil", r.cfg.Stream, a.field)
			}
		default:
			rv := reflect.ValueOf(v)
			if !rv.Type().ConvertibleTo(base) || (rv.Kind() == reflect.String) != (base.Kind() == reflect.String) {
				return 0, fmt.Errorf("resource %s: UpdateWhere sets %s to %v (%T), want %s", r.cfg.Stream, a.field, v, v, base)
			}
			v = rv.Convert(base).Interface()
			if base == timeType {
				v = normalTime(v.(time.Time))
			}
			if msg := badTextIn(reflect.ValueOf(v)); msg != "" {
				e := streamapi.FieldErrors{}
				e.Add(a.field, msg)
				return 0, e.Err()
			}
		}
		sets[i] = streamapi.Set{Column: qf.column, Value: v, Add: a.add}
	}
	return r.table.UpdateWhere(ctx, streamapi.ListQuery{Where: conds}, sets...)
}

func isNumber(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Float32, reflect.Float64:
		return true
	}
	return isIntKind(t)
}
