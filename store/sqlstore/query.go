package sqlstore

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/streamapi/streamapi"
	"github.com/uptrace/bun"
)

// The list query language in SQL. Every value is a bound argument (bun
// formats it as a literal of its type, escaping it); column names are
// checked against the table's and quoted as identifiers. The semantics match
// the in-memory evaluation in package resource exactly, on both databases:
// text compares byte by byte (COLLATE "C" on PostgreSQL, BINARY on SQLite),
// icontains folds ASCII letters only (lower() under those collations),
// NULL satisfies no lookup but isnull, and NULLs sort first ascending.

// where applies q's filters to sel.
func (t *table) where(sel *bun.SelectQuery, q streamapi.ListQuery) (*bun.SelectQuery, error) {
	for col, v := range q.Equal {
		if _, ok := t.columns[col]; !ok {
			return nil, streamapi.Errorf(streamapi.EINVALID, "%s: no column %q", t.label, col)
		}
		sel = sel.Where("? = ?", bun.Ident(col), v)
	}
	for _, c := range q.Where {
		expr, args, err := t.cond(c)
		if err != nil {
			return nil, err
		}
		sel = sel.Where(expr, args...)
	}
	if len(q.After) > 0 {
		expr, args, err := t.after(q.Order, q.After)
		if err != nil {
			return nil, err
		}
		sel = sel.Where(expr, args...)
	}
	return sel, nil
}

// isText reports whether col holds text in SQL (not, say, a uuid or an
// enum a Go string maps to): those take COLLATE "C".
func (t *table) isText(col string) bool {
	f := t.meta.FieldMap[col]
	if f == nil || f.IndirectType.Kind() != reflect.String {
		return false
	}
	typ := strings.ToLower(f.UserSQLType)
	if typ == "" {
		typ = strings.ToLower(f.DiscoveredSQLType)
	}
	return typ == "" || strings.Contains(typ, "char") || strings.Contains(typ, "text")
}

// ref returns the column as an operand: under COLLATE "C" for text on
// PostgreSQL, so that comparisons and sorting go byte by byte.
func (t *table) ref(col string) (string, []any) {
	if t.db.dialect == "postgres" && t.isText(col) {
		return `? COLLATE "C"`, []any{bun.Ident(col)}
	}
	return "?", []any{bun.Ident(col)}
}

var compare = map[string]string{
	streamapi.LookupExact: "=",
	streamapi.LookupGT:    ">",
	streamapi.LookupGTE:   ">=",
	streamapi.LookupLT:    "<",
	streamapi.LookupLTE:   "<=",
}

// cond returns c as an SQL expression and its arguments.
func (t *table) cond(c streamapi.Cond) (string, []any, error) {
	switch {
	case len(c.All) > 0:
		return t.group(c.All, " AND ")
	case len(c.Any) > 0:
		return t.group(c.Any, " OR ")
	case c.Member != nil:
		return t.member(c)
	}
	if _, ok := t.columns[c.Column]; !ok {
		return "", nil, streamapi.Errorf(streamapi.EINVALID, "%s: no column %q", t.label, c.Column)
	}
	col, args := t.ref(c.Column)
	pg := t.db.dialect == "postgres"
	if op, ok := compare[c.Lookup]; ok {
		return col + " " + op + " ?", append(args, c.Value), nil
	}
	switch c.Lookup {
	case streamapi.LookupIn:
		vs, _ := c.Value.([]any)
		if len(vs) == 0 {
			return "1 = 0", nil, nil // IN () selects nothing
		}
		return col + " IN (?)", append(args, bun.In(vs)), nil
	case streamapi.LookupContains:
		if pg {
			return "strpos(?, ?) > 0", []any{bun.Ident(c.Column), c.Value}, nil
		}
		return "instr(?, ?) > 0", []any{bun.Ident(c.Column), c.Value}, nil
	case streamapi.LookupIContains:
		if pg {
			return `strpos(lower(? COLLATE "C"), lower(? COLLATE "C")) > 0`, []any{bun.Ident(c.Column), c.Value}, nil
		}
		return "instr(lower(?), lower(?)) > 0", []any{bun.Ident(c.Column), c.Value}, nil
	case streamapi.LookupStartsWith:
		if pg {
			return "starts_with(?, ?)", []any{bun.Ident(c.Column), c.Value}, nil
		}
		return "substr(?, 1, length(?)) = ?", []any{bun.Ident(c.Column), c.Value, c.Value}, nil
	case streamapi.LookupIsNull:
		if b, _ := c.Value.(bool); b {
			return "? IS NULL", []any{bun.Ident(c.Column)}, nil
		}
		return "? IS NOT NULL", []any{bun.Ident(c.Column)}, nil
	}
	return "", nil, streamapi.Errorf(streamapi.EINVALID, "%s: unknown lookup %q", t.label, c.Lookup)
}

// member returns a relation scope's condition: a semi-join on the
// membership table, which its (user, group) index serves.
func (t *table) member(c streamapi.Cond) (string, []any, error) {
	m := c.Member
	mt, ok := m.Table.(*table)
	if !ok || mt.db != t.db {
		return "", nil, fmt.Errorf("%s: membership table %v is not in this store", t.label, m.Table)
	}
	if _, ok := t.columns[c.Column]; !ok {
		return "", nil, streamapi.Errorf(streamapi.EINVALID, "%s: no column %q", t.label, c.Column)
	}
	if !mt.columns[m.Group] || !mt.columns[m.User] {
		return "", nil, streamapi.Errorf(streamapi.EINVALID, "%s: no columns %q, %q", mt.label, m.Group, m.User)
	}
	return "? IN (SELECT ? FROM ? WHERE ? = ?)",
		[]any{bun.Ident(c.Column), bun.Ident(m.Group), bun.Ident(mt.meta.Name), bun.Ident(m.User), m.UserID}, nil
}

// group joins conditions with sep (" AND ", " OR ") in parentheses.
func (t *table) group(cs []streamapi.Cond, sep string) (string, []any, error) {
	parts := make([]string, 0, len(cs))
	var args []any
	for _, sub := range cs {
		e, a, err := t.cond(sub)
		if err != nil {
			return "", nil, err
		}
		parts = append(parts, e)
		args = append(args, a...)
	}
	return "(" + strings.Join(parts, sep) + ")", args, nil
}

// keys returns the full sort: order, then the primary key unless order has it.
func (t *table) keys(order []streamapi.Order) []streamapi.Order {
	for _, o := range order {
		if o.Column == t.pk.Name {
			return order
		}
	}
	return append(append([]streamapi.Order(nil), order...), streamapi.Order{Column: t.pk.Name})
}

// orderBy sorts sel by order, then the primary key.
func (t *table) orderBy(sel *bun.SelectQuery, order []streamapi.Order) (*bun.SelectQuery, error) {
	for _, o := range t.keys(order) {
		if _, ok := t.columns[o.Column]; !ok {
			return nil, streamapi.Errorf(streamapi.EINVALID, "%s: no column %q", t.label, o.Column)
		}
		col, args := t.ref(o.Column)
		if o.Desc {
			sel = sel.OrderExpr(col+" DESC NULLS LAST", args...)
		} else {
			sel = sel.OrderExpr(col+" ASC NULLS FIRST", args...)
		}
	}
	return sel, nil
}

// after returns the keyset condition "sorts after the row with these
// values": for keys k1..kn, k1 >= v1 AND ((k1 > v1) OR (k1 = v1 AND
// k2 > v2) OR ...), with < and <= for descending keys.
func (t *table) after(order []streamapi.Order, values []any) (string, []any, error) {
	keys := t.keys(order)
	if len(values) != len(keys) {
		return "", nil, streamapi.Errorf(streamapi.EINVALID, "%s: a cursor needs %d values, got %d", t.label, len(keys), len(values))
	}
	var ors []string
	var args []any
	for i, k := range keys {
		if values[i] == nil {
			return "", nil, streamapi.Errorf(streamapi.EINVALID, "%s: a cursor cannot hold NULL (%s)", t.label, k.Column)
		}
		var ands []string
		for j := 0; j < i; j++ {
			col, a := t.ref(keys[j].Column)
			ands = append(ands, col+" = ?")
			args = append(append(args, a...), values[j])
		}
		op := ">"
		if k.Desc {
			op = "<"
		}
		col, a := t.ref(k.Column)
		ands = append(ands, fmt.Sprintf("%s %s ?", col, op))
		args = append(append(args, a...), values[i])
		ors = append(ors, "("+strings.Join(ands, " AND ")+")")
	}
	// The first key's bound, said once more on its own, lets the database
	// seek an index to the cursor instead of scanning up to it.
	op := ">="
	if keys[0].Desc {
		op = "<="
	}
	col, a := t.ref(keys[0].Column)
	expr := fmt.Sprintf("%s %s ? AND (%s)", col, op, strings.Join(ors, " OR "))
	return expr, append(append(a, values[0]), args...), nil
}
