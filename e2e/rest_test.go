package e2e_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/streamapi/streamapi/client"
	"github.com/streamapi/streamapi/resource"
	"github.com/streamapi/streamapi/server"
)

// httpReply is one REST response.
type httpReply struct {
	status int
	header http.Header
	body   string
}

// call makes one REST request to e's /api: body, when not "", is sent as
// application/json unless ctype says otherwise.
func (e *env) call(t *testing.T, method, path, body string, ctype ...string) httpReply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(tctx(t), method, e.base+"/api"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if len(ctype) > 0 {
		req.Header.Set("Content-Type", ctype[0])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return httpReply{status: res.StatusCode, header: res.Header, body: string(b)}
}

// want checks status and body (compact JSON, or "" for none).
func (r httpReply) want(t *testing.T, status int, body string) {
	t.Helper()
	got := r.body
	if got != "" {
		var buf bytes.Buffer
		if json.Compact(&buf, []byte(got)) == nil {
			got = buf.String()
		}
	}
	if r.status != status || got != body {
		t.Fatalf("got %d %s\nwant %d %s", r.status, got, status, body)
	}
	if body != "" && r.header.Get("Content-Type") != "application/json" {
		t.Errorf("Content-Type %q, want application/json", r.header.Get("Content-Type"))
	}
}

func TestREST_Routes(t *testing.T) {
	e := start(t)
	base := strings.TrimPrefix(e.base, "http://")
	e.call(t, "GET", "/", "").want(t, 200, `{"choices":"http://`+base+`/api/choices/","notes":"http://`+base+`/api/notes/","questions":"http://`+base+`/api/questions/"}`)
	e.call(t, "GET", "/questions/", "").want(t, 200, `{"count":0,"next":null,"previous":null,"results":[]}`)

	e.call(t, "POST", "/questions/", `{"question_text":"Why?","pub_date":"2026-11-29T10:00:00Z","owner":"","published":true}`).
		want(t, 201, `{"id":1,"question_text":"Why?","pub_date":"2026-11-29T10:00:00Z","owner":"","published":true}`)
	// With or without the trailing slash.
	e.call(t, "POST", "/questions", `{"question_text":"How?","pub_date":"2026-11-29T11:00:00Z","owner":"","published":true}`).
		want(t, 201, `{"id":2,"question_text":"How?","pub_date":"2026-11-29T11:00:00Z","owner":"","published":true}`)
	e.call(t, "GET", "/questions/1/", "").want(t, 200, `{"id":1,"question_text":"Why?","pub_date":"2026-11-29T10:00:00Z","owner":"","published":true}`)
	e.call(t, "GET", "/questions/1", "").want(t, 200, `{"id":1,"question_text":"Why?","pub_date":"2026-11-29T10:00:00Z","owner":"","published":true}`)
	e.call(t, "PUT", "/questions/1/", `{"question_text":"Why so?","pub_date":"2026-11-29T12:00:00Z","owner":"","published":true}`).
		want(t, 200, `{"id":1,"question_text":"Why so?","pub_date":"2026-11-29T12:00:00Z","owner":"","published":true}`)
	// PUT is a full update: a required field left out is an error.
	e.call(t, "PUT", "/questions/1/", `{"pub_date":"2026-11-29T12:00:00Z","owner":"","published":true}`).want(t, 400, `{"question_text":["This field is required."]}`)
	e.call(t, "PATCH", "/questions/1/", `{"question_text":"Patched"}`).
		want(t, 200, `{"id":1,"question_text":"Patched","pub_date":"2026-11-29T12:00:00Z","owner":"","published":true}`)
	e.call(t, "DELETE", "/questions/2/", "").want(t, 204, "")
	e.call(t, "GET", "/questions/2/", "").want(t, 404, `{"detail":"Not found."}`)
	e.call(t, "GET", "/questions/", "").want(t, 200, `{"count":1,"next":null,"previous":null,"results":[{"id":1,"question_text":"Patched","pub_date":"2026-11-29T12:00:00Z","owner":"","published":true}]}`)

	// Custom actions: a detail action on POST, a list action on POST and,
	// being declared safe, on GET.
	e.call(t, "POST", "/choices/", `{"question":1,"choice_text":"Because","votes":0,"question_published":true,"question_owner":""}`).want(t, 201, `{"id":1,"question":1,"choice_text":"Because","votes":0,"question_published":true,"question_owner":""}`)
	e.call(t, "POST", "/choices/1/vote/", "").want(t, 200, `{"id":1,"question":1,"choice_text":"Because","votes":1,"question_published":true,"question_owner":""}`)
	e.call(t, "POST", "/choices/1/vote", "").want(t, 200, `{"id":1,"question":1,"choice_text":"Because","votes":2,"question_published":true,"question_owner":""}`)
	e.call(t, "POST", "/notes/count/", "").want(t, 200, `{"count":0}`)
	e.call(t, "GET", "/notes/count/", "").want(t, 200, `{"count":0}`)
	e.call(t, "GET", "/choices/1/vote/", "").want(t, 405, `{"detail":"Method \"GET\" not allowed."}`)

	r := e.call(t, "OPTIONS", "/questions/1/", "")
	if r.status != 200 || r.header.Get("Allow") != "GET, HEAD, PUT, PATCH, DELETE, OPTIONS" {
		t.Fatalf("OPTIONS: %d Allow %q", r.status, r.header.Get("Allow"))
	}
}

func TestREST_Errors(t *testing.T) {
	e := start(t)
	e.call(t, "POST", "/questions/", `{"question_text":"Why?","pub_date":"2026-11-29T10:00:00Z","owner":"","published":true}`).want(t, 201, `{"id":1,"question_text":"Why?","pub_date":"2026-11-29T10:00:00Z","owner":"","published":true}`)
	notFound := `{"detail":"Not found."}`
	e.call(t, "GET", "/nope/", "").want(t, 404, notFound)
	e.call(t, "GET", "/questions/99/", "").want(t, 404, notFound)
	e.call(t, "GET", "/questions/abc/", "").want(t, 404, notFound) // a pk of the wrong type, as Django
	e.call(t, "GET", "/questions/1/nope/", "").want(t, 404, notFound)
	e.call(t, "GET", "/questions/1/2/3/", "").want(t, 404, notFound)
	e.call(t, "POST", "/choices/99/vote/", "").want(t, 404, notFound)

	// Validation: DRF's field map.
	e.call(t, "POST", "/questions/", `{}`).want(t, 400, `{"question_text":["This field is required."]}`)
	e.call(t, "POST", "/questions/", ``).want(t, 400, `{"question_text":["This field is required."]}`)
	e.call(t, "POST", "/questions/", `{"question_text":"`+strings.Repeat("x", 201)+`"}`).want(t, 400, `{"question_text":["Ensure this field has no more than 200 characters."]}`)
	e.call(t, "POST", "/questions/", `[1]`).want(t, 400, `{"non_field_errors":["Invalid data. Expected a dictionary, but got list."]}`)
	e.call(t, "POST", "/choices/", `{"question":"x","choice_text":"a"}`).want(t, 400, `{"question":["A valid integer is required."]}`)
	// Malformed JSON, another media type, a body over the limit.
	e.call(t, "POST", "/questions/", `{"question_text":`).want(t, 400, `{"detail":"JSON parse error - unexpected end of JSON input"}`)
	e.call(t, "POST", "/questions/", `question_text=x`, "application/x-www-form-urlencoded").want(t, 415, `{"detail":"Unsupported media type \"application/x-www-form-urlencoded\" in request."}`)
	e.call(t, "POST", "/questions/", `{"a":1}`, "").want(t, 415, `{"detail":"Unsupported media type \"\" in request."}`)
	e.call(t, "POST", "/questions/", `{"question_text":"x"}`, "application/json; charset=utf-8").wantStatus(t, 201)

	// Methods a route does not have: 405 with Allow.
	r := e.call(t, "POST", "/questions/1/", `{}`)
	r.want(t, 405, `{"detail":"Method \"POST\" not allowed."}`)
	if r.header.Get("Allow") != "GET, HEAD, PUT, PATCH, DELETE, OPTIONS" {
		t.Errorf("Allow %q", r.header.Get("Allow"))
	}
	r = e.call(t, "DELETE", "/questions/", "")
	r.want(t, 405, `{"detail":"Method \"DELETE\" not allowed."}`)
	if r.header.Get("Allow") != "GET, HEAD, POST, OPTIONS" {
		t.Errorf("Allow %q", r.header.Get("Allow"))
	}

	// Permissions: notes are written by authenticated users only, and
	// shouted only by their owner.
	e.call(t, "POST", "/notes/", `{"text":"hi"}`).want(t, 401, `{"detail":"Authentication credentials were not provided."}`)
	e.call(t, "POST", "/notes/?user=alice", `{"text":"hi"}`).want(t, 201, `{"id":1,"text":"hi","owner":"alice"}`)
	e.call(t, "POST", "/notes/1/Shout/?user=bob", "").want(t, 403, `{"detail":"You do not have permission to perform this action."}`)
	e.call(t, "POST", "/notes/1/Shout/?user=alice", "").want(t, 202, `{"id":1,"text":"HI","owner":"alice"}`)
	// The authenticator's refusal gives its reason, with WWW-Authenticate.
	r = e.call(t, "GET", "/notes/?user=mallory", "")
	r.want(t, 401, `{"detail":"no"}`)
	if r.header.Get("WWW-Authenticate") != `Bearer realm="api"` {
		t.Errorf("WWW-Authenticate %q", r.header.Get("WWW-Authenticate"))
	}
}

func TestREST_BodyLimit(t *testing.T) {
	e := start(t, func(s *server.Config, _ *resource.Config[Note]) { s.Conn.MaxFrameBytes = 1024 })
	e.call(t, "POST", "/questions/", `{"question_text":"`+strings.Repeat("x", 2000)+`"}`).want(t, 413, `{"detail":"Request body is larger than 1024 bytes."}`)
}

func TestREST_ReadOnlyResource(t *testing.T) {
	e := start(t, func(_ *server.Config, n *resource.Config[Note]) { n.Actions = resource.ReadOnly })
	r := e.call(t, "POST", "/notes/?user=alice", `{"text":"hi"}`)
	r.want(t, 405, `{"detail":"Method \"POST\" not allowed."}`)
	if r.header.Get("Allow") != "GET, HEAD, OPTIONS" {
		t.Errorf("Allow %q, want GET, HEAD, OPTIONS", r.header.Get("Allow"))
	}
}

func TestREST_Pagination(t *testing.T) {
	e := start(t, func(_ *server.Config, n *resource.Config[Note]) { n.MaxPageSize = 3 })
	for _, text := range []string{"a", "b", "c", "d", "e"} {
		e.call(t, "POST", "/notes/?user=u", `{"text":"`+text+`"}`).wantStatus(t, 201)
	}
	base := e.base + "/api/notes/"
	// Notes have a page size of 2.
	e.call(t, "GET", "/notes/", "").want(t, 200, `{"count":5,"next":"`+base+`?page=2","previous":null,"results":[{"id":1,"text":"a","owner":"u"},{"id":2,"text":"b","owner":"u"}]}`)
	e.call(t, "GET", "/notes/?page=2", "").want(t, 200, `{"count":5,"next":"`+base+`?page=3","previous":"`+base+`","results":[{"id":3,"text":"c","owner":"u"},{"id":4,"text":"d","owner":"u"}]}`)
	e.call(t, "GET", "/notes/?page=3", "").want(t, 200, `{"count":5,"next":null,"previous":"`+base+`?page=2","results":[{"id":5,"text":"e","owner":"u"}]}`)
	e.call(t, "GET", "/notes/?page=4", "").want(t, 404, `{"detail":"Invalid page."}`)
	e.call(t, "GET", "/notes/?page=0", "").want(t, 404, `{"detail":"Invalid page."}`)
	e.call(t, "GET", "/notes/?page=x", "").want(t, 404, `{"detail":"Invalid page."}`)
	// page_size, capped by MaxPageSize (3); other parameters kept in links.
	e.call(t, "GET", "/notes/?page_size=10&page=2", "").want(t, 200, `{"count":5,"next":null,"previous":"`+base+`?page_size=10","results":[{"id":4,"text":"d","owner":"u"},{"id":5,"text":"e","owner":"u"}]}`)
	e.call(t, "GET", "/notes/?page_size=1", "").want(t, 200, `{"count":5,"next":"`+base+`?page=2&page_size=1","previous":null,"results":[{"id":1,"text":"a","owner":"u"}]}`)
	// An invalid page_size is ignored, as in DRF.
	e.call(t, "GET", "/notes/?page_size=-1", "").want(t, 200, `{"count":5,"next":"`+base+`?page=2&page_size=-1","previous":null,"results":[{"id":1,"text":"a","owner":"u"},{"id":2,"text":"b","owner":"u"}]}`)
}

func (r httpReply) wantStatus(t *testing.T, want int) {
	t.Helper()
	if r.status != want {
		t.Fatalf("status %d (%s), want %d", r.status, r.body, want)
	}
}

// TestREST_EventsBothWays: a write over REST reaches WebSocket subscribers
// with the same event a WebSocket write gives, and a write over the
// WebSocket is what REST then reads.
func TestREST_EventsBothWays(t *testing.T) {
	e := start(t)
	c := e.dial("")
	creates := mustSubscribe(t, c, "questions", "create", nil)
	updates := mustSubscribe(t, c, "questions", "update", nil)
	deletes := mustSubscribe(t, c, "questions", "delete", nil)

	// REST → WebSocket.
	r := e.call(t, "POST", "/questions/", `{"question_text":"over REST","pub_date":"2026-11-29T10:00:00Z","owner":"","published":true}`)
	r.want(t, 201, `{"id":1,"question_text":"over REST","pub_date":"2026-11-29T10:00:00Z","owner":"","published":true}`)
	ev := next(t, creates)
	if string(ev.Raw) != `{"stream":"questions","payload":{"action":"create","data":`+r.body+`,"model":"polls.question","pk":1,"seq":1}}` {
		t.Fatalf("event of a REST create: %s", ev.Raw)
	}
	r = e.call(t, "PATCH", "/questions/1/", `{"question_text":"patched over REST"}`)
	if ev := next(t, updates); compact(ev.Data) != r.body || ev.Seq != 2 {
		t.Fatalf("event of a REST patch: %s, want data %s", ev.Raw, r.body)
	}
	e.call(t, "DELETE", "/questions/1/", "").want(t, 204, "")
	if ev := next(t, deletes); compact(ev.PK) != "1" || ev.Seq != 3 {
		t.Fatalf("event of a REST delete: %s", ev.Raw)
	}

	// WebSocket → REST, and its event has the same shape.
	w := do(t, c, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "over the socket", "pub_date": "2026-11-29T10:00:00Z"}})
	w.want(t, 201, "[]")
	ev = next(t, creates)
	if string(ev.Raw) != `{"stream":"questions","payload":{"action":"create","data":`+compact(w.Data)+`,"model":"polls.question","pk":2,"seq":4}}` {
		t.Fatalf("event of a WebSocket create: %s", ev.Raw)
	}
	e.call(t, "GET", "/questions/2/", "").want(t, 200, compact(w.Data))
	e.call(t, "POST", "/choices/", `{"question":2,"choice_text":"x"}`).wantStatus(t, 201)
	do(t, c, "choices", client.Payload{Action: "vote", PK: 1}).want(t, 200, "[]")
	e.call(t, "GET", "/choices/1/", "").want(t, 200, `{"id":1,"question":2,"choice_text":"x","votes":1,"question_published":true,"question_owner":""}`)
}
