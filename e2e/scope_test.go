package e2e_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/client"
	"github.com/streamapi/streamapi/resource"
	"github.com/streamapi/streamapi/server"
)

// withScope gives notes a scope: a user sees the notes it owns and every
// note whose text starts with "pub"; anonymous users see the latter only.
func withScope(_ *server.Config, n *resource.Config[Note]) {
	n.Scope = func(u *streamapi.User) resource.Q {
		public := resource.Where("text__startswith", "pub")
		if !u.Authenticated() {
			return public
		}
		return resource.Or(resource.Where("owner", u.ID), public)
	}
}

// TestScope_Requests: an object outside the user's scope is 404 for every
// action, on both surfaces, and lists and counts leave it out.
func TestScope_Requests(t *testing.T) {
	e := start(t, withScope)
	alice := e.dial("alice")
	secret := do(t, alice, "notes", client.Payload{Action: "create", Data: map[string]any{"text": "secret"}})
	secret.want(t, 201, "[]")
	public := do(t, alice, "notes", client.Payload{Action: "create", Data: map[string]any{"text": "pub hello"}})
	public.want(t, 201, "[]")
	s, p := secret.id(t), public.id(t)

	bob := e.dial("bob")
	notFound := `["Not found."]`
	for _, pl := range []client.Payload{
		{Action: "retrieve", PK: s},
		{Action: "patch", PK: s, Data: map[string]any{"text": "mine now"}},
		{Action: "update", PK: s, Data: map[string]any{"text": "mine now"}},
		{Action: "delete", PK: s},
		{Action: "Shout", PK: s},
		{Action: "subscribe_instance", PK: s},
	} {
		do(t, bob, "notes", pl).want(t, 404, notFound)
	}
	do(t, bob, "notes", client.Payload{Action: "retrieve", PK: p}).want(t, 200, "[]")
	r := do(t, bob, "notes", client.Payload{Action: "list", Data: map[string]any{"with_count": true}})
	if compact(r.Data) != fmt.Sprintf(`{"count":1,"next":null,"previous":null,"results":[{"id":%d,"text":"pub hello","owner":"alice"}]}`, p) {
		t.Errorf("bob's list: %s", r.Data)
	}
	r = do(t, alice, "notes", client.Payload{Action: "list"})
	if ids(t, compact(r.Data)) != fmt.Sprintf("%d,%d", s, p) {
		t.Errorf("alice's list: %s", r.Data)
	}
	// REST, the same.
	e.call(t, "GET", fmt.Sprintf("/notes/%d/?user=bob", s), "").want(t, 404, `{"detail":"Not found."}`)
	e.call(t, "PATCH", fmt.Sprintf("/notes/%d/?user=bob", s), `{"text":"x"}`).want(t, 404, `{"detail":"Not found."}`)
	e.call(t, "DELETE", fmt.Sprintf("/notes/%d/?user=bob", s), "").want(t, 404, `{"detail":"Not found."}`)
	e.call(t, "GET", "/notes/?user=bob", "").want(t, 200, fmt.Sprintf(`{"count":1,"next":null,"previous":null,"results":[{"id":%d,"text":"pub hello","owner":"alice"}]}`, p))
	e.call(t, "GET", "/notes/", "").want(t, 200, fmt.Sprintf(`{"count":1,"next":null,"previous":null,"results":[{"id":%d,"text":"pub hello","owner":"alice"}]}`, p))
	e.call(t, "GET", fmt.Sprintf("/notes/%d/?user=alice", s), "").wantStatus(t, 200)
	// The secret note is untouched.
	e.call(t, "GET", fmt.Sprintf("/notes/%d/?user=alice", s), "").want(t, 200, fmt.Sprintf(`{"id":%d,"text":"secret","owner":"alice"}`, s))
}

// TestScope_Events: a subscriber never receives an event about an object
// it may not see, and visibility changes arrive as the original's group
// logic has them: leaving the scope is a delete to delete subscriptions,
// entering it a create to create subscriptions, staying an update.
func TestScope_Events(t *testing.T) {
	e := start(t, withScope)
	alice := e.dial("alice")
	create := func(text string) int64 {
		r := do(t, alice, "notes", client.Payload{Action: "create", Data: map[string]any{"text": text}})
		r.want(t, 201, "[]")
		return r.id(t)
	}
	patch := func(id int64, text string) {
		do(t, alice, "notes", client.Payload{Action: "patch", PK: id, Data: map[string]any{"text": text}}).want(t, 200, "[]")
	}
	p := create("pub one")

	bob := e.dial("bob")
	creates := mustSubscribe(t, bob, "notes", "create", nil)
	updates := mustSubscribe(t, bob, "notes", "update", nil)
	deletes := mustSubscribe(t, bob, "notes", "delete", nil)
	updP := mustSubscribe(t, bob, "notes", "update", p)
	delP := mustSubscribe(t, bob, "notes", "delete", p)
	inst, err := bob.SubscribeInstance(tctx(t), "notes", p)
	if err != nil {
		t.Fatal(err)
	}
	// A marker: a public create that every later check can wait behind.
	marker := func() {
		t.Helper()
		id := create("pub marker")
		if ev := next(t, creates); compact(ev.PK) != fmtID(id) {
			t.Fatalf("marker: %s", ev.Raw)
		}
	}
	quiet := func(why string) {
		t.Helper()
		marker()
		for _, s := range []*client.Subscription{creates, updates, deletes, updP, delP, inst} {
			none(t, s, why)
		}
	}

	// 1. A note bob may not see: nothing, on any subscription.
	s := create("secret")
	patch(s, "secret, edited")
	quiet("a secret note created and edited")

	// 2. An update that stays visible: an update.
	patch(p, "pub two")
	if ev := next(t, updates); ev.Action != "update" || compact(ev.PK) != fmtID(p) {
		t.Fatalf("update any: %s", ev.Raw)
	}
	if ev := next(t, updP); ev.Action != "update" {
		t.Fatalf("update pk: %s", ev.Raw)
	}
	if ev := next(t, inst); ev.Action != "update" {
		t.Fatalf("instance: %s", ev.Raw)
	}
	quiet("after a visible update")

	// 3. An update that takes the note out of bob's view: a delete, to the
	// delete subscriptions (any, pk, instance), carrying the note as bob
	// last saw it; none to the update subscriptions.
	patch(p, "private now")
	for name, sub := range map[string]*client.Subscription{"delete any": deletes, "delete pk": delP, "instance": inst} {
		ev := next(t, sub)
		if ev.Action != "delete" {
			t.Fatalf("%s: %s, want a delete", name, ev.Raw)
		}
		if name != "instance" && !jsonHas(ev.Data, "text", "pub two") {
			t.Errorf("%s: data %s, want the note as bob last saw it", name, ev.Data)
		}
	}
	quiet("after the note left bob's view")
	patch(p, "private, edited")
	quiet("an edit bob may not see")

	// 4. An update that brings a note into view: a create, to the create
	// subscriptions only.
	patch(s, "pub at last")
	if ev := next(t, creates); ev.Action != "create" || compact(ev.PK) != fmtID(s) || !jsonHas(ev.Data, "text", "pub at last") {
		t.Fatalf("entering: %s", ev.Raw)
	}
	quiet("after the note entered bob's view")

	// 5. Deletes: of a visible note, a delete; of an invisible one, nothing.
	do(t, alice, "notes", client.Payload{Action: "delete", PK: s}).want(t, 200, "[]")
	if ev := next(t, deletes); ev.Action != "delete" || compact(ev.PK) != fmtID(s) {
		t.Fatalf("delete of a visible note: %s", ev.Raw)
	}
	do(t, alice, "notes", client.Payload{Action: "delete", PK: p}).want(t, 200, "[]")
	quiet("the delete of a note bob no longer sees")

	// Alice, the owner, saw everything as plain creates, updates, deletes.
	// A resume replays the same transitions: bob's creates since 0 are
	// the public note, the markers and the note that entered his view.
	b2 := e.dial("bob")
	sub, err := b2.SubscribeSince(tctx(t), "notes", "create", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := 0; i < 8; i++ {
		ev := next(t, sub)
		var n Note
		_ = json.Unmarshal(ev.Data, &n)
		got = append(got, n.Text)
	}
	want := `[pub one pub marker pub marker pub marker pub marker pub at last pub marker pub marker]`
	if fmt.Sprint(got) != want {
		t.Fatalf("bob's replayed creates %v, want %s", got, want)
	}
	none(t, sub, "after the replay")
}

func jsonHas(data json.RawMessage, key, value string) bool {
	var m map[string]any
	return json.Unmarshal(data, &m) == nil && m[key] == value
}
