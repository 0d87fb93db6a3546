package e2e_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/streamapi/streamapi/client"
	"github.com/streamapi/streamapi/resource"
	"github.com/streamapi/streamapi/server"
)

// Live lists (docs/protocol.md §6.2).

// nextLive returns the live list's next event.
func nextLive(t *testing.T, l *client.LiveList) client.Event {
	t.Helper()
	select {
	case ev, ok := <-l.C:
		if !ok {
			t.Fatal("live list closed")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no live list event within 5 s")
	}
	panic("unreachable")
}

// liveEv is an event as the tests expect it: action, pk, index (-1:
// none), count (-1: none).
type liveEv struct {
	action string
	pk     int64
	index  int
	count  int
}

func (e liveEv) String() string {
	return fmt.Sprintf("%s pk=%d index=%d count=%d", e.action, e.pk, e.index, e.count)
}

func asLiveEv(t *testing.T, ev client.Event) liveEv {
	t.Helper()
	out := liveEv{action: ev.Action, index: -1, count: -1}
	if string(ev.PK) != "null" {
		if err := json.Unmarshal(ev.PK, &out.pk); err != nil {
			t.Fatalf("pk of %s: %v", ev.Raw, err)
		}
	}
	if ev.Index != nil {
		out.index = *ev.Index
	}
	if ev.Count != nil {
		out.count = *ev.Count
	}
	return out
}

// expectLive reads len(want) events and checks them, and that they carry
// one seq.
func expectLive(t *testing.T, l *client.LiveList, want ...liveEv) []client.Event {
	t.Helper()
	var got []client.Event
	for i, w := range want {
		ev := nextLive(t, l)
		got = append(got, ev)
		if g := asLiveEv(t, ev); g != w {
			t.Fatalf("event %d: got %v (%s), want %v", i, g, ev.Raw, w)
		}
		if ev.Seq != got[0].Seq {
			t.Fatalf("event %d: seq %d, the change's first event had %d", i, ev.Seq, got[0].Seq)
		}
	}
	return got
}

// freshList lists query (with_count on) and returns its objects and
// count.
func freshList(t *testing.T, c *client.Client, stream string, query map[string]any) ([]json.RawMessage, int) {
	t.Helper()
	q := map[string]any{}
	for k, v := range query {
		q[k] = v
	}
	q["with_count"] = true
	rep := do(t, c, stream, client.Payload{Action: "list", Data: q})
	if rep.Status != 200 {
		t.Fatalf("list %v: %d %s", query, rep.Status, rep.Errors)
	}
	var page struct {
		Count   int               `json:"count"`
		Results []json.RawMessage `json:"results"`
	}
	if err := rep.Decode(&page); err != nil {
		t.Fatal(err)
	}
	return page.Results, page.Count
}

// sameAsFresh checks that the live list holds what a fresh list of its
// query returns, objects and (withCount) count.
func sameAsFresh(t *testing.T, c *client.Client, l *client.LiveList, stream string, query map[string]any, withCount bool) {
	t.Helper()
	want, n := freshList(t, c, stream, query)
	got := l.Items()
	if len(got) != len(want) {
		t.Fatalf("live list holds %d objects %s, a fresh list %d %s", len(got), got, len(want), want)
	}
	for i := range got {
		if !sameJSON(got[i], want[i]) {
			t.Fatalf("live list's object %d is %s, a fresh list's %s", i, got[i], want[i])
		}
	}
	if withCount && l.Count() != n {
		t.Fatalf("live list's count %d, a fresh list's %d", l.Count(), n)
	}
}

// TestLiveList_EveryEventKind: the reply's shape, then each kind of
// event a live list sends (a count alone, a push-out, an update in
// place, a refill, a move, an object leaving the filter), each checked
// against a fresh list.
func TestLiveList_EveryEventKind(t *testing.T) {
	e := start(t)
	c := e.dial("")
	q := create(t, c, "questions", map[string]any{"question_text": "Live?"})
	other := create(t, c, "questions", map[string]any{"question_text": "Other?"})
	choice := func(text string, votes int) int64 {
		return create(t, c, "choices", map[string]any{"question": q, "choice_text": text, "votes": votes})
	}
	a, b, cc, d := choice("a", 5), choice("b", 3), choice("c", 1), choice("d", 0)
	create(t, c, "choices", map[string]any{"question": other, "choice_text": "elsewhere", "votes": 9})
	patch := func(pk int64, data map[string]any) {
		t.Helper()
		if rep := do(t, c, "choices", client.Payload{Action: "patch", PK: pk, Data: data}); rep.Status != 200 {
			t.Fatalf("patch %d: %d %s", pk, rep.Status, rep.Errors)
		}
	}
	query := map[string]any{"question": q, "votes__gte": 1, "ordering": "-votes", "page_size": 2, "with_count": true}

	// The reply, raw: {"action":"list","seq","count","results"}.
	raw := rawReply(t, c, `{"stream":"choices","payload":{"action":"subscribe","request_id":"L0","data":{"action":"list","query":`+mustJSON(query)+`}}}`)
	if string(raw["response_status"]) != "200" || string(raw["request_id"]) != `"L0"` {
		t.Fatalf("reply: %v", raw)
	}
	var data map[string]json.RawMessage
	if err := json.Unmarshal(raw["data"], &data); err != nil {
		t.Fatal(err)
	}
	if keys := payloadKeys(t, []byte(`{"payload":`+string(raw["data"])+`}`)); strings.Join(keys, ",") != "action,seq,count,results" {
		t.Fatalf("reply data keys %v: %s", keys, raw["data"])
	}
	if string(data["action"]) != `"list"` || string(data["count"]) != "3" {
		t.Fatalf("reply data %s", raw["data"])
	}
	raw = rawReply(t, c, `{"stream":"choices","payload":{"action":"unsubscribe","request_id":"L0","data":{"action":"list"}}}`)
	if string(raw["response_status"]) != "200" || compact(raw["data"]) != `{"action":"list"}` {
		t.Fatalf("unsubscribe reply: %v", raw)
	}

	l, err := c.LiveList(tctx(t), "choices", query)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := l.PKs(), []string{fmtID(a), fmtID(b)}; !slices.Equal(got, want) {
		t.Fatalf("window %v, want %v", got, want)
	}
	if l.Count() != 3 || l.Seq == 0 {
		t.Fatalf("count %d seq %d", l.Count(), l.Seq)
	}
	sameAsFresh(t, c, l, "choices", query, true)

	// c 1 → 2: matches before and after, behind the window: nothing. d 0
	// → 1: enters the query behind the window: the count alone.
	patch(cc, map[string]any{"votes": 2})
	patch(d, map[string]any{"votes": 1})
	evs := expectLive(t, l, liveEv{"count", 0, -1, 4})
	if keys := payloadKeys(t, evs[0].Raw); strings.Join(keys, ",") != "action,data,model,pk,seq,request_id,count" || !strings.Contains(string(evs[0].Raw), `"data":null`) {
		t.Fatalf("count event %s", evs[0].Raw)
	}
	sameAsFresh(t, c, l, "choices", query, true)

	// c → 3 ties b and sorts after it (pk breaks ties): nothing; c → 4
	// pushes b out: a delete, then a create at 1, one seq.
	patch(cc, map[string]any{"votes": 3})
	patch(cc, map[string]any{"votes": 4})
	evs = expectLive(t, l, liveEv{"delete", b, -1, 4}, liveEv{"create", cc, 1, 4})
	if keys := payloadKeys(t, evs[1].Raw); strings.Join(keys, ",") != "action,data,model,pk,seq,request_id,index,count" {
		t.Fatalf("create event keys %v: %s", keys, evs[1].Raw)
	}
	if keys := payloadKeys(t, evs[0].Raw); strings.Join(keys, ",") != "action,data,model,pk,seq,request_id,count" {
		t.Fatalf("delete event keys %v: %s", keys, evs[0].Raw)
	}
	if !strings.Contains(string(evs[0].Raw), `"votes":3`) {
		t.Fatalf("a delete carries the state last seen (b with 3 votes): %s", evs[0].Raw)
	}
	sameAsFresh(t, c, l, "choices", query, true)

	// An update in place.
	patch(a, map[string]any{"choice_text": "A"})
	expectLive(t, l, liveEv{"update", a, 0, 4})
	sameAsFresh(t, c, l, "choices", query, true)

	// A deleted object leaves; the next (b) is read to refill.
	if rep := do(t, c, "choices", client.Payload{Action: "delete", PK: cc}); rep.Status != 200 {
		t.Fatalf("delete: %d %s", rep.Status, rep.Errors)
	}
	expectLive(t, l, liveEv{"delete", cc, -1, 3}, liveEv{"create", b, 1, 3})
	sameAsFresh(t, c, l, "choices", query, true)

	// a stops matching (0 votes): it leaves, d comes in.
	patch(a, map[string]any{"votes": 0})
	expectLive(t, l, liveEv{"delete", a, -1, 2}, liveEv{"create", d, 1, 2})
	sameAsFresh(t, c, l, "choices", query, true)

	// A move: d to the top.
	patch(d, map[string]any{"votes": 10})
	expectLive(t, l, liveEv{"update", d, 0, 2})
	sameAsFresh(t, c, l, "choices", query, true)

	// Unsubscribe: 200, and no event of the list after the reply.
	if err := l.Close(tctx(t)); err != nil {
		t.Fatal(err)
	}
	patch(b, map[string]any{"votes": 20})
	live2, err := c.LiveList(tctx(t), "choices", query)
	if err != nil {
		t.Fatal(err)
	}
	patch(b, map[string]any{"votes": 21}) // an event on live2 marks the point
	expectLive(t, live2, liveEv{"update", b, 0, 2})
	select {
	case f := <-c.Unmatched():
		t.Fatalf("a frame after the unsubscribe: %s", f)
	default:
	}
}

// TestLiveList_Refusals: page and cursor, bad parameters, and a stream's
// unknown kind.
func TestLiveList_Refusals(t *testing.T) {
	e := start(t)
	c := e.dial("")
	for _, tc := range []struct{ query, status, errs string }{
		{`{"page":2}`, "400", `[{"page":["A live list has no pages: it is the first page_size objects of its query."]}]`},
		{`{"cursor":""}`, "400", `[{"cursor":["A live list has no pages: it is the first page_size objects of its query."]}]`},
		{`{"votes__gte":"many"}`, "400", `[{"votes__gte":["Enter a number."]}]`},
		{`{"ordering":"choice_text"}`, "400", `[{"ordering":["Cannot order by \"choice_text\"."]}]`},
		{`[1]`, "400", `[{"query":["Expected a dictionary of list parameters."]}]`},
		{`{"fields":"votes"}`, "400", `[{"fields":["A live list's fields must include the primary key."]}]`},
	} {
		raw := rawReply(t, c, `{"stream":"choices","payload":{"action":"subscribe","request_id":"x","data":{"action":"list","query":`+tc.query+`}}}`)
		if string(raw["response_status"]) != tc.status || compact(raw["errors"]) != tc.errs {
			t.Errorf("query %s: %s %s, want %s %s", tc.query, raw["response_status"], raw["errors"], tc.status, tc.errs)
		}
	}
}

// TestLiveList_Scope: a live list follows its user's scope: choices of
// a question its owner unpublishes leave another user's list (deletes),
// and enter it again when it is published; the owner's own list keeps
// them.
func TestLiveList_Scope(t *testing.T) {
	p := startPollsAuth(t)
	alice, bob := p.dial(t, "alice"), p.dial(t, "bob")
	q := create(t, alice, "questions", map[string]any{"question_text": "Alice's?"})
	mine := create(t, bob, "questions", map[string]any{"question_text": "Bob's?"})
	c1 := create(t, alice, "choices", map[string]any{"question": q, "choice_text": "one", "votes": 2})
	c2 := create(t, alice, "choices", map[string]any{"question": q, "choice_text": "two", "votes": 1})
	b1 := create(t, bob, "choices", map[string]any{"question": mine, "choice_text": "bob's", "votes": 0})
	query := map[string]any{"ordering": "-votes", "page_size": 5, "with_count": true}
	lb, err := bob.LiveList(tctx(t), "choices", query)
	if err != nil {
		t.Fatal(err)
	}
	la, err := alice.LiveList(tctx(t), "choices", query)
	if err != nil {
		t.Fatal(err)
	}
	if got := lb.PKs(); !slices.Equal(got, []string{fmtID(c1), fmtID(c2), fmtID(b1)}) || lb.Count() != 3 {
		t.Fatalf("bob's window %v count %d", got, lb.Count())
	}
	// Unpublished: bob's list loses alice's choices (one change each),
	// alice's keeps them, as updates.
	if st, body := p.rest(t, "alice", "PATCH", fmt.Sprintf("/questions/%d/", q), `{"published":false}`); st != 200 {
		t.Fatalf("unpublish: %d %s", st, body)
	}
	expectLive(t, lb, liveEv{"delete", c1, -1, 2})
	expectLive(t, lb, liveEv{"delete", c2, -1, 1})
	expectLive(t, la, liveEv{"update", c1, 0, 3})
	expectLive(t, la, liveEv{"update", c2, 1, 3})
	sameAsFresh(t, bob, lb, "choices", query, true)
	sameAsFresh(t, alice, la, "choices", query, true)
	// A vote on a choice bob cannot see sends him nothing; one on his
	// own does.
	do(t, alice, "choices", client.Payload{Action: "vote", PK: c2}).want(t, 200, "[]")
	expectLive(t, la, liveEv{"update", c2, 1, 3})
	do(t, bob, "choices", client.Payload{Action: "vote", PK: b1}).want(t, 200, "[]")
	expectLive(t, lb, liveEv{"update", b1, 0, 1})
	// Published again: they enter his list where they sort.
	if st, body := p.rest(t, "alice", "PATCH", fmt.Sprintf("/questions/%d/", q), `{"published":true}`); st != 200 {
		t.Fatalf("publish: %d %s", st, body)
	}
	expectLive(t, lb, liveEv{"create", c1, 0, 2})
	expectLive(t, lb, liveEv{"create", c2, 1, 3}) // 2 votes as c1: the pk breaks the tie
	sameAsFresh(t, bob, lb, "choices", query, true)
}

// TestLiveList_RelationScope: in the boards app, a user's live list of
// cards follows their memberships: added to a board, its cards enter
// the list (in order, with the count); removed, they leave it; cards of
// boards they do not belong to never reach it.
func TestLiveList_RelationScope(t *testing.T) {
	eachBoardsStore(t, func(t *testing.T, e *boardsEnv) {
		alice, bob := e.dial(t, "alice"), e.dial(t, "bob")
		board := create(t, alice, "boards", map[string]any{"name": "Launch"})
		col := create(t, alice, "columns", map[string]any{"board": board, "name": "To do"})
		k1 := create(t, alice, "cards", map[string]any{"column": col, "title": "one", "position": 1})
		k2 := create(t, alice, "cards", map[string]any{"column": col, "title": "two", "position": 2})
		own := create(t, bob, "boards", map[string]any{"name": "Bob's"})
		ownCol := create(t, bob, "columns", map[string]any{"board": own, "name": "Mine"})
		b1 := create(t, bob, "cards", map[string]any{"column": ownCol, "title": "bob's", "position": 5})

		query := map[string]any{"ordering": "id", "page_size": 10, "with_count": true}
		l, err := bob.LiveList(tctx(t), "cards", query)
		if err != nil {
			t.Fatal(err)
		}
		if got := l.PKs(); !slices.Equal(got, []string{fmtID(b1)}) || l.Count() != 1 {
			t.Fatalf("bob's window %v count %d", got, l.Count())
		}
		// A card on alice's board: not his.
		create(t, alice, "cards", map[string]any{"column": col, "title": "three", "position": 3})
		sameAsFresh(t, bob, l, "cards", query, true)

		// Added: alice's three cards enter, at their places (k1, k2, b1,
		// the third).
		st, b := e.rest(t, "alice", "POST", "members/", map[string]any{"board": board, "user": "bob"})
		if st != 201 {
			t.Fatalf("add bob: %d %s", st, b)
		}
		var row struct{ ID int64 }
		_ = json.Unmarshal(b, &row)
		evs := []client.Event{nextLive(t, l), nextLive(t, l), nextLive(t, l)}
		for i, ev := range evs {
			if ev.Action != "create" || ev.Index == nil || *ev.Index != []int{0, 1, 3}[i] || ev.Count == nil || *ev.Count != 4 || ev.Seq != evs[0].Seq {
				t.Fatalf("event %d of joining: %s", i, ev.Raw)
			}
		}
		if got := l.PKs()[:2]; !slices.Equal(got, []string{fmtID(k1), fmtID(k2)}) {
			t.Fatalf("window after joining: %v", l.PKs())
		}
		sameAsFresh(t, bob, l, "cards", query, true)
		// Live changes on the board now reach him.

		if st, b := e.rest(t, "alice", "PATCH", fmt.Sprintf("cards/%d/", k2), map[string]any{"title": "two!"}); st != 200 {
			t.Fatalf("move: %d %s", st, b)
		}
		expectLive(t, l, liveEv{"update", k2, 1, 4})
		sameAsFresh(t, bob, l, "cards", query, true)

		// Removed: the board's cards leave.
		do(t, alice, "members", client.Payload{Action: "delete", PK: row.ID}).want(t, 200, "[]")
		for i := 0; i < 3; i++ {
			if ev := nextLive(t, l); ev.Action != "delete" || ev.Count == nil || *ev.Count != 1 {
				t.Fatalf("event %d of leaving: %s", i, ev.Raw)
			}
		}
		if got := l.PKs(); !slices.Equal(got, []string{fmtID(b1)}) {
			t.Fatalf("window after leaving: %v", got)
		}
		sameAsFresh(t, bob, l, "cards", query, true)
	})
}

// TestLiveList_DCRF: the DCRF dialect: subscribe_instance with the same
// data answers 201 with the window, events have the reply shape with
// the subscription's request_id, and unsubscribe_instance answers 204,
// after which nothing of it follows.
func TestLiveList_DCRF(t *testing.T) {
	e := start(t)
	c := e.dial("")
	q := create(t, c, "questions", map[string]any{"question_text": "DCRF?"})
	a := create(t, c, "choices", map[string]any{"question": q, "choice_text": "a", "votes": 1})
	raw := rawReply(t, c, fmt.Sprintf(`{"stream":"choices","payload":{"action":"subscribe_instance","request_id":"D1","data":{"action":"list","query":{"question":%d,"ordering":"-votes","with_count":true}}}}`, q))
	if string(raw["response_status"]) != "201" || string(raw["request_id"]) != `"D1"` || !strings.HasPrefix(compact(raw["data"]), `{"action":"list","seq":`) || !strings.Contains(compact(raw["data"]), `"count":1,"results":[{"id":`) {
		t.Fatalf("reply: %s %s %s", raw["response_status"], raw["request_id"], raw["data"])
	}
	if string(raw["seq"]) == "" {
		t.Fatalf("the 201 reply carries seq beside data: %v", raw)
	}
	b := create(t, c, "choices", map[string]any{"question": q, "choice_text": "b", "votes": 2})
	var f []byte
	select {
	case f = <-c.Unmatched():
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
	}
	if keys := payloadKeys(t, f); strings.Join(keys, ",") != "action,data,pk,errors,response_status,seq,request_id,index,count" {
		t.Fatalf("DCRF live event keys %v: %s", keys, f)
	}
	if !strings.Contains(string(f), `"action":"create"`) || !strings.Contains(string(f), fmt.Sprintf(`"pk":%d`, b)) || !strings.Contains(string(f), `"request_id":"D1","index":0,"count":2`) {
		t.Fatalf("DCRF live event %s", f)
	}
	raw = rawReply(t, c, `{"stream":"choices","payload":{"action":"unsubscribe_instance","request_id":"D1","data":{"action":"list"}}}`)
	if string(raw["response_status"]) != "204" {
		t.Fatalf("unsubscribe: %v", raw)
	}
	sub := mustSubscribe(t, c, "choices", "update", a)
	do(t, c, "choices", client.Payload{Action: "vote", PK: a}).want(t, 200, "[]")
	next(t, sub)
	select {
	case f := <-c.Unmatched():
		t.Fatalf("a frame after the unsubscribe: %s", f)
	default:
	}
}

// TestLiveList_NeedsTheChangeLog: without a change log nothing joins a
// snapshot to the events after it, so live lists are refused.
func TestLiveList_NeedsTheChangeLog(t *testing.T) {
	e := start(t, func(s *server.Config, _ *resource.Config[Note]) { s.ChangeLog = nil })
	c := e.dial("")
	raw := rawReply(t, c, `{"stream":"choices","payload":{"action":"subscribe","request_id":"x","data":{"action":"list"}}}`)
	if string(raw["response_status"]) != "400" || compact(raw["errors"]) != `["Live lists need the change log, which this server does not keep."]` {
		t.Fatalf("reply: %s %s", raw["response_status"], raw["errors"])
	}
}
