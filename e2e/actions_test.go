package e2e_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/streamapi/streamapi/client"
	"github.com/streamapi/streamapi/resource"
	"github.com/streamapi/streamapi/server"
)

func TestActions_CRUD(t *testing.T) {
	e := start(t)
	c := e.dial("")

	r := do(t, c, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "What is up?"}, RequestID: "some-guid"})
	r.want(t, 201, "[]")
	if got := compact(r.RequestID); got != `"some-guid"` {
		t.Errorf("request_id %s", got)
	}
	if r.Action != "create" || r.Stream != "questions" {
		t.Errorf("action %q stream %q", r.Action, r.Stream)
	}
	q := r.obj(t)
	id := r.id(t)
	if q["question_text"] != "What is up?" || q["pub_date"] == "" || id <= 0 {
		t.Fatalf("created %v", q)
	}

	r = do(t, c, "questions", client.Payload{Action: "retrieve", PK: id})
	r.want(t, 200, "[]")
	if !sameJSON(r.Data, []byte(mustJSON(q))) {
		t.Errorf("retrieve %s, want %s", r.Data, mustJSON(q))
	}
	// A pk sent as a string finds the same object.
	do(t, c, "questions", client.Payload{Action: "retrieve", PK: fmtID(id)}).want(t, 200, "[]")

	// update is full: the required field must be sent.
	r = do(t, c, "questions", client.Payload{Action: "update", PK: id, Data: map[string]any{"pub_date": "2026-01-02T03:04:05Z"}})
	r.want(t, 400, `[{"question_text":["This field is required."]}]`)
	r = do(t, c, "questions", client.Payload{Action: "update", PK: id, Data: map[string]any{"question_text": "Updated", "pub_date": "2026-01-02T03:04:05Z"}})
	r.want(t, 200, "[]")
	if m := r.obj(t); m["question_text"] != "Updated" || m["pub_date"] != "2026-01-02T03:04:05Z" {
		t.Errorf("update gave %v", m)
	}

	// patch is partial and keeps what it is not sent.
	r = do(t, c, "questions", client.Payload{Action: "patch", PK: id, Data: map[string]any{"question_text": "Patched"}})
	r.want(t, 200, "[]")
	if m := r.obj(t); m["question_text"] != "Patched" || m["pub_date"] != "2026-01-02T03:04:05Z" {
		t.Errorf("patch gave %v", m)
	}
	// Read-only and unknown keys are ignored.
	r = do(t, c, "questions", client.Payload{Action: "patch", PK: id, Data: map[string]any{"id": 999, "nope": 1}})
	r.want(t, 200, "[]")
	if r.id(t) != id {
		t.Errorf("patch changed the id to %d", r.id(t))
	}

	r = do(t, c, "questions", client.Payload{Action: "delete", PK: id})
	r.want(t, 200, "[]")
	if compact(r.Data) != "{}" {
		t.Errorf("delete data %s, want {}", r.Data)
	}
	do(t, c, "questions", client.Payload{Action: "retrieve", PK: id}).want(t, 404, `["Not found."]`)
	do(t, c, "questions", client.Payload{Action: "delete", PK: id}).want(t, 404, `["Not found."]`)
	do(t, c, "questions", client.Payload{Action: "update", PK: id, Data: map[string]any{"question_text": "x"}}).want(t, 404, `["Not found."]`)
}

func TestActions_RequestIDEchoedVerbatim(t *testing.T) {
	e := start(t)
	c := e.dial("")
	for _, rid := range []string{`"abc"`, `7`, `1.50`, `-3`, `"ü \"q\""`, `1e3`} {
		p := rawReply(t, c, `{"stream":"questions","payload":{"action":"list","request_id":`+rid+`}}`)
		if string(p["request_id"]) != rid {
			t.Errorf("request_id %s came back as %s", rid, p["request_id"])
		}
		if string(p["response_status"]) != "200" {
			t.Errorf("request_id %s: status %s", rid, p["response_status"])
		}
	}
	for _, frame := range []string{
		`{"stream":"questions","payload":{"action":"list"}}`,
		`{"stream":"questions","payload":{"action":"list","request_id":null}}`,
	} {
		p := rawReply(t, c, frame)
		if string(p["request_id"]) != "null" {
			t.Errorf("%s: request_id %s, want null", frame, p["request_id"])
		}
	}
}

func TestActions_ListPagination(t *testing.T) {
	e := start(t)
	c := e.dial("")
	for i := 0; i < 30; i++ {
		do(t, c, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": fmt.Sprint("q", i)}}).want(t, 201, "[]")
	}
	page := func(data any) []map[string]any {
		t.Helper()
		r := do(t, c, "questions", client.Payload{Action: "list", Data: data})
		r.want(t, 200, "[]")
		var objs []map[string]any
		if err := json.Unmarshal(r.Data, &objs); err != nil {
			t.Fatalf("list data %s: %v", r.Data, err)
		}
		return objs
	}
	// Default page size 25, in primary key order.
	p1 := page(nil)
	if len(p1) != 25 || p1[0]["question_text"] != "q0" || p1[24]["question_text"] != "q24" {
		t.Fatalf("page 1: %d objects", len(p1))
	}
	if got := page(map[string]any{"page": 1}); mustJSON(got) != mustJSON(p1) {
		t.Error("page 1 differs from the default page")
	}
	p2 := page(map[string]any{"page": 2})
	if len(p2) != 5 || p2[0]["question_text"] != "q25" {
		t.Fatalf("page 2: %v", p2)
	}
	if got := page(map[string]any{"page": "2"}); len(got) != 5 {
		t.Errorf("page \"2\": %d objects", len(got))
	}
	do(t, c, "questions", client.Payload{Action: "list", Data: map[string]any{"page": 3}}).want(t, 404, `["Invalid page."]`)
	do(t, c, "questions", client.Payload{Action: "list", Data: map[string]any{"page": 0}}).want(t, 404, `["Invalid page."]`)
	do(t, c, "questions", client.Payload{Action: "list", Data: map[string]any{"page": "x"}}).want(t, 404, `["Invalid page."]`)
	// A page whose offset would overflow, with and without the count.
	do(t, c, "questions", client.Payload{Action: "list", Data: map[string]any{"page": "368934881474191034"}}).want(t, 404, `["Invalid page."]`)
	do(t, c, "questions", client.Payload{Action: "list", Data: map[string]any{"page": "368934881474191034", "with_count": true}}).want(t, 404, `["Invalid page."]`)
	// An empty table has one empty first page.
	r := do(t, c, "choices", client.Payload{Action: "list"})
	r.want(t, 200, "[]")
	if compact(r.Data) != "[]" {
		t.Errorf("empty list %s", r.Data)
	}
	// The notes resource sets its own page size (2).
	u := e.dial("alice")
	for i := 0; i < 3; i++ {
		do(t, u, "notes", client.Payload{Action: "create", Data: map[string]any{"text": "n"}}).want(t, 201, "[]")
	}
	r = do(t, u, "notes", client.Payload{Action: "list"})
	var notes []Note
	if err := json.Unmarshal(r.Data, &notes); err != nil || len(notes) != 2 {
		t.Errorf("notes page 1: %s", r.Data)
	}
}

func TestActions_GlobalPageSize(t *testing.T) {
	e := start(t, func(s *server.Config, n *resource.Config[Note]) { s.PageSize = 3 })
	c := e.dial("")
	for i := 0; i < 4; i++ {
		do(t, c, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "q"}})
	}
	r := do(t, c, "questions", client.Payload{Action: "list"})
	if n := strings.Count(string(r.Data), `"id"`); n != 3 {
		t.Errorf("global page size 3: page holds %d", n)
	}
	r = do(t, c, "questions", client.Payload{Action: "list", Data: map[string]any{"page": 2}})
	if n := strings.Count(string(r.Data), `"id"`); n != 1 {
		t.Errorf("page 2 holds %d", n)
	}
}

func TestActions_Validation(t *testing.T) {
	e := start(t)
	c := e.dial("")
	cases := []struct {
		stream string
		data   any
		errs   string
	}{
		{"questions", map[string]any{}, `[{"question_text":["This field is required."]}]`},
		{"questions", nil, `[{"question_text":["This field is required."]}]`},
		{"questions", map[string]any{"question_text": "  "}, `[{"question_text":["This field may not be blank."]}]`},
		{"questions", map[string]any{"question_text": strings.Repeat("x", 201)}, `[{"question_text":["Ensure this field has no more than 200 characters."]}]`},
		{"questions", map[string]any{"question_text": 5}, `[{"question_text":["Not a valid string."]}]`},
		{"questions", map[string]any{"question_text": nil}, `[{"question_text":["This field may not be null."]}]`},
		{"questions", map[string]any{"question_text": "ok", "pub_date": "yesterday"}, `[{"pub_date":["Datetime has wrong format. Use one of these formats instead: YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."]}]`},
		{"questions", []int{1}, `[{"non_field_errors":["Invalid data. Expected a dictionary, but got list."]}]`},
		{"choices", map[string]any{"choice_text": "c"}, `[{"question":["This field is required."]}]`},
		{"choices", map[string]any{"question": 424242, "choice_text": "c"}, `[{"question":["Invalid pk \"424242\" - object does not exist."]}]`},
		{"choices", map[string]any{"question": "abc", "choice_text": "c"}, `[{"question":["A valid integer is required."]}]`},
		{"choices", map[string]any{"question": 1, "choice_text": "c", "votes": -1}, `[{"votes":["Ensure this value is greater than or equal to 0."]}]`},
	}
	// One real question, so that question 1 exists for the votes case.
	do(t, c, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "q"}}).want(t, 201, "[]")
	for _, tc := range cases {
		do(t, c, tc.stream, client.Payload{Action: "create", Data: tc.data}).want(t, 400, tc.errs)
	}
	// Several fields at once, keyed by JSON name.
	r := do(t, c, "choices", client.Payload{Action: "create", Data: map[string]any{"votes": "x"}})
	r.want(t, 400, `[{"choice_text":["This field is required."],"question":["This field is required."],"votes":["A valid integer is required."]}]`)
	// An integer sent as a string is accepted, as DRF does.
	r = do(t, c, "choices", client.Payload{Action: "create", Data: map[string]any{"question": "1", "choice_text": "c", "votes": "4"}})
	r.want(t, 201, "[]")
	if m := r.obj(t); m["question"] != 1.0 || m["votes"] != 4.0 {
		t.Errorf("created %v", m)
	}
}

func TestActions_CustomActions(t *testing.T) {
	e := start(t)
	c := e.dial("")
	q := do(t, c, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "q"}}).id(t)
	ch := do(t, c, "choices", client.Payload{Action: "create", Data: map[string]any{"question": q, "choice_text": "yes"}})
	chID := ch.id(t)

	// Detail action with a wire name: vote.
	for want := 1; want <= 3; want++ {
		r := do(t, c, "choices", client.Payload{Action: "vote", PK: chID})
		r.want(t, 200, "[]")
		if got := r.obj(t)["votes"]; got != float64(want) {
			t.Fatalf("votes %v, want %d", got, want)
		}
	}
	do(t, c, "choices", client.Payload{Action: "vote", PK: 999}).want(t, 404, `["Not found."]`)
	do(t, c, "choices", client.Payload{Action: "vote"}).want(t, 404, `["Not found."]`)
	do(t, c, "choices", client.Payload{Action: "vote", PK: []int{1}}).want(t, 404, `["Not found."]`)
	// The Go name is not a wire name when a wire name is given.
	do(t, c, "choices", client.Payload{Action: "Vote", PK: chID}).want(t, 400, `["Invalid Action"]`)

	// Detail action without a wire name (Go name on the wire), its own
	// status, and errors in the usual format.
	alice := e.dial("alice")
	n := do(t, alice, "notes", client.Payload{Action: "create", Data: map[string]any{"text": "hi"}})
	n.want(t, 201, "[]")
	if n.obj(t)["owner"] != "alice" {
		t.Errorf("owner %v", n.obj(t)["owner"])
	}
	r := do(t, alice, "notes", client.Payload{Action: "Shout", PK: n.id(t)})
	r.want(t, 202, "[]")
	if r.obj(t)["text"] != "HI" {
		t.Errorf("shout %s", r.Data)
	}
	bob := e.dial("bob")
	do(t, bob, "notes", client.Payload{Action: "Shout", PK: n.id(t)}).want(t, 403, `["Permission Denied"]`)

	// List action.
	r = do(t, c, "notes", client.Payload{Action: "count"})
	r.want(t, 200, "[]")
	if compact(r.Data) != `{"count":1}` {
		t.Errorf("count %s", r.Data)
	}
}

func TestActions_CustomActionWritesAreAtomic(t *testing.T) {
	e := start(t)
	c := e.dial("")
	q := do(t, c, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "q"}}).id(t)
	chID := do(t, c, "choices", client.Payload{Action: "create", Data: map[string]any{"question": q, "choice_text": "yes"}}).id(t)
	const clients, votes = 4, 25
	done := make(chan error, clients)
	for i := 0; i < clients; i++ {
		v := e.dial("")
		go func() {
			for j := 0; j < votes; j++ {
				rep, err := v.Request(tctx(t), "choices", client.Payload{Action: "vote", PK: chID})
				if err == nil {
					err = rep.Err()
				}
				if err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for i := 0; i < clients; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	r := do(t, c, "choices", client.Payload{Action: "retrieve", PK: chID})
	if got := r.obj(t)["votes"]; got != float64(clients*votes) {
		t.Fatalf("votes %v after %d concurrent votes", got, clients*votes)
	}
}

func TestActions_ReadOnlyAndSubset(t *testing.T) {
	e := start(t, func(_ *server.Config, n *resource.Config[Note]) { n.Actions = resource.ReadOnly })
	alice := e.dial("alice")
	do(t, alice, "notes", client.Payload{Action: "create", Data: map[string]any{"text": "x"}}).want(t, 400, `["Invalid Action"]`)
	do(t, alice, "notes", client.Payload{Action: "delete", PK: 1}).want(t, 400, `["Invalid Action"]`)
	do(t, alice, "notes", client.Payload{Action: "list"}).want(t, 200, "[]")
	// Custom actions stay offered.
	do(t, alice, "notes", client.Payload{Action: "count"}).want(t, 200, "[]")

	e = start(t, func(_ *server.Config, n *resource.Config[Note]) {
		n.Actions = []string{"create", "list"}
	})
	alice = e.dial("alice")
	do(t, alice, "notes", client.Payload{Action: "create", Data: map[string]any{"text": "x"}}).want(t, 201, "[]")
	do(t, alice, "notes", client.Payload{Action: "retrieve", PK: 1}).want(t, 400, `["Invalid Action"]`)
	do(t, alice, "notes", client.Payload{Action: "subscribe", Data: map[string]any{"action": "create"}}).want(t, 400, `["Invalid Action"]`)
}
