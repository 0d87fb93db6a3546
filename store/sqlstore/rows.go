package sqlstore

import (
	"bytes"
	"errors"
	"reflect"

	"github.com/streamapi/streamapi"
	"github.com/uptrace/bun/schema"
)

// Writes that touch only what they change (docs/design.md, "An update
// writes the columns its caller changed").
//
// Inside a write transaction, every row a table reads (Get, List, Lock) is
// remembered as it was read: its image, each column as the SQL literal bun
// would write. An Update then compares the object it is given with the
// image of the read it came from and writes only the columns that differ:
// a hook that lists rows, changes one column and writes them back cannot
// revert a column another transaction changed meanwhile. Before writing,
// the update locks the row and compares the columns it writes with the
// image: one that another transaction changed since the read is a lost
// update in the making, and the transaction fails with errStale, which Tx
// retries from the start (a fresh read sees the other write).

// errStale fails a write transaction that would overwrite a column another
// transaction changed after this one read it. Tx retries it.
var errStale = errors.New("sqlstore: a column changed after the transaction read it")

// image is a row as read: the SQL literal of each column, in the table's
// field order.
type image struct {
	obj  any // the object the row was read into, a pointer
	buf  []byte
	ends []int
}

func (im *image) col(i int) []byte {
	start := 0
	if i > 0 {
		start = im.ends[i-1]
	}
	return im.buf[start:im.ends[i]]
}

// rowKey names a row among a transaction's reads.
type rowKey struct {
	label, pk string
}

// imageOf returns the image of the struct v, a value of t's model.
func (t *table) imageOf(v reflect.Value, obj any) *image {
	gen := t.db.w.QueryGen()
	im := &image{obj: obj, ends: make([]int, len(t.meta.Fields))}
	for i, f := range t.meta.Fields {
		im.buf = f.AppendValue(gen, im.buf, v)
		im.ends[i] = len(im.buf)
	}
	return im
}

// remember records the row read into obj (a pointer to the model's
// struct) in st. A row read again keeps its first image too: an update of
// an object whose read is unknown is compared with the oldest, so that a
// column changed since then is a conflict (retried), never a silent
// revert.
func (t *table) remember(st *txState, obj any) {
	v := reflect.ValueOf(obj).Elem()
	k := rowKey{t.label, string(streamapi.EncodePK(v.FieldByIndex(t.pk.Index).Interface()))}
	if st.reads == nil {
		st.reads = map[rowKey][]*image{}
	}
	for _, im := range st.reads[k] {
		if im.obj == obj {
			// Read again into the same object: it now holds the new read.
			*im = *t.imageOf(v, obj)
			return
		}
	}
	st.reads[k] = append(st.reads[k], t.imageOf(v, obj))
}

// rememberAll records every row of a list destination: a pointer to a
// slice of structs or of pointers to them.
func (t *table) rememberAll(st *txState, dst any) {
	s := reflect.ValueOf(dst).Elem()
	if s.Kind() != reflect.Slice {
		return
	}
	for i := 0; i < s.Len(); i++ {
		e := s.Index(i)
		switch {
		case e.Kind() == reflect.Struct && e.Type() == t.typ:
			t.remember(st, e.Addr().Interface())
		case e.Kind() == reflect.Pointer && e.Type().Elem() == t.typ && !e.IsNil():
			t.remember(st, e.Interface())
		}
	}
}

// baseOf returns the image an update of obj (whose key is k) is compared
// with: that of the read into obj itself, else the oldest read of its row,
// else nil (the row was not read in this transaction).
func (st *txState) baseOf(k rowKey, obj any) *image {
	ims := st.reads[k]
	for _, im := range ims {
		if im.obj == obj {
			return im
		}
	}
	if len(ims) > 0 {
		return ims[0]
	}
	return nil
}

// written replaces every image of k's row with the row as written into obj.
func (st *txState) written(k rowKey, im *image) {
	if st.reads == nil {
		st.reads = map[rowKey][]*image{}
	}
	st.reads[k] = append(st.reads[k][:0], im)
}

// dirty returns the columns to write: those whose value in next differs
// from base's (every column but the key when base is nil), and whether one
// of them differs between base and cur (the row now, locked): a column
// another transaction changed since base was read.
func (t *table) dirty(base, cur, next *image) (cols []string, stale bool) {
	for i, f := range t.meta.Fields {
		if f.IsPK || skipUpdate(f) {
			continue
		}
		from := cur
		if base != nil {
			from = base
		}
		if bytes.Equal(next.col(i), from.col(i)) {
			continue
		}
		if base != nil && !bytes.Equal(base.col(i), cur.col(i)) {
			stale = true
		}
		cols = append(cols, f.Name)
	}
	return cols, stale
}

func skipUpdate(f *schema.Field) bool { return f.SkipUpdate() }
