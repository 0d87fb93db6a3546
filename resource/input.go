package resource

import (
	"fmt"
	"reflect"
	"sync"

	"github.com/go-playground/validator/v10"
	"github.com/streamapi/streamapi"
)

var (
	inputValidate = validator.New(validator.WithRequiredStructEnabled())
	inputFields   sync.Map // reflect.Type → []field
)

// Input decodes a custom action's data into a new In and checks it as a
// resource checks an object it is sent: In is a struct whose fields have
// json names and validate tags ("required" means the key must be sent).
// A bad value answers 400 with the messages by field, in the usual map
// (`{"position": ["Ensure this value is greater than or equal to 0."]}`),
// data that is not an object answers under non_field_errors. Call it first
// thing in a DetailAction's or ListAction's Func:
//
//	in, err := resource.Input[Move](req)
//	if err != nil {
//		return nil, 0, err
//	}
func Input[In any](req *streamapi.Request) (*In, error) {
	t := reflect.TypeFor[In]()
	fs, err := fieldsOf(t)
	if err != nil {
		return nil, err
	}
	in := new(In)
	v := reflect.ValueOf(in).Elem()
	errs, err := decodeData(fs, v, req.Data, false, false)
	if err != nil {
		return nil, err
	}
	normalTimes(v, fs)
	if err := checkFields(inputValidate, fs, v, errs); err != nil {
		return nil, err
	}
	return in, nil
}

// fieldsOf returns the wire fields of struct type t, read once.
func fieldsOf(t reflect.Type) ([]field, error) {
	if fs, ok := inputFields.Load(t); ok {
		return fs.([]field), nil
	}
	if t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("resource: Input[%s]: want a struct type", t)
	}
	fs, err := fields(t, nil)
	if err != nil {
		return nil, fmt.Errorf("resource: Input[%s]: %w", t, err)
	}
	inputFields.Store(t, fs)
	return fs, nil
}
