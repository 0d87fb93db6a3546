package e2e_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/streamapi/streamapi/auth/jwtauth"
	"github.com/streamapi/streamapi/client"
	"github.com/streamapi/streamapi/internal/testenv"
)

// pollsAuth serves the polls app with tokens on, as cmd/streamapi
// --jwt-secret does.
type pollsAuth struct {
	ws, base string
}

func startPollsAuth(t *testing.T) *pollsAuth {
	t.Helper()
	a, err := jwtauth.New(jwtauth.Config{Secret: jwtSecret})
	if err != nil {
		t.Fatal(err)
	}
	p := testenv.PollsServer(t, testenv.PollsAuth(a))
	return &pollsAuth{ws: p.WS, base: p.Base}
}

func (p *pollsAuth) dial(t *testing.T, user string) *client.Client {
	t.Helper()
	url := p.ws
	if user != "" {
		url += "?token=" + token(t, user, time.Hour)
	}
	c, err := client.Dial(tctx(t), url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rest makes a REST call as user ("" for anonymous).
func (p *pollsAuth) rest(t *testing.T, user, method, path, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, p.base+"/api"+path, rd)
	req.Header.Set("Content-Type", "application/json")
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+token(t, user, time.Hour))
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestPollsAuth: the example app's rules with tokens on, for two users who
// own different questions, on both surfaces, and the events of a question
// being unpublished and published again, for its choices too.
func TestPollsAuth(t *testing.T) {
	p := startPollsAuth(t)
	// Only authenticated users create; the owner is the token's subject.
	if st, body := p.rest(t, "", "POST", "/questions/", `{"question_text":"anon?"}`); st != 401 {
		t.Fatalf("anonymous create: %d %s", st, body)
	}
	st, body := p.rest(t, "alice", "POST", "/questions/", `{"question_text":"Alice's?","owner":"mallory"}`)
	if st != 201 || !strings.Contains(body, `"owner":"alice"`) || !strings.Contains(body, `"published":true`) {
		t.Fatalf("alice's create: %d %s", st, body)
	}
	st, body = p.rest(t, "bob", "POST", "/questions/", `{"question_text":"Bob's draft","published":false}`)
	if st != 201 || !strings.Contains(body, `"owner":"bob"`) {
		t.Fatalf("bob's create: %d %s", st, body)
	}
	// Choices: only the question's owner adds them.
	if st, body := p.rest(t, "bob", "POST", "/choices/", `{"question":1,"choice_text":"no"}`); st != 403 {
		t.Fatalf("bob adding a choice to alice's question: %d %s", st, body)
	}
	if st, body := p.rest(t, "alice", "POST", "/choices/", `{"question":1,"choice_text":"yes"}`); st != 201 {
		t.Fatalf("alice's choice: %d %s", st, body)
	}
	if st, body := p.rest(t, "bob", "POST", "/choices/", `{"question":2,"choice_text":"maybe"}`); st != 201 {
		t.Fatalf("bob's choice: %d %s", st, body)
	}
	// A choice's question cannot be changed: bob cannot move alice's choice
	// to his own question and so take it over.
	if st, body := p.rest(t, "bob", "PATCH", "/choices/1/", `{"question":2}`); st != 400 && st != 403 {
		t.Fatalf("bob moving alice's choice: %d %s", st, body)
	}
	if st, body := p.rest(t, "alice", "PATCH", "/choices/1/", `{"question":2}`); st != 400 || !strings.Contains(body, "cannot be changed") {
		t.Fatalf("alice moving her choice: %d %s", st, body)
	}
	// Bob's unpublished question and its choice: his alone.
	for _, c := range []struct {
		user, path string
		status     int
	}{
		{"", "/questions/2/", 404}, {"alice", "/questions/2/", 404}, {"bob", "/questions/2/", 200},
		{"", "/choices/2/", 404}, {"alice", "/choices/2/", 404}, {"bob", "/choices/2/", 200},
		{"", "/questions/1/", 200}, {"bob", "/choices/1/", 200},
	} {
		if st, body := p.rest(t, c.user, "GET", c.path, ""); st != c.status {
			t.Errorf("%q GET %s: %d %s, want %d", c.user, c.path, st, body, c.status)
		}
	}
	if _, body := p.rest(t, "alice", "GET", "/questions/", ""); !strings.Contains(body, `"count":1`) {
		t.Errorf("alice's list: %s", body)
	}
	// Only the owner updates, deletes or unpublishes: 403 for a question
	// bob sees but does not own, 404 for one he does not see.
	if st, _ := p.rest(t, "bob", "PATCH", "/questions/1/", `{"published":false}`); st != 403 {
		t.Errorf("bob unpublishing alice's question: %d", st)
	}
	if st, _ := p.rest(t, "alice", "DELETE", "/questions/2/", ""); st != 404 {
		t.Errorf("alice deleting bob's draft: %d", st)
	}
	if st, _ := p.rest(t, "alice", "POST", "/choices/2/vote/", ""); st != 404 {
		t.Errorf("alice voting on the choice of bob's draft: %d", st)
	}
	if st, _ := p.rest(t, "", "POST", "/choices/1/vote/", ""); st != 401 {
		t.Errorf("an anonymous vote: %d", st)
	}

	// Events: bob and an anonymous client watch questions and choices
	// while alice unpublishes her question and publishes it again.
	ctx := tctx(t)
	bobWS, anon := p.dial(t, "bob"), p.dial(t, "")
	type watch struct{ qc, qu, qd, cc, cd *client.Subscription }
	subscribe := func(c *client.Client) watch {
		s := func(stream, action string) *client.Subscription {
			sub, err := c.Subscribe(ctx, stream, action, nil)
			if err != nil {
				t.Fatal(err)
			}
			return sub
		}
		return watch{s("questions", "create"), s("questions", "update"), s("questions", "delete"), s("choices", "create"), s("choices", "delete")}
	}
	wb, wa := subscribe(bobWS), subscribe(anon)
	alice := p.dial(t, "alice")
	do(t, alice, "questions", client.Payload{Action: "patch", PK: 1, Data: map[string]any{"published": false}}).want(t, 200, "[]")
	for name, w := range map[string]watch{"bob": wb, "anonymous": wa} {
		if ev := next(t, w.cd); ev.Action != "delete" || compact(ev.PK) != "1" {
			t.Errorf("%s: the choice of the unpublished question: %s", name, ev.Raw)
		}
		if ev := next(t, w.qd); ev.Action != "delete" || compact(ev.PK) != "1" {
			t.Errorf("%s: the unpublished question: %s", name, ev.Raw)
		}
	}
	do(t, alice, "questions", client.Payload{Action: "patch", PK: 1, Data: map[string]any{"published": true, "question_text": "Back?"}}).want(t, 200, "[]")
	for name, w := range map[string]watch{"bob": wb, "anonymous": wa} {
		if ev := next(t, w.cc); ev.Action != "create" || compact(ev.PK) != "1" {
			t.Errorf("%s: the choice of the republished question: %s", name, ev.Raw)
		}
		if ev := next(t, w.qc); ev.Action != "create" || !strings.Contains(string(ev.Data), "Back?") {
			t.Errorf("%s: the republished question: %s", name, ev.Raw)
		}
		none(t, w.qu, name+": no update for a question that was out of view")
	}
	// Bob's draft changes: nobody else hears of it.
	do(t, p.dial(t, "bob"), "questions", client.Payload{Action: "patch", PK: 2, Data: map[string]any{"question_text": "still a draft"}}).want(t, 200, "[]")
	do(t, alice, "questions", client.Payload{Action: "patch", PK: 1, Data: map[string]any{"question_text": "marker"}}).want(t, 200, "[]")
	if ev := next(t, wa.qu); compact(ev.PK) != "1" {
		t.Fatalf("anonymous saw %s before the marker", ev.Raw)
	}
	if ev := next(t, wb.qu); compact(ev.PK) != fmt.Sprint(2) {
		t.Fatalf("bob sees his own draft's update first: %s", ev.Raw)
	}
}
