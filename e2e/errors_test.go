package e2e_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/client"
	"github.com/streamapi/streamapi/resource"
	"github.com/streamapi/streamapi/server"
)

func TestErrors_NotFoundAndWrongPK(t *testing.T) {
	e := start(t)
	c := e.dial("")
	for _, pk := range []any{999, "999", "abc", 1.5, "1.5", true, map[string]any{"a": 1}, []int{1}, "99999999999999999999999"} {
		for _, action := range []string{"retrieve", "update", "patch", "delete"} {
			do(t, c, "questions", client.Payload{Action: action, PK: pk, Data: map[string]any{"question_text": "x"}}).want(t, 404, `["Not found."]`)
		}
	}
	// No pk at all.
	do(t, c, "questions", client.Payload{Action: "retrieve"}).want(t, 404, `["Not found."]`)
}

func TestErrors_InvalidAction(t *testing.T) {
	e := start(t)
	c := e.dial("")
	for _, a := range []string{"destroy", "", "CREATE", "subscribe_all"} {
		do(t, c, "questions", client.Payload{Action: a}).want(t, 400, `["Invalid Action"]`)
	}
}

func TestErrors_Permissions(t *testing.T) {
	e := start(t)
	anon, alice := e.dial(""), e.dial("alice")
	do(t, anon, "notes", client.Payload{Action: "create", Data: map[string]any{"text": "x"}}).want(t, 401, `["Permission Denied"]`)
	do(t, anon, "notes", client.Payload{Action: "list"}).want(t, 200, "[]")
	n := do(t, alice, "notes", client.Payload{Action: "create", Data: map[string]any{"text": "x"}})
	n.want(t, 201, "[]")
	// Permission is checked before existence: a 401 tells nothing of the pk.
	do(t, anon, "notes", client.Payload{Action: "delete", PK: 424242}).want(t, 401, `["Permission Denied"]`)

	// A global default, overridden per resource.
	e = start(t, func(s *server.Config, _ *resource.Config[Note]) {
		s.Permission = streamapi.IsAuthenticated
	})
	anon, alice = e.dial(""), e.dial("alice")
	do(t, anon, "questions", client.Payload{Action: "list"}).want(t, 401, `["Permission Denied"]`)
	do(t, anon, "questions", client.Payload{Action: "subscribe", Data: map[string]any{"action": "create"}}).want(t, 401, `["Permission Denied"]`)
	do(t, alice, "questions", client.Payload{Action: "list"}).want(t, 200, "[]")
	do(t, anon, "notes", client.Payload{Action: "list"}).want(t, 200, "[]") // the resource's own permission wins

	// 403 for an authenticated user the permission refuses.
	e = start(t, func(s *server.Config, _ *resource.Config[Note]) {
		s.Permission = streamapi.PermissionFunc(func(_ context.Context, u *streamapi.User, action string, pk any) bool {
			return action == "list" || pk == int64(1)
		})
	})
	alice = e.dial("alice")
	do(t, alice, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "x"}}).want(t, 403, `["Permission Denied"]`)
	do(t, alice, "questions", client.Payload{Action: "retrieve", PK: 2}).want(t, 403, `["Permission Denied"]`)
	// The permission sees the parsed pk (int64 1, whether sent as 1 or "1").
	do(t, alice, "questions", client.Payload{Action: "retrieve", PK: "1"}).want(t, 404, `["Not found."]`)
}

func TestErrors_AuthenticatorRefusesHandshake(t *testing.T) {
	e := start(t)
	_, resp, err := websocket.Dial(tctx(t), e.ws+"?user=mallory", nil)
	if err == nil {
		t.Fatal("handshake accepted")
	}
	if resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("handshake: %v (response %v), want 401", err, resp)
	}
}

func TestErrors_SubscribeWithoutAction(t *testing.T) {
	e := start(t)
	c := e.dial("")
	do(t, c, "questions", client.Payload{Action: "subscribe"}).want(t, 400, `["action required"]`)
	do(t, c, "questions", client.Payload{Action: "subscribe", Data: map[string]any{}}).want(t, 400, `["action required"]`)
	do(t, c, "questions", client.Payload{Action: "subscribe", Data: map[string]any{"pk": 1}}).want(t, 400, `["action required"]`)
	do(t, c, "questions", client.Payload{Action: "subscribe", Data: map[string]any{"action": "explode"}}).want(t, 400, `[{"action":["\"explode\" is not a valid choice."]}]`)
	do(t, c, "questions", client.Payload{Action: "subscribe", Data: "update"}).want(t, 400, `[{"data":["Expected a dictionary with a string \"action\"."]}]`)
}

func TestErrors_MalformedFramesKeepTheConnection(t *testing.T) {
	e := start(t)
	c := e.dial("")
	cases := []struct {
		frame, status, stream, errs string
	}{
		{`not json`, "400", "null", `["Invalid frame: expected a JSON object."]`},
		{`[1,2]`, "400", "null", `["Invalid frame: expected a JSON object."]`},
		{`"hello"`, "400", "null", `["Invalid frame: expected a JSON object."]`},
		{`{"payload":{"action":"list"}}`, "400", "null", `["Invalid frame: \"stream\" is required."]`},
		{`{"stream":5,"payload":{"action":"list"}}`, "400", "null", `["Invalid frame: \"stream\" must be a non-empty string."]`},
		{`{"stream":"","payload":{"action":"list"}}`, "400", "null", `["Invalid frame: \"stream\" must be a non-empty string."]`},
		{`{"stream":"questions"}`, "400", `"questions"`, `["Invalid frame: \"payload\" is required."]`},
		{`{"stream":"questions","payload":[]}`, "400", `"questions"`, `["Invalid frame: \"payload\" must be a JSON object."]`},
		{`{"stream":"questions","payload":{}}`, "400", `"questions"`, `["Invalid frame: \"payload.action\" is required."]`},
		{`{"stream":"questions","payload":{"action":7}}`, "400", `"questions"`, `["Invalid frame: \"payload.action\" must be a string."]`},
		{`{"stream":"questions","payload":{"action":"list","request_id":{"a":1}}}`, "400", `"questions"`, `["Invalid frame: \"payload.request_id\" must be a string, number or null."]`},
		{`{"stream":"nope","payload":{"action":"list"}}`, "404", `"nope"`, `["Unknown stream \"nope\"."]`},
		{`{"stream":"questions","payload":{"action":"list","data":{"page":`, "400", "null", `["Invalid frame: expected a JSON object."]`},
	}
	for _, tc := range cases {
		p := rawReply(t, c, tc.frame)
		if string(p["response_status"]) != tc.status || string(p["stream"]) != tc.stream || compact(p["errors"]) != tc.errs || string(p["data"]) != "null" {
			t.Errorf("%s:\n got status %s stream %s errors %s data %s\nwant status %s stream %s errors %s", tc.frame,
				p["response_status"], p["stream"], compact(p["errors"]), p["data"], tc.status, tc.stream, tc.errs)
		}
	}
	// Still usable.
	do(t, c, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "still here"}}).want(t, 201, "[]")
	// Invalid UTF-8 in a text frame is a protocol error (1007).
	if err := c.SendRaw(tctx(t), []byte("{\"stream\":\"\xff\"}")); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, c)
	if got := c.CloseStatus(); got != websocket.StatusInvalidFramePayloadData {
		t.Errorf("invalid UTF-8: close status %v, want 1007", got)
	}
}

func TestErrors_FrameTooBigCloses1009(t *testing.T) {
	e := start(t, func(s *server.Config, _ *resource.Config[Note]) { s.Conn.MaxFrameBytes = 1024 })
	c := e.dial("")
	// At the limit: served.
	text := strings.Repeat("x", 1024-len(`{"stream":"questions","payload":{"action":"create","data":{"question_text":""}}}`))
	p := rawReply(t, c, `{"stream":"questions","payload":{"action":"create","data":{"question_text":"`+text+`"}}}`)
	if string(p["response_status"]) != "400" { // over 200 characters: a validation error, but served
		t.Fatalf("frame at the limit: %v", p)
	}
	if err := c.SendRaw(tctx(t), []byte(`{"stream":"questions","payload":{"action":"create","data":{"question_text":"`+strings.Repeat("x", 2000)+`"}}}`)); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, c)
	if got := c.CloseStatus(); got != websocket.StatusMessageTooBig {
		t.Fatalf("close status %v (%v), want 1009", got, c.Err())
	}
	eventually(t, "the server to forget the connection", func() bool { return e.srv.Connections() == 0 })
}

func waitClosed(t *testing.T, c *client.Client) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection still open")
	}
}
