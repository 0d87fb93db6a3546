package resource_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/resource"
	"github.com/streamapi/streamapi/store/sqlstore"
	"github.com/uptrace/bun"
)

// hooked builds items whose BeforeWrite derives Owner from Name and whose
// AfterWrite records each write as a Code row ("<id>:<action>:<owner>"),
// both on one store; AfterWrite fails for the name "boom".
func hooked(t *testing.T) (*resource.Resource[Item], *resource.Resource[Code], *sqlstore.DB) {
	t.Helper()
	db := openStore(t)
	codes, err := resource.New(resource.Config[Code]{Stream: "codes", Label: "test.code", Store: db})
	if err != nil {
		t.Fatal(err)
	}
	items, err := resource.New(resource.Config[Item]{
		Stream: "items", Label: "test.item", Store: db,
		BeforeWrite: func(_ context.Context, it *Item, _ string) error {
			it.Owner = "by-" + it.Name
			return nil
		},
		AfterWrite: func(ctx context.Context, it *Item, action string) error {
			if it.Name == "boom" {
				return errors.New("boom")
			}
			return codes.Create(ctx, &Code{Code: fmt.Sprintf("%d:%s:%s", it.ID, action, it.Owner)})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	items.Init(streamapi.Defaults{})
	codes.Init(streamapi.Defaults{})
	return items, codes, db
}

func codesOf(t *testing.T, codes *resource.Resource[Code]) map[string]bool {
	t.Helper()
	got, err := codes.List(context.Background(), streamapi.ListQuery{})
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, c := range got {
		m[c.Code] = true
	}
	return m
}

// Every write path runs BeforeWrite and AfterWrite in the write's
// transaction: the socket's create and patch, and the typed Go Create and
// Update (which skipped both, and opened no transaction).
func TestHooks_EveryWritePath(t *testing.T) {
	ctx := context.Background()
	items, codes, _ := hooked(t)

	rep := serve(t, items, "create", "", `{"name":"ws"}`)
	if rep.Err != nil {
		t.Fatal(rep.Err)
	}
	wsItem := rep.Data.(*Item)
	if wsItem.Owner != "by-ws" {
		t.Fatalf("socket create: owner %q, want the derived by-ws", wsItem.Owner)
	}
	goItem := &Item{Name: "go"}
	if err := items.Create(ctx, goItem); err != nil {
		t.Fatal(err)
	}
	if goItem.Owner != "by-go" || goItem.ID == 0 {
		t.Fatalf("Go create: %+v, want owner by-go and a key", goItem)
	}
	if rep := serve(t, items, "patch", fmt.Sprint(wsItem.ID), `{"name":"ws2"}`); rep.Err != nil {
		t.Fatal(rep.Err)
	}
	goItem.Name = "go2"
	if err := items.Update(ctx, goItem); err != nil {
		t.Fatal(err)
	}
	stored, err := items.Get(ctx, goItem.ID)
	if err != nil || stored.Owner != "by-go2" {
		t.Fatalf("after Go update: %+v, %v; want owner by-go2", stored, err)
	}
	want := []string{
		fmt.Sprintf("%d:create:by-ws", wsItem.ID), fmt.Sprintf("%d:patch:by-ws2", wsItem.ID),
		fmt.Sprintf("%d:create:by-go", goItem.ID), fmt.Sprintf("%d:update:by-go2", goItem.ID),
	}
	got := codesOf(t, codes)
	for _, w := range want {
		if !got[w] {
			t.Errorf("AfterWrite did not record %q; recorded %v", w, got)
		}
	}
}

// A failing AfterWrite rolls the write back on every path: the row it
// followed is not stored, or not changed.
func TestHooks_AfterWriteFailureRollsBack(t *testing.T) {
	ctx := context.Background()
	items, _, _ := hooked(t)
	if err := items.Create(ctx, &Item{Name: "boom"}); err == nil {
		t.Fatal("Go create with a failing AfterWrite succeeded")
	}
	if rep := serve(t, items, "create", "", `{"name":"boom"}`); rep.Err == nil {
		t.Fatal("socket create with a failing AfterWrite succeeded")
	}
	all, err := items.List(ctx, streamapi.ListQuery{})
	if err != nil || len(all) != 0 {
		t.Fatalf("after two failed creates: %d items (%v), want none", len(all), err)
	}
	it := &Item{Name: "fine"}
	if err := items.Create(ctx, it); err != nil {
		t.Fatal(err)
	}
	it.Name = "boom"
	if err := items.Update(ctx, it); err == nil {
		t.Fatal("Go update with a failing AfterWrite succeeded")
	}
	stored, err := items.Get(ctx, it.ID)
	if err != nil || stored.Name != "fine" || stored.Owner != "by-fine" {
		t.Fatalf("after a failed update: %+v, %v; want it unchanged", stored, err)
	}
}

// A BeforeWrite error is the write's answer, as Validate's is.
func TestHooks_BeforeWriteRefuses(t *testing.T) {
	items := newItems(t, resource.Config[Item]{
		BeforeWrite: func(_ context.Context, it *Item, action string) error {
			if it.Flag {
				errs := streamapi.FieldErrors{}
				errs.Add("flag", "Not on "+action+".")
				return errs.Err()
			}
			return nil
		},
	})
	rep := serve(t, items, "create", "", `{"name":"a","flag":true}`)
	if got := fieldErrs(t, rep); got != `{"flag":["Not on create."]}` {
		t.Fatalf("create: %s", got)
	}
	if err := items.Create(context.Background(), &Item{Name: "a", Flag: true}); streamapi.ErrorCode(err) != streamapi.EINVALID {
		t.Fatalf("Go create: %v, want EINVALID", err)
	}
}

// ObjectPermission is asked with the stored object for retrieve, update,
// patch, delete and detail actions: refused is 401 for the anonymous and
// 403 for a user, and the object is left as it was; lists are the
// scope's business, not its.
func TestObjectPermission(t *testing.T) {
	var asked []string
	items := newItems(t, resource.Config[Item]{
		ObjectPermission: func(_ context.Context, u *streamapi.User, action string, it *Item) bool {
			asked = append(asked, action+":"+it.Name)
			return !it.Flag || (u != nil && u.ID == "admin")
		},
		DetailActions: []resource.DetailAction[Item]{{
			Name: "touch",
			Func: func(ctx context.Context, _ *streamapi.Request, it *Item) (any, int, error) {
				return it, 200, nil
			},
		}},
	})
	ctx := context.Background()
	open, locked := &Item{Name: "open"}, &Item{Name: "lockd", Flag: true}
	for _, it := range []*Item{open, locked} {
		if err := items.Create(ctx, it); err != nil {
			t.Fatal(err)
		}
	}
	as := func(user, action string, it *Item, data string) streamapi.Reply {
		req := &streamapi.Request{Stream: "items", Action: action, PK: json.RawMessage(fmt.Sprint(it.ID))}
		if user != "" {
			req.User = &streamapi.User{ID: user}
		}
		if data != "" {
			req.Data = json.RawMessage(data)
		}
		return items.Serve(ctx, req)
	}
	for _, c := range []struct{ action, data string }{
		{"retrieve", ""}, {"patch", `{"name":"x"}`}, {"update", `{"name":"x","flag":false}`}, {"touch", ""}, {"delete", ""},
	} {
		asked = nil
		if rep := as("", c.action, locked, c.data); streamapi.ErrorCode(rep.Err) != streamapi.EUNAUTHORIZED {
			t.Errorf("anonymous %s of a refused object: %v, want 401", c.action, rep.Err)
		}
		if rep := as("bob", c.action, locked, c.data); streamapi.ErrorCode(rep.Err) != streamapi.EFORBIDDEN {
			t.Errorf("bob's %s of a refused object: %v, want 403", c.action, rep.Err)
		}
		if want := c.action + ":lockd"; len(asked) != 2 || asked[0] != want || asked[1] != want {
			t.Errorf("%s: asked %v, want %s twice", c.action, asked, want)
		}
		if rep := as("bob", c.action, open, c.data); rep.Err != nil {
			t.Errorf("bob's %s of an allowed object: %v", c.action, rep.Err)
		}
		if c.action == "delete" {
			open = &Item{Name: "open"}
			if err := items.Create(ctx, open); err != nil {
				t.Fatal(err)
			}
		}
	}
	stored, err := items.Get(ctx, locked.ID)
	if err != nil || stored.Name != "lockd" {
		t.Fatalf("the refused object after every refused write: %+v, %v", stored, err)
	}
	if rep := as("admin", "patch", locked, `{"name":"adm"}`); rep.Err != nil {
		t.Fatalf("admin's patch: %v", rep.Err)
	}
	if rep := serve(t, items, "list", "", ""); rep.Err != nil || len(rep.Data.([]Item)) != 2 {
		t.Fatalf("list: %v %v, want both objects", rep.Data, rep.Err)
	}
}

// A required field the Defaults hook fills in may be left out of a create
// (DRF: a model field with a default is not required); one it leaves zero
// may not, and an update still needs it.
func TestDefaults_NotRequired(t *testing.T) {
	items := newItems(t, resource.Config[Item]{
		Defaults: func(_ context.Context, it *Item) { it.Name = "dflt" },
	})
	rep := serve(t, items, "create", "", `{}`)
	if rep.Err != nil {
		t.Fatalf("create without the defaulted field: %v", rep.Err)
	}
	it := rep.Data.(*Item)
	if it.Name != "dflt" {
		t.Fatalf("created %+v, want the default name", it)
	}
	if rep := serve(t, items, "create", "", `{"name":"mine"}`); rep.Err != nil || rep.Data.(*Item).Name != "mine" {
		t.Fatalf("create with the field: %+v", rep)
	}
	if got := fieldErrs(t, serve(t, items, "update", fmt.Sprint(it.ID), `{}`)); got != `{"name":["This field is required."]}` {
		t.Fatalf("update without it: %s", got)
	}
	plain := newItems(t, resource.Config[Item]{})
	if got := fieldErrs(t, serve(t, plain, "create", "", `{}`)); got != `{"name":["This field is required."]}` {
		t.Fatalf("create without a default: %s", got)
	}
}

// Labeled has a list whose elements have rules of their own.
type Labeled struct {
	bun.BaseModel `bun:"table:labeled" json:"-"`
	ID            int64          `bun:"id,pk,autoincrement" json:"id"`
	Labels        []string       `bun:"labels" json:"labels" validate:"max=3,dive,max=4"`
	Counts        map[string]int `bun:"counts" json:"counts" validate:"dive,lte=9"`
}

// A list element's rule answers under the element's index, in DRF's shape,
// worded for the element (characters), not the list (elements); the
// list's own rule keeps the list's wording; a map element goes under its key.
func TestItemErrors(t *testing.T) {
	db := openStore(t)
	if _, err := db.Bun().NewCreateTable().Model((*Labeled)(nil)).Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	r, err := resource.New(resource.Config[Labeled]{Stream: "labeled", Label: "test.labeled", Store: db})
	if err != nil {
		t.Fatal(err)
	}
	r.Init(streamapi.Defaults{})
	for data, want := range map[string]string{
		`{"labels":["ok","toolong","ok2","waytoolong"]}`: `{"labels":["Ensure this field has no more than 3 elements."]}`,
		`{"labels":["ok","toolong"]}`:                    `{"labels":{"1":["Ensure this field has no more than 4 characters."]}}`,
		`{"labels":["toolong","ok","longer"]}`:           `{"labels":{"0":["Ensure this field has no more than 4 characters."],"2":["Ensure this field has no more than 4 characters."]}}`,
		`{"labels":[],"counts":{"a":1,"b":10}}`:          `{"counts":{"b":["Ensure this value is less than or equal to 9."]}}`,
	} {
		rep := serve(t, r, "create", "", data)
		e, ok := rep.Err.(*streamapi.Error)
		if !ok {
			t.Fatalf("%s: %v (%T), want a validation error", data, rep.Err, rep.Err)
		}
		if got, _ := json.Marshal(e.FieldDetail()); string(got) != want {
			t.Errorf("%s:\n got %s\nwant %s", data, got, want)
		}
	}
	if rep := serve(t, r, "create", "", `{"labels":["a","bcde"],"counts":{"a":9}}`); rep.Err != nil {
		t.Fatalf("valid: %v", rep.Err)
	}
}

type move struct {
	Column   int64    `json:"column" validate:"required"`
	Position int      `json:"position" validate:"gte=0"`
	Labels   []string `json:"labels" validate:"dive,max=3"`
}

// Input decodes and checks a custom action's data with the resource's
// rules and messages: missing, mistyped and out-of-range values answer 400
// by field, element messages by index, and a valid input arrives typed.
func TestInput(t *testing.T) {
	var got *move
	items := newItems(t, resource.Config[Item]{
		DetailActions: []resource.DetailAction[Item]{{
			Name: "move",
			Func: func(ctx context.Context, req *streamapi.Request, it *Item) (any, int, error) {
				in, err := resource.Input[move](req)
				if err != nil {
					return nil, 0, err
				}
				got = in
				return in, 200, nil
			},
		}},
	})
	it := &Item{Name: "a"}
	if err := items.Create(context.Background(), it); err != nil {
		t.Fatal(err)
	}
	pk := fmt.Sprint(it.ID)
	for data, want := range map[string]string{
		`{}`:                                   `{"column":["This field is required."]}`,
		`{"column":"x","position":1}`:          `{"column":["A valid integer is required."]}`,
		`{"column":2,"position":-1}`:           `{"position":["Ensure this value is greater than or equal to 0."]}`,
		`{"column":2,"labels":["abc","abcd"]}`: `{"labels":{"1":["Ensure this field has no more than 3 characters."]}}`,
		`[1]`:                                  `{"non_field_errors":["Invalid data. Expected a dictionary, but got list."]}`,
	} {
		rep := serve(t, items, "move", pk, data)
		e, ok := rep.Err.(*streamapi.Error)
		if !ok || e.Code != streamapi.EINVALID {
			t.Fatalf("%s: %v, want a validation error", data, rep.Err)
		}
		if b, _ := json.Marshal(e.FieldDetail()); string(b) != want {
			t.Errorf("%s: got %s, want %s", data, b, want)
		}
	}
	if got != nil {
		t.Fatalf("the action ran with an invalid input: %+v", got)
	}
	if rep := serve(t, items, "move", pk, `{"column":"3","position":2}`); rep.Err != nil {
		t.Fatal(rep.Err)
	}
	if got == nil || got.Column != 3 || got.Position != 2 {
		t.Fatalf("input %+v, want column 3, position 2", got)
	}
}

// A Safe custom action runs in a read transaction: it reads the object
// and the database's snapshot, and a write from it fails; an unsafe one
// runs in the write transaction and may write.
func TestSafeActionsReadOnly(t *testing.T) {
	var items *resource.Resource[Item]
	write := func(ctx context.Context) (any, int, error) {
		if sqlstore.Tx(ctx) == nil {
			return nil, 0, errors.New("no transaction")
		}
		if err := items.Create(ctx, &Item{Name: "w"}); err != nil {
			return "refused", 200, nil
		}
		return "written", 200, nil
	}
	detail := func(ctx context.Context, _ *streamapi.Request, _ *Item) (any, int, error) { return write(ctx) }
	list := func(ctx context.Context, _ *streamapi.Request) (any, int, error) { return write(ctx) }
	items = newItems(t, resource.Config[Item]{
		DetailActions: []resource.DetailAction[Item]{
			{Name: "peek", Safe: true, Func: detail},
			{Name: "poke", Func: detail},
		},
		ListActions: []resource.ListAction{{Name: "count", Safe: true, Func: list}},
	})
	it := &Item{Name: "a"}
	if err := items.Create(context.Background(), it); err != nil {
		t.Fatal(err)
	}
	pk := fmt.Sprint(it.ID)
	for _, c := range []struct{ action, pk, want string }{
		{"peek", pk, "refused"}, {"count", "", "refused"}, {"poke", pk, "written"},
	} {
		rep := serve(t, items, c.action, c.pk, "")
		if rep.Err != nil || rep.Data != c.want {
			t.Errorf("%s: %v %v, want %q", c.action, rep.Data, rep.Err, c.want)
		}
	}
	if rep := serve(t, items, "peek", "999", ""); streamapi.ErrorCode(rep.Err) != streamapi.ENOTFOUND {
		t.Errorf("peek of a missing object: %v, want 404", rep.Err)
	}
}
