package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/streamapi/streamapi/client"
)

// seedPolls creates three questions and seven choices:
//
//	question 1 "Why?"        2026-01-10   choices 1, 2, 3 with votes 5, 0, 5
//	question 2 "Why not?"    2026-06-10   choices 4, 5 with votes 2, 9
//	question 3 "What now?"   2027-01-10   choices 6, 7 with votes 5, 1
func seedPolls(t *testing.T, e *env) {
	t.Helper()
	for _, q := range []struct{ text, date string }{{"Why?", "2026-01-10T00:00:00Z"}, {"Why not?", "2026-06-10T00:00:00Z"}, {"What now?", "2027-01-10T00:00:00Z"}} {
		e.call(t, "POST", "/questions/", fmt.Sprintf(`{"question_text":%q,"pub_date":%q}`, q.text, q.date)).wantStatus(t, 201)
	}
	for _, c := range []struct {
		q     int
		votes int
	}{{1, 5}, {1, 0}, {1, 5}, {2, 2}, {2, 9}, {3, 5}, {3, 1}} {
		e.call(t, "POST", "/choices/", fmt.Sprintf(`{"question":%d,"choice_text":"c","votes":%d}`, c.q, c.votes)).wantStatus(t, 201)
	}
}

// ids returns the "id" of each object of a REST list body's results (or of
// a plain array).
func ids(t *testing.T, body string) string {
	t.Helper()
	var page struct {
		Results []map[string]any `json:"results"`
	}
	if strings.HasPrefix(body, "[") {
		_ = json.Unmarshal([]byte(body), &page.Results)
	} else if err := json.Unmarshal([]byte(body), &page); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	var out []string
	for _, o := range page.Results {
		out = append(out, fmt.Sprint(o["id"]))
	}
	return strings.Join(out, ",")
}

func TestQueries_REST(t *testing.T) {
	e := start(t)
	seedPolls(t, e)
	get := func(path string) httpReply {
		t.Helper()
		r := e.call(t, "GET", path, "")
		if r.status != 200 {
			t.Fatalf("GET %s: %d %s", path, r.status, r.body)
		}
		return r
	}
	for _, c := range []struct{ path, ids string }{
		{"/choices/?question=1", "1,2,3"},
		{"/choices/?question=1&votes__gte=5", "1,3"},
		{"/choices/?votes__gt=2&votes__lt=9", "1,3,6"},
		{"/choices/?votes__lte=1", "2,7"},
		{"/choices/?votes=5", "1,3,6"},
		{"/choices/?question__in=2,3", "4,5,6,7"},
		{"/choices/?ordering=-votes", "5,1,3,6,4,7,2"}, // ties broken by id
		{"/choices/?ordering=-votes,-id", "5,6,3,1,4,7,2"},
		{"/choices/?ordering=votes&question=1", "2,1,3"},
		{"/questions/?search=why", "1,2"},
		{"/questions/?search=WHY%20not", "2"},
		{"/questions/?search=now,what", "3"},
		{"/questions/?pub_date__gte=2026-06-01&pub_date__lt=2027-01-01", "2"},
		{"/questions/?pub_date__gt=2026-01-10T00:00:00Z", "2,3"},
		{"/questions/?pub_date=2026-01-10T00:00:00%2B00:00", "1"},
		{"/questions/?ordering=-pub_date", "3,2,1"},
		{"/questions/?ordering=question_text", "3,2,1"}, // byte order: "Why not?" < "Why?"
	} {
		if got := ids(t, get(c.path).body); got != c.ids {
			t.Errorf("GET %s: ids %s, want %s", c.path, got, c.ids)
		}
	}
	// The count follows the filters; page links keep them.
	r := get("/choices/?votes__gte=2&page_size=2&ordering=-votes")
	r.want(t, 200, `{"count":5,"next":"`+e.base+`/api/choices/?ordering=-votes&page=2&page_size=2&votes__gte=2","previous":null,"results":[{"id":5,"question":2,"choice_text":"c","votes":9,"question_published":true,"question_owner":""},{"id":1,"question":1,"choice_text":"c","votes":5,"question_published":true,"question_owner":""}]}`)
	// Sparse fields, in declaration order whatever the order asked.
	get("/questions/?fields=question_text,id&search=now").want(t, 200, `{"count":1,"next":null,"previous":null,"results":[{"id":3,"question_text":"What now?"}]}`)
}

func TestQueries_Errors(t *testing.T) {
	e := start(t)
	seedPolls(t, e)
	for _, c := range []struct{ path, body string }{
		{"/choices/?votes__gte=x", `{"votes__gte":["Enter a number."]}`},
		{"/choices/?question__in=1,x", `{"question__in":["Enter a number."]}`},
		{"/choices/?choice_text=c", `{"choice_text":["Unknown filter: not a declared field and lookup."]}`},
		{"/choices/?votes__contains=1", `{"votes__contains":["Unknown filter: not a declared field and lookup."]}`},
		{"/choices/?votes__nope=1", `{"votes__nope":["Unknown filter: not a declared field and lookup."]}`},
		{"/notes/?text=a%00b", `{"text":["Null characters are not allowed."]}`},
		{"/notes/?text=%FF", `{"text":["Not a valid string."]}`},
		{"/notes/?search=%00", `{"search":["Null characters are not allowed."]}`},
		{"/choices/?votes=NaN", `{"votes":["Enter a number."]}`},
		{"/choices/?page=4611686018427387905&page_size=4", `{"detail":"Invalid page."}`},
		{"/notes/?ordering=text,owner&cursor=", ""},
		{"/choices/?ordering=choice_text", `{"ordering":["Cannot order by \"choice_text\"."]}`},
		{"/choices/?ordering=-nope,votes", `{"ordering":["Cannot order by \"-nope\"."]}`},
		{"/questions/?pub_date__gte=yesterday", `{"pub_date__gte":["Enter a valid date/time."]}`},
		{"/questions/?fields=id,nope", `{"fields":["Unknown field \"nope\"."]}`},
		{"/choices/?search=x", `{"search":["This resource has no search fields."]}`},
		{"/choices/?cursor=bogus", `{"cursor":["Invalid cursor."]}`},
		{"/choices/?with_count=maybe", `{"with_count":["Must be a valid boolean."]}`},
	} {
		r := e.call(t, "GET", c.path, "")
		switch {
		case c.body == "":
			r.wantStatus(t, 200)
		case strings.Contains(c.body, "Invalid page"):
			r.want(t, 404, c.body)
		default:
			r.want(t, 400, c.body)
		}
	}
	// As django-filter, a query-string name that is no field of the
	// resource (a token, a cache buster) and an empty value are ignored.
	for _, path := range []string{"/choices/?nope=1", "/choices/?_=123&format=json", "/choices/?votes="} {
		if got := ids(t, e.call(t, "GET", path, "").body); got != "1,2,3,4,5,6,7" {
			t.Errorf("GET %s: ids %s, want every choice", path, got)
		}
	}
	// Hostile values are bound, never spliced into SQL.
	e.call(t, "POST", "/notes/?user=u", `{"text":"plain"}`).wantStatus(t, 201)
	for _, hostile := range []string{
		`'; DROP TABLE polls_question; --`,
		`") OR 1=1 --`,
		`%' OR '1'='1`,
		`\'; SELECT 1; --`,
		`plain' OR 'a'='a`,
		`$1`,
		`?; --`,
	} {
		q := url.QueryEscape(hostile)
		// Text values reach SQL, bound: they match nothing, and fail nothing.
		for _, path := range []string{"/questions/?search=" + q, "/notes/?text=" + q, "/notes/?text__in=plain," + q, "/notes/?text__contains=" + q, "/notes/?text__icontains=" + q, "/notes/?text__startswith=" + q, "/notes/?text__lt=" + q} {
			r := e.call(t, "GET", path, "")
			r.wantStatus(t, 200)
			want := ""
			if strings.Contains(path, "text__in=plain") || strings.Contains(path, "text__lt") && hostile > "plain" {
				want = "1"
			}
			if got := ids(t, r.body); got != want {
				t.Errorf("GET %s selected %q, want %q", path, got, want)
			}
		}
		e.call(t, "GET", "/choices/?question="+q, "").want(t, 400, `{"question":["Enter a number."]}`)
		e.call(t, "GET", "/questions/?pub_date__lt="+q, "").want(t, 400, `{"pub_date__lt":["Enter a valid date/time."]}`)
		e.call(t, "GET", "/choices/?ordering="+q, "").wantStatus(t, 400)
	}
	if got := ids(t, e.call(t, "GET", "/questions/", "").body); got != "1,2,3" {
		t.Fatalf("after the hostile queries the questions are %s", got)
	}
}

func TestQueries_WebSocket(t *testing.T) {
	e := start(t)
	seedPolls(t, e)
	c := e.dial("")
	list := func(stream string, data map[string]any) reply {
		t.Helper()
		return do(t, c, stream, client.Payload{Action: "list", Data: data})
	}
	for _, cs := range []struct {
		stream string
		data   map[string]any
		ids    string
	}{
		{"choices", map[string]any{"question": 1}, "1,2,3"},
		{"choices", map[string]any{"question": "1"}, "1,2,3"},
		{"choices", map[string]any{"question__in": []any{2, 3}, "votes__gte": 2}, "4,5,6"},
		{"choices", map[string]any{"question__in": "2,3"}, "4,5,6,7"},
		{"choices", map[string]any{"votes__gt": 2, "votes__lte": 5}, "1,3,6"},
		{"choices", map[string]any{"votes__lt": "2", "votes": 0}, "2"},
		{"questions", map[string]any{"pub_date__gte": "2026-06-10", "pub_date__lte": "2027-01-10T00:00:00Z"}, "2,3"},
		{"questions", map[string]any{"pub_date__gt": "2026-06-10T00:00:00Z", "pub_date": "2027-01-10 00:00"}, "3"},
		{"choices", map[string]any{"page": 2, "page_size": 3, "ordering": "-votes"}, "6,4,7"},
		{"choices", map[string]any{"ordering": []any{"-votes", "-id"}}, "5,6,3,1,4,7,2"},
		{"questions", map[string]any{"search": "why", "ordering": "-pub_date"}, "2,1"},
		{"questions", map[string]any{"pub_date__lt": "2026-06-10T00:00:00Z"}, "1"},
	} {
		r := list(cs.stream, cs.data)
		r.want(t, 200, "[]")
		if got := ids(t, compact(r.Data)); got != cs.ids {
			t.Errorf("list %s %v: ids %s, want %s", cs.stream, cs.data, got, cs.ids)
		}
	}
	// The reply's data stays a plain array; with_count asks for the count.
	r := list("choices", map[string]any{"votes__gte": 5, "page_size": 2, "with_count": true})
	r.want(t, 200, "[]")
	if compact(r.Data) != `{"count":4,"next":2,"previous":null,"results":[{"id":1,"question":1,"choice_text":"c","votes":5,"question_published":true,"question_owner":""},{"id":3,"question":1,"choice_text":"c","votes":5,"question_published":true,"question_owner":""}]}` {
		t.Errorf("with_count: %s", r.Data)
	}
	r = list("questions", map[string]any{"fields": []any{"id"}, "ordering": "-id"})
	if compact(r.Data) != `[{"id":3},{"id":2},{"id":1}]` {
		t.Errorf("sparse fields: %s", r.Data)
	}
	// Errors name the field, in the WebSocket's errors list.
	list("choices", map[string]any{"votes__gte": "many"}).want(t, 400, `[{"votes__gte":["Enter a number."]}]`)
	list("choices", map[string]any{"votes__gte": true}).want(t, 400, `[{"votes__gte":["Enter a number."]}]`)
	list("choices", map[string]any{"choice_text": "c"}).want(t, 400, `[{"choice_text":["Unknown filter: not a declared field and lookup."]}]`)
	list("choices", map[string]any{"ordering": "choice_text"}).want(t, 400, `[{"ordering":["Cannot order by \"choice_text\"."]}]`)
	list("questions", map[string]any{"search": 5}).want(t, 200, "[]")
}

// TestQueries_StablePagesAndCursors: with many ties in the ordering, pages
// by number and by cursor neither repeat nor skip an object, on both
// surfaces.
func TestQueries_StablePagesAndCursors(t *testing.T) {
	e := start(t)
	e.call(t, "POST", "/questions/", `{"question_text":"q","pub_date":"2026-01-10T00:00:00Z","owner":"","published":true}`).wantStatus(t, 201)
	for i := 0; i < 23; i++ {
		e.call(t, "POST", "/choices/", fmt.Sprintf(`{"question":1,"choice_text":"c","votes":%d}`, i%3)).wantStatus(t, 201)
	}
	all := ids(t, e.call(t, "GET", "/choices/?ordering=-votes&page_size=100", "").body)
	if strings.Count(all, ",") != 22 {
		t.Fatalf("all: %s", all)
	}
	var byPage []string
	for p := 1; p <= 5; p++ {
		byPage = append(byPage, ids(t, e.call(t, "GET", fmt.Sprintf("/choices/?ordering=-votes&page_size=5&page=%d", p), "").body))
	}
	if got := strings.Join(byPage, ","); got != all {
		t.Fatalf("pages by number %s, want %s", got, all)
	}
	// REST cursors: follow next until null.
	var byCursor []string
	next := e.base + "/api/choices/?ordering=-votes&page_size=5&cursor="
	for n := 0; next != ""; n++ {
		if n > 10 {
			t.Fatal("cursor pages do not end")
		}
		r := e.call(t, "GET", strings.TrimPrefix(next, e.base+"/api"), "")
		var body struct {
			Next     *string          `json:"next"`
			Previous *string          `json:"previous"`
			Results  []map[string]any `json:"results"`
		}
		if r.status != 200 || json.Unmarshal([]byte(r.body), &body) != nil || body.Previous != nil {
			t.Fatalf("cursor page: %d %s", r.status, r.body)
		}
		byCursor = append(byCursor, ids(t, r.body))
		next = ""
		if body.Next != nil {
			next = *body.Next
		}
	}
	if got := strings.Join(byCursor, ","); got != all {
		t.Fatalf("pages by cursor %s, want %s", got, all)
	}
	// A cursor made for one ordering is refused under another.
	r := e.call(t, "GET", "/choices/?ordering=-votes&page_size=5&cursor=", "")
	var first struct{ Next string }
	_ = json.Unmarshal([]byte(r.body), &first)
	u, _ := url.Parse(first.Next)
	e.call(t, "GET", "/choices/?ordering=votes&cursor="+url.QueryEscape(u.Query().Get("cursor")), "").want(t, 400, `{"cursor":["Invalid cursor."]}`)

	// WebSocket cursors.
	c := e.dial("")
	var ws []string
	cursor := ""
	for n := 0; ; n++ {
		if n > 10 {
			t.Fatal("cursor pages do not end")
		}
		rep := do(t, c, "choices", client.Payload{Action: "list", Data: map[string]any{"ordering": "-votes", "page_size": 5, "cursor": cursor}})
		rep.want(t, 200, "[]")
		var body struct {
			Next    *string          `json:"next"`
			Results []map[string]any `json:"results"`
		}
		if err := json.Unmarshal(rep.Data, &body); err != nil {
			t.Fatal(err)
		}
		ws = append(ws, ids(t, compact(rep.Data)))
		if body.Next == nil {
			break
		}
		cursor = *body.Next
	}
	if got := strings.Join(ws, ","); got != all {
		t.Fatalf("WebSocket cursor pages %s, want %s", got, all)
	}
}

// TestQueries_TextLookups exercises the text lookups and isnull on both
// surfaces, with text that tells byte order and ASCII case folding apart.
func TestQueries_TextLookups(t *testing.T) {
	e := start(t)
	for _, text := range []string{"Apple", "apple pie", "ÉCOLE", "école", "banana", "Band"} {
		e.call(t, "POST", "/notes/?user=u", fmt.Sprintf(`{"text":%q}`, text)).wantStatus(t, 201)
	}
	c := e.dial("")
	for _, cs := range []struct {
		query string
		data  map[string]any
		ids   string
	}{
		{"text__contains=pp", map[string]any{"text__contains": "pp"}, "1,2"},
		{"text__contains=App", map[string]any{"text__contains": "App"}, "1"},
		{"text__icontains=APPLE", map[string]any{"text__icontains": "APPLE"}, "1,2"},
		{"text__icontains=cole", map[string]any{"text__icontains": "cole"}, "3,4"},
		{"text__icontains=%C3%A9cole", map[string]any{"text__icontains": "école"}, "4"}, // é is not folded to É
		{"text__startswith=Ban", map[string]any{"text__startswith": "Ban"}, "6"},
		{"text__startswith=ban", map[string]any{"text__startswith": "ban"}, "5"},
		{"text__in=Band,banana", map[string]any{"text__in": []any{"Band", "banana"}}, "5,6"},
		{"text=Band", map[string]any{"text": "Band"}, "6"},
		{"text__lt=a", map[string]any{"text__lt": "a"}, "1,6"}, // byte order: capitals first
		{"text__gt=z", map[string]any{"text__gt": "z"}, "3,4"}, // and non-ASCII last
		{"owner__isnull=false", map[string]any{"owner__isnull": false}, "1,2,3,4,5,6"},
		{"owner__isnull=true", map[string]any{"owner__isnull": true}, ""},
		{"search=an%20b", map[string]any{"search": "an b"}, "5,6"},
		{"ordering=-text", map[string]any{"ordering": "-text"}, "4,3,5,2,6,1"},
	} {
		r := e.call(t, "GET", "/notes/?page_size=10&"+cs.query, "")
		if r.status != 200 {
			t.Fatalf("REST %s: %d %s", cs.query, r.status, r.body)
		}
		if got := ids(t, r.body); got != cs.ids {
			t.Errorf("REST %s: ids %s, want %s", cs.query, got, cs.ids)
		}
		data := map[string]any{"page_size": 10}
		for k, v := range cs.data {
			data[k] = v
		}
		rep := do(t, c, "notes", client.Payload{Action: "list", Data: data})
		rep.want(t, 200, "[]")
		if got := ids(t, compact(rep.Data)); got != cs.ids {
			t.Errorf("WebSocket %v: ids %s, want %s", cs.data, got, cs.ids)
		}
	}
	do(t, c, "notes", client.Payload{Action: "list", Data: map[string]any{"text": 5}}).want(t, 400, `[{"text":["Not a valid string."]}]`)
	do(t, c, "notes", client.Payload{Action: "list", Data: map[string]any{"owner__isnull": "maybe"}}).want(t, 400, `[{"owner__isnull":["Must be a valid boolean."]}]`)
}
