package e2e_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/streamapi/streamapi/client"
	"github.com/streamapi/streamapi/examples/polls"
)

// eventPayloadKeys are the keys of a Channels API event's payload: the
// original's, and seq, which original clients ignore.
var eventPayloadKeys = []string{"action", "data", "model", "pk", "seq"}

func checkEvent(t *testing.T, ev client.Event, action string, id int64, data map[string]any) {
	t.Helper()
	keys := payloadKeys(t, ev.Raw)
	if mustJSON(keys) != mustJSON(eventPayloadKeys) {
		t.Errorf("event payload keys %v, want %v", keys, eventPayloadKeys)
	}
	if ev.Stream != "questions" || ev.Action != action || ev.Model != "polls.question" || compact(ev.PK) != fmtID(id) {
		t.Fatalf("event %s, want %s of questions %d", ev.Raw, action, id)
	}
	if data != nil && !sameJSON(ev.Data, []byte(mustJSON(data))) {
		t.Errorf("event data %s, want %s", ev.Data, mustJSON(data))
	}
}

func TestSubscribe_Replies(t *testing.T) {
	e := start(t)
	c := e.dial("")
	r := do(t, c, "questions", client.Payload{Action: "subscribe", Data: map[string]any{"action": "create"}})
	r.want(t, 200, "[]")
	if compact(r.Data) != `{"action":"create","seq":0}` || r.Action != "subscribe" {
		t.Errorf("subscribe reply %s", r.Raw)
	}
	r = do(t, c, "questions", client.Payload{Action: "subscribe", Data: map[string]any{"action": "update", "pk": "1"}})
	r.want(t, 200, "[]")
	if compact(r.Data) != `{"action":"update","pk":1,"seq":0}` {
		t.Errorf("subscribe with data.pk %s", r.Data)
	}
	r = do(t, c, "questions", client.Payload{Action: "subscribe", PK: 2, Data: map[string]any{"action": "delete"}})
	if compact(r.Data) != `{"action":"delete","pk":2,"seq":0}` {
		t.Errorf("subscribe with payload.pk %s", r.Data)
	}
	do(t, c, "questions", client.Payload{Action: "subscribe", PK: "x", Data: map[string]any{"action": "delete"}}).want(t, 404, `["Not found."]`)
	do(t, c, "questions", client.Payload{Action: "subscribe", PK: 1, Data: map[string]any{"action": "create"}}).want(t, 400, `[{"pk":["A create subscription cannot name a pk."]}]`)
	r = do(t, c, "questions", client.Payload{Action: "unsubscribe", Data: map[string]any{"action": "update", "pk": 1}})
	r.want(t, 200, "[]")
	if compact(r.Data) != `{"action":"update","pk":1}` || r.Action != "unsubscribe" {
		t.Errorf("unsubscribe reply %s", r.Raw)
	}
}

func TestSubscribe_FiveKinds(t *testing.T) {
	e := start(t)
	writer := e.dial("")
	create := func(text string) reply {
		r := do(t, writer, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": text}})
		r.want(t, 201, "[]")
		return r
	}
	q1, q2 := create("one"), create("two")
	id1, id2 := q1.id(t), q2.id(t)

	c := e.dial("")
	ctx := tctx(t)
	sub := func(action string, pk any) *client.Subscription {
		s, err := c.Subscribe(ctx, "questions", action, pk)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	creates := sub("create", nil)
	updAny := sub("update", nil)
	upd1 := sub("update", id1)
	delAny := sub("delete", nil)
	del1 := sub("delete", id1)

	// create
	q3 := create("three")
	checkEvent(t, next(t, creates), "create", q3.id(t), q3.obj(t))

	// update of q2: "update any" only.
	u2 := do(t, writer, "questions", client.Payload{Action: "patch", PK: id2, Data: map[string]any{"question_text": "two!"}})
	ev := next(t, updAny)
	checkEvent(t, ev, "update", id2, u2.obj(t))
	// update of q1: both "update any" and "update pk 1".
	u1 := do(t, writer, "questions", client.Payload{Action: "patch", PK: id1, Data: map[string]any{"question_text": "one!"}})
	checkEvent(t, next(t, updAny), "update", id1, u1.obj(t))
	checkEvent(t, next(t, upd1), "update", id1, u1.obj(t))
	// The pk-scoped subscription did not see q2's update: its first event
	// was q1's, which came after.
	none(t, upd1, "update pk 1 after q2's update")

	// delete of q2: "delete any" only; of q1: both. The data is the object
	// as it was.
	do(t, writer, "questions", client.Payload{Action: "delete", PK: id2}).want(t, 200, "[]")
	checkEvent(t, next(t, delAny), "delete", id2, u2.obj(t))
	do(t, writer, "questions", client.Payload{Action: "delete", PK: id1}).want(t, 200, "[]")
	checkEvent(t, next(t, delAny), "delete", id1, u1.obj(t))
	checkEvent(t, next(t, del1), "delete", id1, u1.obj(t))
	none(t, del1, "delete pk 1")

	// No cross-talk between kinds.
	none(t, creates, "creates after updates and deletes")
	none(t, upd1, "update subscription after deletes")

	// Exactly one frame per change on the wire, however many subscriptions
	// match: the subscriber's unmatched channel stays empty and each
	// subscription got exactly its events above.
	select {
	case b := <-c.Unmatched():
		t.Errorf("stray frame %s", b)
	default:
	}
}

func TestSubscribe_OneEventPerChangePerConnection(t *testing.T) {
	e := start(t)
	c := e.dial("")
	// Raw frames, to count what the server sends rather than what the
	// client library delivers: subscribe twice to the same thing, and to
	// "update any" and "update pk" together.
	q := do(t, c, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "q"}}).id(t)
	for _, data := range []map[string]any{{"action": "update"}, {"action": "update"}, {"action": "update", "pk": q}, {"action": "delete"}} {
		p := rawReply(t, c, `{"stream":"questions","payload":{"action":"subscribe","data":`+mustJSON(data)+`}}`)
		if string(p["response_status"]) != "200" {
			t.Fatalf("subscribe: %v", p)
		}
	}
	w := e.dial("")
	for i := 0; i < 3; i++ {
		do(t, w, "questions", client.Payload{Action: "patch", PK: q, Data: map[string]any{"question_text": "v" + fmtID(int64(i))}})
	}
	// Then a create, to which this connection is not subscribed, and a
	// delete, to which it is: three update frames, then the delete.
	do(t, w, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "unheard"}})
	do(t, w, "questions", client.Payload{Action: "delete", PK: q})
	var actions []string
	for len(actions) < 4 {
		select {
		case b := <-c.Unmatched():
			var f struct {
				Payload struct {
					Action string `json:"action"`
					Data   struct {
						Text string `json:"question_text"`
					} `json:"data"`
				} `json:"payload"`
			}
			_ = json.Unmarshal(b, &f)
			actions = append(actions, f.Payload.Action+":"+f.Payload.Data.Text)
		case <-c.Done():
			t.Fatal("closed")
		}
	}
	if got := mustJSON(actions); got != `["update:v0","update:v1","update:v2","delete:v2"]` {
		t.Fatalf("frames %s", got)
	}
}

func TestSubscribe_Unsubscribe(t *testing.T) {
	e := start(t)
	w, c := e.dial(""), e.dial("")
	ctx := tctx(t)
	q := do(t, w, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "q"}}).id(t)
	upd, err := c.Subscribe(ctx, "questions", "update", q)
	if err != nil {
		t.Fatal(err)
	}
	marker, err := c.Subscribe(ctx, "questions", "create", nil)
	if err != nil {
		t.Fatal(err)
	}
	do(t, w, "questions", client.Payload{Action: "patch", PK: q, Data: map[string]any{"question_text": "a"}})
	next(t, upd)
	// Unsubscribe by raw request, keeping the client's subscription open to
	// see anything the server still sends.
	r := do(t, c, "questions", client.Payload{Action: "unsubscribe", Data: map[string]any{"action": "update", "pk": q}})
	r.want(t, 200, "[]")
	do(t, w, "questions", client.Payload{Action: "patch", PK: q, Data: map[string]any{"question_text": "b"}})
	do(t, w, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "marker"}})
	next(t, marker)
	none(t, upd, "after unsubscribe")
	// Unsubscribing from what one is not subscribed to is harmless.
	do(t, c, "questions", client.Payload{Action: "unsubscribe", Data: map[string]any{"action": "delete"}}).want(t, 200, "[]")
}

func TestSubscribe_ClosingDropsSubscriptions(t *testing.T) {
	e := start(t)
	c := e.dial("")
	if _, err := c.Subscribe(tctx(t), "questions", "create", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SubscribeInstance(tctx(t), "questions", 1); err == nil {
		t.Fatal("subscribe_instance to a missing object succeeded")
	}
	if got := e.srv.Subscribers(); got != 1 {
		t.Fatalf("subscribers %d, want 1", got)
	}
	c.Close()
	eventually(t, "subscriptions dropped", func() bool { return e.srv.Subscribers() == 0 && e.srv.Connections() == 0 })
	// And publishing still works for the others.
	w := e.dial("")
	s, err := w.Subscribe(tctx(t), "questions", "create", nil)
	if err != nil {
		t.Fatal(err)
	}
	do(t, w, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "q"}})
	next(t, s)
}

// Events fire for every write through a resource, whatever made it, and
// only after commit.
func TestSubscribe_EveryWriterOnlyCommitted(t *testing.T) {
	e := start(t)
	c := e.dial("")
	ctx := tctx(t)
	creates, err := c.Subscribe(ctx, "questions", "create", nil)
	if err != nil {
		t.Fatal(err)
	}
	choiceUpd, err := c.Subscribe(ctx, "choices", "update", nil)
	if err != nil {
		t.Fatal(err)
	}
	choiceDel, err := c.Subscribe(ctx, "choices", "delete", nil)
	if err != nil {
		t.Fatal(err)
	}

	// Go code, through the typed API.
	q := &polls.Question{QuestionText: "from Go"}
	if err := e.app.Questions.Create(ctx, q); err != nil {
		t.Fatal(err)
	}
	ev := next(t, creates)
	if compact(ev.PK) != fmtID(q.ID) {
		t.Fatalf("Go create event %s", ev.Raw)
	}

	// A rolled-back transaction: nothing.
	err = e.db.Tx(ctx, func(ctx context.Context) error {
		if err := e.app.Questions.Create(ctx, &polls.Question{QuestionText: "rolled back"}); err != nil {
			return err
		}
		return errBoom
	})
	if err != errBoom {
		t.Fatalf("Tx: %v", err)
	}
	// A failed validation: nothing.
	if err := e.app.Questions.Create(ctx, &polls.Question{}); err == nil {
		t.Fatal("created an invalid question")
	}
	q2 := &polls.Question{QuestionText: "after"}
	if err := e.app.Questions.Create(ctx, q2); err != nil {
		t.Fatal(err)
	}
	ev = next(t, creates)
	if compact(ev.PK) != fmtID(q2.ID) {
		t.Fatalf("after a rollback the next event is %s, want the create of %d", ev.Raw, q2.ID)
	}

	// A custom action over the socket (vote) reaches update subscribers.
	w := e.dial("")
	ch := do(t, w, "choices", client.Payload{Action: "create", Data: map[string]any{"question": q.ID, "choice_text": "yes"}})
	do(t, w, "choices", client.Payload{Action: "vote", PK: ch.id(t)}).want(t, 200, "[]")
	ev = next(t, choiceUpd)
	var got polls.Choice
	if err := json.Unmarshal(ev.Data, &got); err != nil || got.Votes != 1 || ev.Model != "polls.choice" {
		t.Fatalf("vote event %s", ev.Raw)
	}

	// Deleting a question deletes its choices through their resource, in
	// one transaction: their subscribers hear of it.
	if err := e.app.Questions.Delete(ctx, q.ID); err != nil {
		t.Fatal(err)
	}
	ev = next(t, choiceDel)
	if compact(ev.PK) != fmtID(ch.id(t)) {
		t.Fatalf("cascade delete event %s", ev.Raw)
	}
}

func TestSubscribe_Instance(t *testing.T) {
	e := start(t)
	w, c := e.dial(""), e.dial("")
	q := do(t, w, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "q"}})
	other := do(t, w, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "other"}}).id(t)
	id := q.id(t)

	// The raw exchange, as dcrf-client does it.
	p := rawReply(t, c, `{"stream":"questions","payload":{"action":"subscribe_instance","pk":`+fmtID(id)+`,"request_id":"sub-1"}}`)
	if string(p["response_status"]) != "201" || string(p["request_id"]) != `"sub-1"` || string(p["data"]) != "null" {
		t.Fatalf("subscribe_instance reply %v", p)
	}
	// A second subscription with another request_id gets its own events.
	p = rawReply(t, c, `{"stream":"questions","payload":{"action":"subscribe_instance","pk":"`+fmtID(id)+`","request_id":7}}`)
	if string(p["response_status"]) != "201" {
		t.Fatal(p)
	}
	p = rawReply(t, c, `{"stream":"questions","payload":{"action":"subscribe_instance","pk":424242,"request_id":"x"}}`)
	if string(p["response_status"]) != "404" || compact(p["errors"]) != `["Not found."]` {
		t.Fatalf("subscribe_instance to a missing object: %v", p)
	}
	p = rawReply(t, c, `{"stream":"questions","payload":{"action":"subscribe_instance","request_id":"x"}}`)
	if string(p["response_status"]) != "404" {
		t.Fatalf("subscribe_instance without pk: %v", p)
	}

	do(t, w, "questions", client.Payload{Action: "patch", PK: other, Data: map[string]any{"question_text": "not mine"}})
	u := do(t, w, "questions", client.Payload{Action: "patch", PK: id, Data: map[string]any{"question_text": "changed"}})
	want := map[string]string{
		`"sub-1"`: `{"stream":"questions","payload":{"action":"update","data":` + compact(u.Data) + `,"errors":[],"response_status":200,"seq":4,"request_id":"sub-1"}}`,
		`7`:       `{"stream":"questions","payload":{"action":"update","data":` + compact(u.Data) + `,"errors":[],"response_status":200,"seq":4,"request_id":7}}`,
	}
	for range 2 {
		b := <-c.Unmatched()
		var f struct {
			Payload struct {
				RequestID json.RawMessage `json:"request_id"`
			} `json:"payload"`
		}
		_ = json.Unmarshal(b, &f)
		if string(b) != want[string(f.Payload.RequestID)] {
			t.Errorf("instance event\n got %s\nwant %s", b, want[string(f.Payload.RequestID)])
		}
		delete(want, string(f.Payload.RequestID))
	}

	do(t, w, "questions", client.Payload{Action: "delete", PK: id})
	for range 2 {
		b := string(<-c.Unmatched())
		if b != `{"stream":"questions","payload":{"action":"delete","data":{"pk":`+fmtID(id)+`},"errors":[],"response_status":200,"seq":5,"request_id":"sub-1"}}` &&
			b != `{"stream":"questions","payload":{"action":"delete","data":{"pk":`+fmtID(id)+`},"errors":[],"response_status":200,"seq":5,"request_id":7}}` {
			t.Errorf("instance delete event %s", b)
		}
	}

	// unsubscribe_instance: 204, then nothing.
	q = do(t, w, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "again"}})
	id = q.id(t)
	p = rawReply(t, c, `{"stream":"questions","payload":{"action":"subscribe_instance","pk":`+fmtID(id)+`,"request_id":"s2"}}`)
	if string(p["response_status"]) != "201" {
		t.Fatal(p)
	}
	p = rawReply(t, c, `{"stream":"questions","payload":{"action":"unsubscribe_instance","pk":`+fmtID(id)+`,"request_id":"u2"}}`)
	if string(p["response_status"]) != "204" || string(p["request_id"]) != `"u2"` {
		t.Fatal(p)
	}
	do(t, w, "questions", client.Payload{Action: "patch", PK: id, Data: map[string]any{"question_text": "unheard"}})
	// A marker through a subscription this connection does hold.
	p = rawReply(t, c, `{"stream":"questions","payload":{"action":"subscribe","data":{"action":"create"}}}`)
	if string(p["response_status"]) != "200" {
		t.Fatal(p)
	}
	do(t, w, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "marker"}})
	var f struct {
		Payload struct {
			Action string `json:"action"`
			Model  string `json:"model"`
		} `json:"payload"`
	}
	_ = json.Unmarshal(<-c.Unmatched(), &f)
	if f.Payload.Action != "create" || f.Payload.Model != "polls.question" {
		t.Fatalf("after unsubscribe_instance the next frame is %+v, want the marker create", f)
	}
}

// The Go client matches events of a subscription made with the pk as a
// string ("7"), though the server normalises it to 7.
func TestClient_SubscribeWithStringPK(t *testing.T) {
	e := start(t)
	w, c := e.dial(""), e.dial("")
	id := do(t, w, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "q"}}).id(t)
	sub, err := c.Subscribe(tctx(t), "questions", "update", fmtID(id))
	if err != nil {
		t.Fatal(err)
	}
	do(t, w, "questions", client.Payload{Action: "patch", PK: id, Data: map[string]any{"question_text": "r"}})
	if ev := next(t, sub); compact(ev.PK) != fmtID(id) {
		t.Fatalf("event %s", ev.Raw)
	}
}
