package resource

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/streamapi/streamapi"
)

// The list query language (docs/queries.md): django-filter's lookups on
// declared fields, ordering, search, sparse fields and cursors. The same
// names serve both surfaces: REST query parameters, and keys of a list
// request's data on the WebSocket.

// Reserved parameter names; every other name is a filter.
const (
	paramPage      = "page"
	paramPageSize  = "page_size"
	paramOrdering  = "ordering"
	paramSearch    = "search"
	paramFields    = "fields"
	paramCursor    = "cursor"
	paramWithCount = "with_count"
)

var lookups = []string{
	streamapi.LookupExact, streamapi.LookupGT, streamapi.LookupGTE, streamapi.LookupLT,
	streamapi.LookupLTE, streamapi.LookupIn, streamapi.LookupContains, streamapi.LookupIContains,
	streamapi.LookupStartsWith, streamapi.LookupIsNull,
}

// queryField is a field the query language may name.
type queryField struct {
	*field
	column  string
	lookups []string // declared filter lookups
	order   bool     // declared for ordering
	search  bool     // declared for search
}

// initQuery checks the query declarations against the model.
func (r *Resource[T]) initQuery() error {
	r.qfields = map[string]*queryField{}
	r.byColumn = map[string]*queryField{}
	r.hidden = map[string]bool{}
	zt := reflect.TypeFor[T]()
	for i := 0; i < zt.NumField(); i++ {
		if sf := zt.Field(i); sf.IsExported() && sf.Tag.Get("json") == "-" {
			if col, ok := r.table.Column(sf.Index); ok {
				r.hidden[col] = true // a column no JSON name reaches
			}
		}
	}
	var zero T
	pkCol, ok := r.table.Column(r.pkIndex)
	if !ok {
		return fmt.Errorf("resource %s: the primary key has no column", r.cfg.Stream)
	}
	r.pkField = &queryField{field: &field{name: "pk", index: r.pkIndex, typ: reflect.TypeOf(zero).FieldByIndex(r.pkIndex).Type}, column: pkCol}
	for i := range r.fields {
		f := &r.fields[i]
		col, ok := r.table.Column(f.index)
		if !ok {
			continue
		}
		r.qfields[f.name] = &queryField{field: f, column: col}
		r.byColumn[col] = r.qfields[f.name]
	}
	get := func(name, what string) (*queryField, error) {
		qf := r.qfields[name]
		if qf == nil {
			return nil, fmt.Errorf("resource %s: %s names %q, which is not a stored field", r.cfg.Stream, what, name)
		}
		return qf, nil
	}
	for name, ls := range r.cfg.Filters {
		qf, err := get(name, "Filters")
		if err != nil {
			return err
		}
		kind := valueKind(qf.typ)
		if ft := qf.typ; ft.Kind() == reflect.Float32 || ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Float32 {
			// PostgreSQL would compare a real with a double: 0.1::real <> 0.1.
			return fmt.Errorf("resource %s: field %s is a float32; filter on float64 fields", r.cfg.Stream, name)
		}
		if kind == "" {
			return fmt.Errorf("resource %s: field %s of type %s cannot be filtered", r.cfg.Stream, name, qf.typ)
		}
		for _, l := range ls {
			switch {
			case !slices.Contains(lookups, l):
				return fmt.Errorf("resource %s: unknown lookup %q for %s (want one of %v)", r.cfg.Stream, l, name, lookups)
			case (l == streamapi.LookupContains || l == streamapi.LookupIContains || l == streamapi.LookupStartsWith) && kind != "string":
				return fmt.Errorf("resource %s: lookup %s needs a text field; %s is %s", r.cfg.Stream, l, name, qf.typ)
			case (l == streamapi.LookupGT || l == streamapi.LookupGTE || l == streamapi.LookupLT || l == streamapi.LookupLTE) && kind == "bool":
				return fmt.Errorf("resource %s: lookup %s does not apply to the boolean %s", r.cfg.Stream, l, name)
			}
		}
		qf.lookups = ls
	}
	for _, name := range r.cfg.Ordering {
		qf, err := get(name, "Ordering")
		if err != nil {
			return err
		}
		if valueKind(qf.typ) == "" {
			return fmt.Errorf("resource %s: field %s of type %s cannot be ordered by", r.cfg.Stream, name, qf.typ)
		}
		qf.order = true
	}
	for _, name := range r.cfg.Search {
		qf, err := get(name, "Search")
		if err != nil {
			return err
		}
		if valueKind(qf.typ) != "string" {
			return fmt.Errorf("resource %s: Search field %s must be text", r.cfg.Stream, name)
		}
		qf.search = true
	}
	for _, o := range r.cfg.DefaultOrdering {
		if _, err := get(strings.TrimPrefix(o, "-"), "DefaultOrdering"); err != nil {
			return err
		}
	}
	return nil
}

// valueKind classifies a field's type for the query language: "int",
// "uint", "float", "string", "bool", "time", or "" when it cannot be
// queried.
func valueKind(t reflect.Type) string {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == timeType {
		return "time"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "int"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "uint"
	case reflect.Float32, reflect.Float64:
		return "float"
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "bool"
	}
	return ""
}

// param is one query parameter: text (REST) or JSON (WebSocket).
type param struct {
	text   string
	raw    json.RawMessage
	isJSON bool
}

// params are a list request's query parameters, from either surface.
type params map[string]param

// paramsFromQuery reads REST query parameters (the last value of a
// repeated name).
func paramsFromQuery(q map[string][]string) params {
	p := make(params, len(q))
	for k, vs := range q {
		if len(vs) > 0 {
			p[k] = param{text: vs[len(vs)-1]}
		}
	}
	return p
}

// paramsFromData reads the keys of a WebSocket list request's data.
func paramsFromData(data json.RawMessage) (params, error) {
	if len(data) == 0 || string(data) == "null" {
		return params{}, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil || m == nil {
		return nil, notADict(data)
	}
	p := make(params, len(m))
	for k, v := range m {
		if string(v) == "null" {
			continue
		}
		p[k] = param{raw: v, isJSON: true}
	}
	return p, nil
}

// string returns the parameter as text: a JSON string's content, or the
// JSON of any other value.
func (p param) string() string {
	if !p.isJSON {
		return p.text
	}
	var s string
	if json.Unmarshal(p.raw, &s) == nil {
		return s
	}
	return string(p.raw)
}

// list returns the parameter as a list: a JSON array's items, or the
// comma-separated parts of text.
func (p param) list() ([]param, bool) {
	if p.isJSON && len(p.raw) > 0 && p.raw[0] == '[' {
		var items []json.RawMessage
		if json.Unmarshal(p.raw, &items) != nil {
			return nil, false
		}
		out := make([]param, len(items))
		for i, it := range items {
			out[i] = param{raw: it, isJSON: true}
		}
		return out, true
	}
	var out []param
	for _, s := range strings.Split(p.string(), ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, param{text: s})
		}
	}
	return out, true
}

// listQuery is a parsed list request.
type listQuery struct {
	q         streamapi.ListQuery
	fields    []*queryField // sparse fields; nil means all
	ordering  string        // the ordering's text, for cursors
	page      int
	pageSize  int
	cursor    *string // set in cursor mode ("" for the first page)
	withCount bool
}

// size returns the parameters' size in bytes, names and values, and the
// name of the largest.
func (p params) size() (total int, largest string) {
	most := -1
	for name, v := range p {
		n := len(v.text) + len(v.raw)
		total += len(name) + n
		if n > most || n == most && name < largest {
			most, largest = n, name
		}
	}
	return total, largest
}

// over reports whether n passes limit (negative: no limit).
func over(n, limit int) bool { return limit >= 0 && n > limit }

// parse reads p into a list query, collecting a message per bad parameter.
func (r *Resource[T]) parse(p params) (*listQuery, error) {
	lq := &listQuery{page: 1}
	errs := streamapi.FieldErrors{}
	lim := r.qlimits
	if total, largest := p.size(); over(total, lim.MaxQueryBytes) {
		errs.Add(largest, fmt.Sprintf("The query is too large: at most %d bytes in all.", lim.MaxQueryBytes))
		return nil, errs.Err()
	}
	for name, v := range p {
		switch name {
		case paramPage:
			n, err := strconv.Atoi(strings.TrimSpace(v.string()))
			if err != nil || n < 1 {
				return nil, streamapi.ErrInvalidPage
			}
			lq.page = n
		case paramPageSize:
			// As DRF: a page_size that is not a positive integer is ignored.
			if n, err := strconv.Atoi(strings.TrimSpace(v.string())); err == nil && n > 0 {
				lq.pageSize = n
			}
		case paramWithCount:
			b, ok := parseBool(v)
			if !ok {
				errs.Add(name, "Must be a valid boolean.")
			}
			lq.withCount = b
		case paramCursor:
			s := v.string()
			lq.cursor = &s
		case paramSearch:
			if msg := badText(v.string()); msg != "" {
				errs.Add(name, msg)
				continue
			}
			terms := strings.FieldsFunc(v.string(), func(c rune) bool { return c == ',' || c == ' ' || c == '\t' || c == '\n' })
			if over(len(terms), lim.MaxSearchTerms) {
				errs.Add(name, fmt.Sprintf("Ensure this field has no more than %d terms.", lim.MaxSearchTerms))
				continue
			}
			for _, term := range terms {
				var any []streamapi.Cond
				for _, name := range r.cfg.Search {
					any = append(any, streamapi.Cond{Column: r.qfields[name].column, Lookup: streamapi.LookupIContains, Value: term})
				}
				if len(any) == 0 {
					errs.Add(name, "This resource has no search fields.")
					break
				}
				lq.q.Where = append(lq.q.Where, streamapi.Cond{Any: any})
			}
		case paramFields:
			items, ok := v.list()
			if !ok {
				errs.Add(name, "Expected a list of field names.")
				continue
			}
			asked := map[string]bool{}
			for _, it := range items {
				if r.sparse(it.string()) == nil {
					errs.Add(name, fmt.Sprintf("Unknown field %q.", it.string()))
					continue
				}
				asked[it.string()] = true
			}
			lq.fields = []*queryField{} // in declaration order
			for i := range r.fields {
				if asked[r.fields[i].name] {
					lq.fields = append(lq.fields, r.sparse(r.fields[i].name))
				}
			}
		case paramOrdering:
			items, _ := v.list()
			if over(len(items), lim.MaxOrdering) {
				errs.Add(name, fmt.Sprintf("Ensure this field has no more than %d items.", lim.MaxOrdering))
				continue
			}
			lq.ordering = v.string()
			for _, it := range items {
				s := it.string()
				qf := r.qfields[strings.TrimPrefix(s, "-")]
				if qf == nil || !qf.order {
					errs.Add(name, fmt.Sprintf("Cannot order by %q.", s))
					continue
				}
				lq.q.Order = append(lq.q.Order, streamapi.Order{Column: qf.column, Desc: strings.HasPrefix(s, "-")})
			}
		default:
			fname, _, _ := strings.Cut(name, "__")
			if !v.isJSON && (r.sparse(fname) == nil || v.text == "") {
				// As django-filter: a query-string name that is no field of
				// the resource (an auth token, a cache buster, ?format=) and
				// an empty value are ignored. The WebSocket's data holds
				// only the list's parameters, so there every key counts.
				continue
			}
			c, msg := r.filter(name, v)
			if msg != "" {
				errs.Add(name, msg)
				continue
			}
			lq.q.Where = append(lq.q.Where, c)
		}
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	if lq.q.Order == nil {
		lq.ordering = strings.Join(r.cfg.DefaultOrdering, ",")
		for _, o := range r.cfg.DefaultOrdering {
			qf := r.qfields[strings.TrimPrefix(o, "-")]
			lq.q.Order = append(lq.q.Order, streamapi.Order{Column: qf.column, Desc: strings.HasPrefix(o, "-")})
		}
	}
	return lq, nil
}

// sparse returns the wire field name names, for ?fields=.
func (r *Resource[T]) sparse(name string) *queryField {
	if qf := r.qfields[name]; qf != nil {
		return qf
	}
	for i := range r.fields { // a field that is not stored is still shown
		if r.fields[i].name == name {
			return &queryField{field: &r.fields[i]}
		}
	}
	return nil
}

// filter parses one filter parameter, "field" or "field__lookup".
func (r *Resource[T]) filter(name string, v param) (streamapi.Cond, string) {
	fname, lookup, ok := strings.Cut(name, "__")
	if !ok {
		lookup = streamapi.LookupExact
	}
	qf := r.qfields[fname]
	if qf == nil || !slices.Contains(qf.lookups, lookup) {
		return streamapi.Cond{}, "Unknown filter: not a declared field and lookup."
	}
	c := streamapi.Cond{Column: qf.column, Lookup: lookup}
	switch lookup {
	case streamapi.LookupIsNull:
		b, ok := parseBool(v)
		if !ok {
			return c, "Must be a valid boolean."
		}
		c.Value = b
	case streamapi.LookupIn:
		items, ok := v.list()
		if !ok {
			return c, "Expected a list of values."
		}
		if over(len(items), r.qlimits.MaxInValues) {
			return c, fmt.Sprintf("Ensure this field has no more than %d values.", r.qlimits.MaxInValues)
		}
		vals := make([]any, 0, len(items))
		for _, it := range items {
			x, msg := convert(qf.typ, it)
			if msg != "" {
				return c, msg
			}
			vals = append(vals, x)
		}
		c.Value = vals
	default:
		x, msg := convert(qf.typ, v)
		if msg != "" {
			return c, msg
		}
		c.Value = x
	}
	return c, ""
}

// badText returns DRF's message for text no database stores as sent: a
// NUL byte (PostgreSQL refuses it) or invalid UTF-8 (which would be
// rewritten before the comparison).
func badText(s string) string {
	switch {
	case strings.ContainsRune(s, 0):
		return "Null characters are not allowed."
	case !utf8.ValidString(s):
		return "Not a valid string."
	}
	return ""
}

func parseBool(v param) (bool, bool) {
	switch strings.ToLower(strings.TrimSpace(v.string())) {
	case "true", "1":
		return true, true
	case "false", "0":
		return false, true
	}
	return false, false
}

// timeLayouts are the date-time forms a filter accepts, as django's
// DateTimeField: RFC 3339, then without a zone (UTC), then a date.
var timeLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999", "2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02"}

// convert turns a parameter into a value of type t (its element type for a
// pointer), or returns django-filter's message.
func convert(t reflect.Type, v param) (any, string) {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	s := strings.TrimSpace(v.string())
	var out reflect.Value
	switch valueKind(t) {
	case "int":
		n, err := strconv.ParseInt(s, 10, t.Bits())
		if err != nil {
			return nil, "Enter a number."
		}
		out = reflect.New(t).Elem()
		out.SetInt(n)
	case "uint":
		n, err := strconv.ParseUint(s, 10, t.Bits())
		if err != nil {
			return nil, "Enter a number."
		}
		out = reflect.New(t).Elem()
		out.SetUint(n)
	case "float":
		f, err := strconv.ParseFloat(s, t.Bits())
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, "Enter a number."
		}
		out = reflect.New(t).Elem()
		out.SetFloat(f)
	case "bool":
		b, ok := parseBool(v)
		if !ok {
			return nil, "Must be a valid boolean."
		}
		out = reflect.ValueOf(b).Convert(t)
	case "time":
		for _, layout := range timeLayouts {
			if tm, err := time.Parse(layout, s); err == nil {
				return normalTime(tm), ""
			}
		}
		return nil, "Enter a valid date/time."
	case "string":
		if v.isJSON && len(v.raw) > 0 && v.raw[0] != '"' {
			return nil, "Not a valid string."
		}
		if msg := badText(v.string()); msg != "" {
			return nil, msg
		}
		out = reflect.ValueOf(v.string()).Convert(t)
	default:
		return nil, "This field cannot be filtered."
	}
	return out.Interface(), ""
}

// normalTime is how times are stored and compared: UTC, to the
// microsecond (PostgreSQL's precision).
func normalTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// Match reports whether obj satisfies every condition, evaluated in memory
// exactly as the store evaluates it in SQL (docs/queries.md): the query
// language's semantics, for filtering events without a query.
func (r *Resource[T]) Match(obj *T, conds []streamapi.Cond) bool {
	v := reflect.ValueOf(obj).Elem()
	for _, c := range conds {
		if !r.match(v, c) {
			return false
		}
	}
	return true
}

func (r *Resource[T]) match(v reflect.Value, c streamapi.Cond) bool {
	if len(c.All) > 0 {
		for _, sub := range c.All {
			if !r.match(v, sub) {
				return false
			}
		}
		return true
	}
	if len(c.Any) > 0 {
		for _, sub := range c.Any {
			if r.match(v, sub) {
				return true
			}
		}
		return false
	}
	if c.Member != nil {
		return r.matchMember(v, c)
	}
	qf := r.byColumn[c.Column]
	if qf == nil && r.pkField.column == c.Column {
		qf = r.pkField
	}
	if qf == nil {
		return false
	}
	fv := v.FieldByIndex(qf.index)
	if fv.Kind() == reflect.Pointer {
		if fv.IsNil() {
			return c.Lookup == streamapi.LookupIsNull && c.Value == true
		}
		fv = fv.Elem()
	}
	if c.Lookup == streamapi.LookupIsNull {
		return c.Value == false
	}
	switch c.Lookup {
	case streamapi.LookupExact:
		return compareValues(fv, c.Value) == 0
	case streamapi.LookupGT:
		return compareValues(fv, c.Value) > 0
	case streamapi.LookupGTE:
		return compareValues(fv, c.Value) >= 0
	case streamapi.LookupLT:
		return compareValues(fv, c.Value) < 0
	case streamapi.LookupLTE:
		return compareValues(fv, c.Value) <= 0
	case streamapi.LookupIn:
		vals, _ := c.Value.([]any)
		for _, x := range vals {
			if compareValues(fv, x) == 0 {
				return true
			}
		}
		return false
	case streamapi.LookupContains:
		return strings.Contains(fv.String(), reflect.ValueOf(c.Value).String())
	case streamapi.LookupIContains:
		return strings.Contains(asciiLower(fv.String()), asciiLower(reflect.ValueOf(c.Value).String()))
	case streamapi.LookupStartsWith:
		return strings.HasPrefix(fv.String(), reflect.ValueOf(c.Value).String())
	}
	return false
}

// matchMember evaluates a relation scope's condition from the index.
func (r *Resource[T]) matchMember(v reflect.Value, c streamapi.Cond) bool {
	if f := r.byColumn[c.Column]; f != nil {
		fv := v.FieldByIndex(f.index)
		if fv.Kind() == reflect.Pointer {
			if fv.IsNil() {
				return false
			}
			fv = fv.Elem()
		}
		var buf [32]byte
		return c.Member.Has(appendKey(buf[:0], fv))
	}
	return false
}

// appendKey appends fv's canonical JSON (streamapi.EncodePK) to buf:
// without allocating for integers and plain ASCII strings.
func appendKey(buf []byte, fv reflect.Value) []byte {
	switch fv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.AppendInt(buf, fv.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.AppendUint(buf, fv.Uint(), 10)
	case reflect.String:
		s := fv.String()
		plain := true
		for i := 0; i < len(s) && plain; i++ {
			c := s[i]
			plain = c >= 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
		}
		if plain {
			buf = append(buf, '"')
			buf = append(buf, s...)
			return append(buf, '"')
		}
	}
	return append(buf, streamapi.EncodePK(fv.Interface())...)
}

// compareValues compares a field's value with a query value of its type:
// -1, 0 or 1. Text compares byte by byte.
func compareValues(fv reflect.Value, x any) int {
	xv := reflect.ValueOf(x)
	if fv.Type() == timeType {
		return normalTime(fv.Interface().(time.Time)).Compare(normalTime(x.(time.Time)))
	}
	switch valueKind(fv.Type()) {
	case "int":
		return cmp3(fv.Int(), xv.Int())
	case "uint":
		return cmp3(fv.Uint(), xv.Uint())
	case "float":
		return cmp3(fv.Float(), xv.Float())
	case "string":
		return strings.Compare(fv.String(), xv.String())
	case "bool":
		a, b := fv.Bool(), xv.Bool()
		switch {
		case a == b:
			return 0
		case !a:
			return -1
		}
		return 1
	}
	return -2
}

func cmp3[N int64 | uint64 | float64](a, b N) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// asciiLower lowers ASCII letters only, as SQLite's lower() and
// PostgreSQL's under COLLATE "C" do.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// cursorState is what a cursor holds: the ordering it was made for and the
// sort values of the last object of its page.
type cursorState struct {
	Ordering string            `json:"o"`
	Values   []json.RawMessage `json:"v"`
}

// nullableSort returns the first nullable field of lq's sort, if any: a
// keyset cannot step past NULLs, so cursors refuse such orderings.
func (r *Resource[T]) nullableSort(lq *listQuery) string {
	for _, k := range r.sortKeys(lq.q.Order) {
		if k.typ.Kind() == reflect.Pointer {
			return k.name
		}
	}
	return ""
}

// makeCursor returns the cursor after obj.
func (r *Resource[T]) makeCursor(obj *T, lq *listQuery) string {
	v := reflect.ValueOf(obj).Elem()
	var vals []json.RawMessage
	for _, k := range r.sortKeys(lq.q.Order) {
		b, _ := json.Marshal(v.FieldByIndex(k.index).Interface())
		vals = append(vals, b)
	}
	b, _ := json.Marshal(cursorState{Ordering: lq.ordering, Values: vals})
	return base64.RawURLEncoding.EncodeToString(b)
}

// readCursor sets lq's keyset from a cursor made for the same ordering.
func (r *Resource[T]) readCursor(lq *listQuery, cursor string) error {
	bad := func() error {
		errs := streamapi.FieldErrors{}
		errs.Add(paramCursor, "Invalid cursor.")
		return errs.Err()
	}
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return bad()
	}
	var st cursorState
	dec := json.NewDecoder(bytes.NewReader(b))
	if dec.Decode(&st) != nil || st.Ordering != lq.ordering {
		return bad()
	}
	keys := r.sortKeys(lq.q.Order)
	if len(st.Values) != len(keys) {
		return bad()
	}
	for i, k := range keys {
		x, msg := convert(k.typ, param{raw: st.Values[i], isJSON: true})
		if msg != "" {
			return bad()
		}
		lq.q.After = append(lq.q.After, x)
	}
	return nil
}

// sortKeys returns the fields of the full sort: the ordering, then the
// primary key unless the ordering has it.
func (r *Resource[T]) sortKeys(order []streamapi.Order) []*queryField {
	var out []*queryField
	hasPK := false
	for _, o := range order {
		for _, qf := range r.qfields {
			if qf.column == o.Column {
				out = append(out, qf)
				hasPK = hasPK || slices.Equal(qf.index, r.pkIndex)
			}
		}
	}
	if !hasPK {
		out = append(out, r.pkField) // even when the key is not a wire field
	}
	return out
}

// project returns objs as JSON, keeping only fields when set, in
// declaration order.
func project[T any](objs []T, fields []*queryField) (any, error) {
	if fields == nil {
		return objs, nil
	}
	out := make([]json.RawMessage, len(objs))
	for i := range objs {
		b, err := json.Marshal(&objs[i])
		if err != nil {
			return nil, err
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		buf.WriteByte('{')
		n := 0
		for _, f := range fields {
			val, ok := m[f.name]
			if !ok {
				continue
			}
			if n > 0 {
				buf.WriteByte(',')
			}
			k, _ := json.Marshal(f.name)
			buf.Write(k)
			buf.WriteByte(':')
			buf.Write(val)
			n++
		}
		buf.WriteByte('}')
		out[i] = buf.Bytes()
	}
	return out, nil
}

// Conds parses the filters and search of REST-style query parameters into
// the conditions Match evaluates (and the store runs in SQL).
func (r *Resource[T]) Conds(query map[string][]string) ([]streamapi.Cond, error) {
	lq, err := r.parse(paramsFromQuery(query))
	if err != nil {
		return nil, err
	}
	return lq.q.Where, nil
}
