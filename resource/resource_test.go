package resource_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/resource"
	"github.com/streamapi/streamapi/store/sqlstore"
	"github.com/uptrace/bun"
)

// Item exercises every kind of field the decoder knows.
type Item struct {
	bun.BaseModel `bun:"table:items" json:"-"`
	ID            int64    `bun:"id,pk,autoincrement" json:"id"`
	Name          string   `bun:"name,notnull" json:"name" validate:"required,max=5"`
	Email         string   `bun:"email" json:"email" validate:"omitempty,email"`
	Kind          string   `bun:"kind" json:"kind" validate:"omitempty,oneof=a b"`
	Tags          []string `bun:"tags" json:"tags" validate:"max=2"`
	Score         float64  `bun:"score" json:"score" validate:"gte=0,lt=10"`
	Note          *string  `bun:"note" json:"note"`
	Flag          bool     `bun:"flag" json:"flag"`
	Owner         string   `bun:"owner" json:"owner" streamapi:"readonly"`
	Secret        string   `bun:"secret" json:"-"`
	Slug          string   `bun:"slug" json:"slug" streamapi:"writeonce"`
}

// Code has a string primary key.
type Code struct {
	bun.BaseModel `bun:"table:codes" json:"-"`
	Code          string `bun:"code,pk" json:"code"`
}

// Small has an unsigned 8-bit key.
type Small struct {
	bun.BaseModel `bun:"table:smalls" json:"-"`
	ID            uint8 `bun:"id,pk" json:"id"`
}

func openStore(t *testing.T) *sqlstore.DB {
	t.Helper()
	ctx := context.Background()
	db, err := sqlstore.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "r.db"), sqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, m := range []any{(*Item)(nil), (*Code)(nil), (*Small)(nil)} {
		if _, err := db.Bun().NewCreateTable().Model(m).Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

func newItems(t *testing.T, cfg resource.Config[Item]) *resource.Resource[Item] {
	t.Helper()
	cfg.Stream, cfg.Label, cfg.Store = "items", "test.item", openStore(t)
	r, err := resource.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.Init(streamapi.Defaults{})
	return r
}

func serve(t *testing.T, r streamapi.Resource, action string, pk, data string) streamapi.Reply {
	t.Helper()
	req := &streamapi.Request{Stream: r.Stream(), Action: action}
	if pk != "" {
		req.PK = json.RawMessage(pk)
	}
	if data != "" {
		req.Data = json.RawMessage(data)
	}
	return r.Serve(context.Background(), req)
}

func fieldErrs(t *testing.T, rep streamapi.Reply) string {
	t.Helper()
	e, ok := rep.Err.(*streamapi.Error)
	if !ok {
		t.Fatalf("reply error %v (%T), want *streamapi.Error", rep.Err, rep.Err)
	}
	b, _ := json.Marshal(e.Fields)
	return string(b)
}

func TestNew_Errors(t *testing.T) {
	db := openStore(t)
	noop := func(context.Context, *streamapi.Request, *Item) (any, int, error) { return nil, 0, nil }
	listNoop := func(context.Context, *streamapi.Request) (any, int, error) { return nil, 0, nil }
	cases := map[string]resource.Config[Item]{
		"Stream is required":             {Label: "a.b", Store: db},
		"Label is required":              {Stream: "s", Store: db},
		"Store is required":              {Stream: "s", Label: "a.b"},
		"PageSize must not be negative":  {Stream: "s", Label: "a.b", Store: db, PageSize: -1},
		`unknown standard action "frob"`: {Stream: "s", Label: "a.b", Store: db, Actions: []string{"frob"}},
		`shadows a standard action`:      {Stream: "s", Label: "a.b", Store: db, DetailActions: []resource.DetailAction[Item]{{Name: "x", WireName: "list", Func: noop}}},
		`declared twice`: {Stream: "s", Label: "a.b", Store: db,
			DetailActions: []resource.DetailAction[Item]{{Name: "go", Func: noop}},
			ListActions:   []resource.ListAction{{Name: "go", Func: listNoop}}},
		`has no Func`:                     {Stream: "s", Label: "a.b", Store: db, ListActions: []resource.ListAction{{Name: "x"}}},
		`has no name`:                     {Stream: "s", Label: "a.b", Store: db, ListActions: []resource.ListAction{{Func: listNoop}}},
		`Filters names "nope"`:            {Stream: "s", Label: "a.b", Store: db, Filters: map[string][]string{"nope": {"exact"}}},
		`unknown lookup "like"`:           {Stream: "s", Label: "a.b", Store: db, Filters: map[string][]string{"name": {"like"}}},
		`lookup icontains needs a text`:   {Stream: "s", Label: "a.b", Store: db, Filters: map[string][]string{"score": {"icontains"}}},
		`Search field score must be text`: {Stream: "s", Label: "a.b", Store: db, Search: []string{"score"}},
		`Ordering names "nope"`:           {Stream: "s", Label: "a.b", Store: db, Ordering: []string{"nope"}},
		`DefaultOrdering names "nope"`:    {Stream: "s", Label: "a.b", Store: db, DefaultOrdering: []string{"-nope"}},
	}
	for want, cfg := range cases {
		if _, err := resource.New(cfg); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New: %v, want an error containing %q", err, want)
		}
	}
	type NoPK struct {
		ID int64 `json:"id"`
	}
	if _, err := resource.New(resource.Config[NoPK]{Stream: "s", Label: "a.b", Store: db}); err == nil {
		t.Error("New accepted a model without a primary key")
	}
}

func TestParsePK(t *testing.T) {
	items := newItems(t, resource.Config[Item]{})
	codes, err := resource.New(resource.Config[Code]{Stream: "codes", Label: "t.code", Store: openStore(t)})
	if err != nil {
		t.Fatal(err)
	}
	smalls, err := resource.New(resource.Config[Small]{Stream: "smalls", Label: "t.small", Store: openStore(t)})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		r    streamapi.Resource
		raw  string
		want any // nil: not found
	}{
		{items, `7`, int64(7)},
		{items, `"7"`, int64(7)},
		{items, `-7`, int64(-7)},
		{items, `"007"`, int64(7)},
		{items, `7.5`, nil},
		{items, `1e2`, nil},
		{items, `"x"`, nil},
		{items, `true`, nil},
		{items, `null`, nil},
		{items, `{"id":1}`, nil},
		{items, `[1]`, nil},
		{items, `"99999999999999999999"`, nil},
		{codes, `"ab"`, "ab"},
		{codes, `12`, "12"},
		{codes, `false`, nil},
		{smalls, `255`, uint8(255)},
		{smalls, `256`, nil},
		{smalls, `-1`, nil},
	}
	for _, tc := range cases {
		got, err := tc.r.ParsePK(json.RawMessage(tc.raw))
		if tc.want == nil {
			if streamapi.ErrorCode(err) != streamapi.ENOTFOUND {
				t.Errorf("%s ParsePK(%s) = %v, %v; want not found", tc.r.Stream(), tc.raw, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s ParsePK(%s) = %#v, %v; want %#v", tc.r.Stream(), tc.raw, got, err, tc.want)
		}
	}
}

func TestDecode_Messages(t *testing.T) {
	items := newItems(t, resource.Config[Item]{})
	cases := []struct{ data, want string }{
		{`{}`, `{"name":["This field is required."]}`},
		{`{"name":"abcdef"}`, `{"name":["Ensure this field has no more than 5 characters."]}`},
		{`{"name":"a","email":"nope"}`, `{"email":["Enter a valid email address."]}`},
		{`{"name":"a","kind":"c"}`, `{"kind":["\"c\" is not a valid choice."]}`},
		{`{"name":"a","tags":["1","2","3"]}`, `{"tags":["Ensure this field has no more than 2 elements."]}`},
		{`{"name":"a","tags":"x"}`, `{"tags":["Expected a list of items."]}`},
		{`{"name":"a","score":-1}`, `{"score":["Ensure this value is greater than or equal to 0."]}`},
		{`{"name":"a","score":10}`, `{"score":["Ensure this value is less than 10."]}`},
		{`{"name":"a","score":"x"}`, `{"score":["A valid number is required."]}`},
		{`{"name":"a","flag":"yes"}`, `{"flag":["Must be a valid boolean."]}`},
		{`{"name":"a","flag":null}`, `{"flag":["This field may not be null."]}`},
		{`7`, `{"non_field_errors":["Invalid data. Expected a dictionary, but got int."]}`},
		{`7.5`, `{"non_field_errors":["Invalid data. Expected a dictionary, but got float."]}`},
		{`"x"`, `{"non_field_errors":["Invalid data. Expected a dictionary, but got str."]}`},
		{`true`, `{"non_field_errors":["Invalid data. Expected a dictionary, but got bool."]}`},
	}
	for _, tc := range cases {
		rep := serve(t, items, "create", "", tc.data)
		if got := fieldErrs(t, rep); got != tc.want {
			t.Errorf("create %s: %s, want %s", tc.data, got, tc.want)
		}
	}
}

func TestDecode_ReadOnlyNullAndPatch(t *testing.T) {
	items := newItems(t, resource.Config[Item]{
		Defaults: func(_ context.Context, it *Item) { it.Owner = "server" },
	})
	rep := serve(t, items, "create", "", `{"name":"a","owner":"client","id":99,"note":"n","Secret":"s","unknown":1}`)
	if rep.Err != nil || rep.Status != 201 {
		t.Fatalf("create: %+v", rep)
	}
	it := rep.Data.(*Item)
	if it.Owner != "server" || it.ID == 99 || it.Note == nil || *it.Note != "n" || it.Secret != "" {
		t.Fatalf("created %+v", it)
	}
	id, _ := json.Marshal(it.ID)
	// A pointer field accepts null.
	rep = serve(t, items, "patch", string(id), `{"note":null}`)
	if rep.Err != nil || rep.Data.(*Item).Note != nil || rep.Data.(*Item).Name != "a" {
		t.Fatalf("patch note null: %+v", rep)
	}
	// patch checks only the keys sent, but the rules still run on them.
	rep = serve(t, items, "patch", string(id), `{"name":""}`)
	if got := fieldErrs(t, rep); got != `{"name":["This field may not be blank."]}` {
		t.Fatalf("patch blank name: %s", got)
	}
	// update needs every required field.
	rep = serve(t, items, "update", string(id), `{"email":"a@b.c"}`)
	if got := fieldErrs(t, rep); got != `{"name":["This field is required."]}` {
		t.Fatalf("update without name: %s", got)
	}
}

// TestDecode_WriteOnce: a write-once field is set on create; sending the
// same value again is fine; changing it is a 400 naming it; a read-only
// field is ignored (as DRF ignores read_only_fields).
func TestDecode_WriteOnce(t *testing.T) {
	items := newItems(t, resource.Config[Item]{})
	rep := serve(t, items, "create", "", `{"name":"a","slug":"first"}`)
	if rep.Err != nil || rep.Data.(*Item).Slug != "first" {
		t.Fatalf("create: %+v", rep)
	}
	id, _ := json.Marshal(rep.Data.(*Item).ID)
	if rep = serve(t, items, "patch", string(id), `{"slug":"first","name":"b"}`); rep.Err != nil || rep.Data.(*Item).Name != "b" {
		t.Fatalf("patch with the same slug: %+v", rep)
	}
	rep = serve(t, items, "patch", string(id), `{"slug":"second","name":"c"}`)
	if got := fieldErrs(t, rep); got != `{"slug":["This field cannot be changed once set."]}` {
		t.Fatalf("patch changing the slug: %s", got)
	}
	rep = serve(t, items, "update", string(id), `{"name":"d","slug":2}`)
	if got := fieldErrs(t, rep); got != `{"slug":["This field cannot be changed once set."]}` {
		t.Fatalf("update with a slug of the wrong type: %s", got)
	}
	if rep = serve(t, items, "patch", string(id), `{"owner":"me"}`); rep.Err != nil || rep.Data.(*Item).Owner != "" {
		t.Fatalf("a read-only field was written: %+v", rep)
	}
	if rep = serve(t, items, "retrieve", string(id), ``); rep.Data.(*Item).Slug != "first" || rep.Data.(*Item).Name != "b" {
		t.Fatalf("stored: %+v", rep.Data)
	}
}

func TestValidateHookAndTypedAPI(t *testing.T) {
	ctx := context.Background()
	items := newItems(t, resource.Config[Item]{
		Validate: func(_ context.Context, it *Item, action string) error {
			if it.Name == "bad" {
				errs := streamapi.FieldErrors{}
				errs.Add("name", "No bad names ("+action+").")
				return errs.Err()
			}
			return nil
		},
	})
	rep := serve(t, items, "create", "", `{"name":"bad"}`)
	if got := fieldErrs(t, rep); got != `{"name":["No bad names (create)."]}` {
		t.Fatalf("hook: %s", got)
	}
	// The hook does not run while the field rules fail.
	rep = serve(t, items, "create", "", `{"name":"badbadbad"}`)
	if got := fieldErrs(t, rep); got != `{"name":["Ensure this field has no more than 5 characters."]}` {
		t.Fatalf("rules then hook: %s", got)
	}
	// The typed API validates too.
	if err := items.Create(ctx, &Item{Name: "bad"}); streamapi.ErrorCode(err) != streamapi.EINVALID {
		t.Fatalf("Create(bad): %v", err)
	}
	it := &Item{Name: "ok"}
	if err := items.Create(ctx, it); err != nil {
		t.Fatal(err)
	}
	it.Name = "bad"
	if err := items.Update(ctx, it); streamapi.ErrorCode(err) != streamapi.EINVALID {
		t.Fatalf("Update(bad): %v", err)
	}
	got, err := items.Get(ctx, it.ID)
	if err != nil || got.Name != "ok" {
		t.Fatalf("Get after refused update: %+v, %v", got, err)
	}
	if ok, err := items.Exists(ctx, it.ID); !ok || err != nil {
		t.Fatalf("Exists: %v %v", ok, err)
	}
	if err := items.Delete(ctx, it.ID); err != nil {
		t.Fatal(err)
	}
	if ok, err := items.Exists(ctx, it.ID); ok || err != nil {
		t.Fatalf("Exists after delete: %v %v", ok, err)
	}
	if err := items.Delete(ctx, it.ID); streamapi.ErrorCode(err) != streamapi.ENOTFOUND {
		t.Fatalf("second Delete: %v", err)
	}
}

func TestDefaultsFromServer(t *testing.T) {
	deny := streamapi.PermissionFunc(func(context.Context, *streamapi.User, string, any) bool { return false })
	r := newItems(t, resource.Config[Item]{})
	r.Init(streamapi.Defaults{PageSize: 1, Permission: deny})
	if err := r.Authorize(context.Background(), nil, "list", nil); streamapi.ErrorCode(err) != streamapi.EUNAUTHORIZED {
		t.Fatalf("server default permission not applied: %v", err)
	}
	// A resource's own settings win over the server's.
	own := newItems(t, resource.Config[Item]{PageSize: 3, Permission: streamapi.AllowAny})
	own.Init(streamapi.Defaults{PageSize: 1, Permission: deny})
	ctx := context.Background()
	for i := 0; i < 4; i++ {
		if err := own.Create(ctx, &Item{Name: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	rep := serve(t, own, "list", "", `{"page":1}`)
	if rep.Err != nil || len(rep.Data.([]Item)) != 3 {
		t.Fatalf("own page size: %+v", rep)
	}
	if err := own.Authorize(ctx, &streamapi.User{ID: "u"}, "list", nil); err != nil {
		t.Fatalf("own permission: %v", err)
	}
}

func TestParsePK_Spaces(t *testing.T) {
	items := newItems(t, resource.Config[Item]{})
	if got, err := items.ParsePK(json.RawMessage(`" 7 "`)); err != nil || got != int64(7) {
		t.Fatalf(`ParsePK(" 7 ") = %v, %v`, got, err)
	}
}
