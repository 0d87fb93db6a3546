package resource

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/go-playground/validator/v10"
	"github.com/streamapi/streamapi"
)

// field is one wire field of a model.
type field struct {
	name      string // JSON name
	index     []int
	typ       reflect.Type
	readOnly  bool
	writeOnce bool // set on create, never changed after
	required  bool
	rules     string // validator rules other than "required"
}

// fields reads the wire fields of struct type t: exported fields with a
// json name ("-" excluded), embedded structs flattened.
func fields(t reflect.Type, pkIndex []int) ([]field, error) {
	var out []field
	var walk func(t reflect.Type, prefix []int) error
	walk = func(t reflect.Type, prefix []int) error {
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			idx := append(append([]int(nil), prefix...), i)
			tag := sf.Tag.Get("json")
			name, _, _ := strings.Cut(tag, ",")
			if sf.Anonymous && name == "" {
				ft := sf.Type
				if ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if ft.Kind() == reflect.Struct && ft.PkgPath() != "github.com/uptrace/bun/schema" && ft.Name() != "BaseModel" {
					if err := walk(ft, idx); err != nil {
						return err
					}
				}
				continue
			}
			if !sf.IsExported() || name == "-" {
				continue
			}
			if name == "" {
				name = sf.Name
			}
			f := field{name: name, index: idx, typ: sf.Type}
			f.readOnly = slicesEqual(idx, pkIndex) || hasOpt(sf.Tag.Get("streamapi"), "readonly")
			f.writeOnce = hasOpt(sf.Tag.Get("streamapi"), "writeonce")
			var rules []string
			for _, r := range strings.Split(sf.Tag.Get("validate"), ",") {
				switch r {
				case "required":
					f.required = true
				case "":
				default:
					rules = append(rules, r)
				}
			}
			f.rules = strings.Join(rules, ",")
			out = append(out, f)
		}
		return nil
	}
	if err := walk(t, nil); err != nil {
		return nil, err
	}
	return out, nil
}

func hasOpt(tag, opt string) bool {
	for _, o := range strings.Split(tag, ",") {
		if o == opt {
			return true
		}
	}
	return false
}

func slicesEqual(a, b []int) bool {
	if len(a) != len(b) || len(a) == 0 {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// decodeData applies the request's data to obj (the model's struct),
// reporting keys of the wrong type, nulls for non-pointer fields, and, when
// partial is false (create, update), missing required fields (on create,
// those the Defaults hook left zero). Read-only and
// unknown keys are ignored, as DRF does. The rules run afterwards, in check.
func decodeData(fs []field, obj reflect.Value, data json.RawMessage, partial, existing bool) (streamapi.FieldErrors, error) {
	var m map[string]json.RawMessage
	if len(data) > 0 {
		if err := json.Unmarshal(data, &m); err != nil || m == nil {
			return nil, notADict(data)
		}
	}
	errs := streamapi.FieldErrors{}
	for i := range fs {
		f := &fs[i]
		if f.readOnly {
			continue
		}
		raw, present := m[f.name]
		fv := obj.FieldByIndex(f.index)
		if !present {
			// A field the Defaults hook gave a value is not required on
			// create, as a model field with a default is not in DRF.
			if f.required && !partial && (existing || fv.IsZero()) {
				errs.Add(f.name, "This field is required.")
			}
			continue
		}
		if string(raw) == "null" {
			if f.typ.Kind() == reflect.Pointer {
				fv.SetZero()
				continue
			}
			errs.Add(f.name, "This field may not be null.")
			continue
		}
		if f.writeOnce && existing {
			// Sending the value it has is fine; changing it is not.
			was := reflect.New(fv.Type()).Elem()
			was.Set(fv)
			if err := decodeValue(raw, fv); err != nil || !sameValue(was, fv) {
				fv.Set(was)
				errs.Add(f.name, "This field cannot be changed once set.")
			}
			continue
		}
		if err := decodeValue(raw, fv); err != nil {
			errs.Add(f.name, typeMessage(f.typ))
			continue
		}
	}
	return errs, nil
}

// decodeValue decodes raw into fv, accepting integers sent as strings
// ("5"), as DRF's IntegerField does.
func decodeValue(raw json.RawMessage, fv reflect.Value) error {
	p := reflect.New(fv.Type())
	err := json.Unmarshal(raw, p.Interface())
	if err != nil && raw[0] == '"' && isIntKind(fv.Type()) {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			err = json.Unmarshal([]byte(strings.TrimSpace(s)), p.Interface())
		}
	}
	if err != nil {
		return err
	}
	fv.Set(p.Elem())
	return nil
}

func isIntKind(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

var timeType = reflect.TypeOf(time.Time{})

// typeMessage is DRF's message for a value of the wrong type.
func typeMessage(t reflect.Type) string {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == timeType:
		return "Datetime has wrong format. Use one of these formats instead: YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
	case isIntKind(t):
		return "A valid integer is required."
	}
	switch t.Kind() {
	case reflect.Float32, reflect.Float64:
		return "A valid number is required."
	case reflect.String:
		return "Not a valid string."
	case reflect.Bool:
		return "Must be a valid boolean."
	case reflect.Slice, reflect.Array:
		return "Expected a list of items."
	case reflect.Map, reflect.Struct:
		return "Expected a dictionary of items."
	}
	return "Invalid value."
}

// notADict is DRF's error for data that is not a JSON object.
func notADict(data json.RawMessage) error {
	kind := "str"
	switch data[0] {
	case '[':
		kind = "list"
	case 't', 'f':
		kind = "bool"
	case '"':
		kind = "str"
	default:
		kind = "int"
		if strings.ContainsAny(string(data), ".eE") {
			kind = "float"
		}
	}
	errs := streamapi.FieldErrors{}
	errs.Add("non_field_errors", fmt.Sprintf("Invalid data. Expected a dictionary, but got %s.", kind))
	return errs.Err()
}

// ruleMessage is one rule's message in DRF's wording, for the field
// itself (item "") or for one element of it (item its index, or map key).
type ruleMessage struct {
	item, text string
}

// ruleMessages translates validator errors into DRF's wording, each worded
// for the value its rule failed on: an element's rule (after dive) names
// the element's length, not the list's.
func ruleMessages(err error) []ruleMessage {
	verrs, ok := err.(validator.ValidationErrors)
	if !ok {
		return []ruleMessage{{text: "Invalid value."}}
	}
	out := make([]ruleMessage, 0, len(verrs))
	for _, fe := range verrs {
		k := fe.Kind()
		text := k == reflect.String
		list := k == reflect.Slice || k == reflect.Array || k == reflect.Map
		// Var names an element "[1]" (or "[key]"), nested ones "[1][2]":
		// messages are keyed by the outermost.
		var item string
		if ns := fe.Namespace(); strings.HasPrefix(ns, "[") {
			if end := strings.IndexByte(ns, ']'); end > 0 {
				item = ns[1:end]
			}
		}
		p := fe.Param()
		var msg string
		switch fe.Tag() {
		case "max", "lte":
			switch {
			case text:
				msg = "Ensure this field has no more than " + p + " characters."
			case list:
				msg = "Ensure this field has no more than " + p + " elements."
			default:
				msg = "Ensure this value is less than or equal to " + p + "."
			}
		case "min", "gte":
			switch {
			case text:
				msg = "Ensure this field has at least " + p + " characters."
			case list:
				msg = "Ensure this field has at least " + p + " elements."
			default:
				msg = "Ensure this value is greater than or equal to " + p + "."
			}
		case "len":
			msg = "Ensure this field has exactly " + p + " characters."
		case "gt":
			msg = "Ensure this value is greater than " + p + "."
		case "lt":
			msg = "Ensure this value is less than " + p + "."
		case "email":
			msg = "Enter a valid email address."
		case "url", "http_url":
			msg = "Enter a valid URL."
		case "uuid", "uuid4":
			msg = "Must be a valid UUID."
		case "oneof":
			msg = strconv.Quote(fmt.Sprint(fe.Value())) + " is not a valid choice."
		default:
			msg = "Invalid value (rule " + fe.Tag() + ")."
		}
		out = append(out, ruleMessage{item: item, text: msg})
	}
	return out
}

// sameValue reports whether two values of a field are the same: instants
// for times (whatever their zone), deep equality otherwise.
func sameValue(a, b reflect.Value) bool {
	if a.Type() == timeType {
		return a.Interface().(time.Time).Equal(b.Interface().(time.Time))
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}

// badTextIn returns badText's message for the first string in v (a
// field's value: a string, or strings inside pointers, slices, arrays,
// maps and structs) that no database stores as sent, or "".
func badTextIn(v reflect.Value) string {
	switch v.Kind() {
	case reflect.String:
		return badText(v.String())
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			return badTextIn(v.Elem())
		}
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Uint8 {
			return "" // bytes, not text
		}
		for i := 0; i < v.Len(); i++ {
			if msg := badTextIn(v.Index(i)); msg != "" {
				return msg
			}
		}
	case reflect.Map:
		it := v.MapRange()
		for it.Next() {
			if msg := badTextIn(it.Key()); msg != "" {
				return msg
			}
			if msg := badTextIn(it.Value()); msg != "" {
				return msg
			}
		}
	case reflect.Struct:
		if v.Type() == timeType {
			return ""
		}
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				if msg := badTextIn(v.Field(i)); msg != "" {
					return msg
				}
			}
		}
	}
	return ""
}
