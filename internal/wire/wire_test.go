package wire_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/internal/wire"
)

func TestDecodeRequest(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		req, err := wire.DecodeRequest([]byte(`{"stream":"questions","payload":{"action":"retrieve","pk":"1","data":{"a":1},"request_id":7}}`))
		if err != nil {
			t.Fatal(err)
		}
		if req.Stream != "questions" || req.Action != "retrieve" || string(req.PK) != `"1"` || string(req.Data) != `{"a":1}` || string(req.RequestID) != "7" {
			t.Fatalf("got %+v", req)
		}
	})
	t.Run("OptionalFieldsAbsentOrNull", func(t *testing.T) {
		req, err := wire.DecodeRequest([]byte(`{"stream":"s","payload":{"action":"list","pk":null,"data":null,"request_id":null}}`))
		if err != nil {
			t.Fatal(err)
		}
		if req.PK != nil || req.Data != nil || req.RequestID != nil {
			t.Fatalf("nulls should read as absent: %+v", req)
		}
	})
	bad := []struct {
		name, frame, msg, stream, action, rid string
	}{
		{"NotJSON", `{"stream":`, "Invalid frame: expected a JSON object.", "", "", ""},
		{"Array", `[1,2]`, "Invalid frame: expected a JSON object.", "", "", ""},
		{"NullFrame", `null`, "Invalid frame: expected a JSON object.", "", "", ""},
		{"NoStream", `{"payload":{"action":"list"}}`, `Invalid frame: "stream" is required.`, "", "", ""},
		{"StreamNumber", `{"stream":5,"payload":{"action":"list"}}`, `Invalid frame: "stream" must be a non-empty string.`, "", "", ""},
		{"StreamEmpty", `{"stream":"","payload":{"action":"list"}}`, `Invalid frame: "stream" must be a non-empty string.`, "", "", ""},
		{"NoPayload", `{"stream":"s"}`, `Invalid frame: "payload" is required.`, "s", "", ""},
		{"PayloadString", `{"stream":"s","payload":"x"}`, `Invalid frame: "payload" must be a JSON object.`, "s", "", ""},
		{"NoAction", `{"stream":"s","payload":{"request_id":"r"}}`, `Invalid frame: "payload.action" is required.`, "s", "", `"r"`},
		{"ActionNumber", `{"stream":"s","payload":{"action":3,"request_id":4}}`, `Invalid frame: "payload.action" must be a string.`, "s", "", "4"},
		{"RequestIDObject", `{"stream":"s","payload":{"action":"list","request_id":{}}}`, `Invalid frame: "payload.request_id" must be a string, number or null.`, "s", "", ""},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			req, err := wire.DecodeRequest([]byte(tc.frame))
			if err == nil {
				t.Fatal("want an error")
			}
			if got := wire.Status(err); got != 400 {
				t.Errorf("status %d, want 400", got)
			}
			if got := wire.Errors(err); len(got) != 1 || got[0] != tc.msg {
				t.Errorf("errors %v, want [%q]", got, tc.msg)
			}
			if req.Stream != tc.stream || req.Action != tc.action || string(req.RequestID) != tc.rid {
				t.Errorf("partial request %+v, want stream %q action %q rid %q", req, tc.stream, tc.action, tc.rid)
			}
		})
	}
}

func TestEncodeReply(t *testing.T) {
	t.Run("KeyOrderAndRequestIDVerbatim", func(t *testing.T) {
		for _, rid := range []string{`"some-guid"`, `42`, `-1.5e3`, ``} {
			req := &streamapi.Request{Stream: "questions", Action: "create", RequestID: json.RawMessage(rid)}
			if rid == "" {
				req.RequestID = nil
			}
			b, err := wire.EncodeReply(req, streamapi.Reply{Status: 201, Data: map[string]any{"id": 1}})
			if err != nil {
				t.Fatal(err)
			}
			want := `{"stream":"questions","payload":{"action":"create","data":{"id":1},"errors":[],"response_status":201,"request_id":` + orNull(rid) + `}}`
			if string(b) != want {
				t.Errorf("got  %s\nwant %s", b, want)
			}
		}
	})
	t.Run("Error", func(t *testing.T) {
		req := &streamapi.Request{Stream: "questions", Action: "retrieve", RequestID: json.RawMessage(`"r"`)}
		b, _ := wire.EncodeReply(req, streamapi.Reply{Status: 200, Data: "ignored", Err: streamapi.ErrNotFound})
		want := `{"stream":"questions","payload":{"action":"retrieve","data":null,"errors":["Not found."],"response_status":404,"request_id":"r"}}`
		if string(b) != want {
			t.Errorf("got  %s\nwant %s", b, want)
		}
	})
	t.Run("FieldErrors", func(t *testing.T) {
		errs := streamapi.FieldErrors{}
		errs.Add("question_text", "This field is required.")
		b, _ := wire.EncodeReply(&streamapi.Request{Stream: "q", Action: "create"}, streamapi.Reply{Err: errs.Err()})
		if !strings.Contains(string(b), `"errors":[{"question_text":["This field is required."]}],"response_status":400`) {
			t.Errorf("got %s", b)
		}
	})
	t.Run("UndecodableFrameHasNullStreamAndAction", func(t *testing.T) {
		b, _ := wire.EncodeReply(&streamapi.Request{}, streamapi.Reply{Err: streamapi.Errorf(streamapi.EINVALID, "bad")})
		want := `{"stream":null,"payload":{"action":null,"data":null,"errors":["bad"],"response_status":400,"request_id":null}}`
		if string(b) != want {
			t.Errorf("got  %s\nwant %s", b, want)
		}
	})
	t.Run("ForeignErrorIsInternalWithoutDetails", func(t *testing.T) {
		b, _ := wire.EncodeReply(&streamapi.Request{Stream: "q", Action: "list"}, streamapi.Reply{Err: errString("disk on fire at /var/x")})
		if !strings.Contains(string(b), `"errors":["Internal server error."],"response_status":500`) || strings.Contains(string(b), "disk") {
			t.Errorf("got %s", b)
		}
	})
	t.Run("UnencodableDataIsInternal", func(t *testing.T) {
		b, _ := wire.EncodeReply(&streamapi.Request{Stream: "q", Action: "list"}, streamapi.Reply{Data: func() {}})
		if !strings.Contains(string(b), `"response_status":500`) {
			t.Errorf("got %s", b)
		}
	})
}

type errString string

func (e errString) Error() string { return string(e) }

func orNull(s string) string {
	if s == "" {
		return "null"
	}
	return s
}

func TestStatus(t *testing.T) {
	for code, want := range map[string]int{
		streamapi.EINVALID: 400, streamapi.EUNKNOWNACTION: 400, streamapi.EUNAUTHORIZED: 401,
		streamapi.EFORBIDDEN: 403, streamapi.ENOTFOUND: 404, streamapi.ECONFLICT: 409,
		streamapi.ETOOMANY: 429, streamapi.EINTERNAL: 500, "made-up": 500,
	} {
		if got := wire.Status(&streamapi.Error{Code: code}); got != want {
			t.Errorf("%s: %d, want %d", code, got, want)
		}
	}
	if wire.Status(nil) != 200 {
		t.Error("nil should be 200")
	}
}

func TestEncodeEvent(t *testing.T) {
	c := &streamapi.Change{Model: "polls.question", Action: "update", PK: json.RawMessage(`1`), Data: json.RawMessage(`{"id":1,"question_text":"Q"}`)}
	f, err := wire.EncodeEvent("questions", c)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"stream":"questions","payload":{"action":"update","data":{"id":1,"question_text":"Q"},"model":"polls.question","pk":1}}`
	if string(f.Bytes()) != want {
		t.Errorf("got  %s\nwant %s", f.Bytes(), want)
	}
}

func TestEncodeInstanceEvent(t *testing.T) {
	c := &streamapi.Change{Model: "polls.question", Action: "update", PK: json.RawMessage(`1`), Data: json.RawMessage(`{"id":1}`)}
	f, err := wire.EncodeInstanceEvent("questions", c)
	if err != nil {
		t.Fatal(err)
	}
	f.Mid = []byte(`"sub-1"`)
	want := `{"stream":"questions","payload":{"action":"update","data":{"id":1},"errors":[],"response_status":200,"request_id":"sub-1"}}`
	if string(f.Bytes()) != want {
		t.Errorf("got  %s\nwant %s", f.Bytes(), want)
	}
	var v map[string]any
	if err := json.Unmarshal(f.Bytes(), &v); err != nil {
		t.Fatalf("spliced frame is not JSON: %v", err)
	}

	c.Action = "delete"
	f, _ = wire.EncodeInstanceEvent("questions", c)
	f.Mid = []byte(`7`)
	want = `{"stream":"questions","payload":{"action":"delete","data":{"pk":1},"errors":[],"response_status":200,"request_id":7}}`
	if string(f.Bytes()) != want {
		t.Errorf("got  %s\nwant %s", f.Bytes(), want)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"stream":"q","payload":{"action":"list","request_id":1}}`))
	f.Add([]byte(`{"stream":"q","payload":{"action":"retrieve","pk":"1"}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, frame []byte) {
		req, err := wire.DecodeRequest(frame)
		b, encErr := wire.EncodeReply(&req, streamapi.Reply{Err: err})
		if encErr != nil {
			t.Fatalf("reply to %q could not be encoded: %v", frame, encErr)
		}
		if !json.Valid(b) {
			t.Fatalf("reply to %q is not JSON: %s", frame, b)
		}
	})
}

// Element messages go out nested under their field, in place of the
// field's own messages, with the other fields beside them.
func TestErrors_Items(t *testing.T) {
	err := &streamapi.Error{
		Code:   streamapi.EINVALID,
		Fields: map[string][]string{"name": {"This field is required."}, "labels": {"hidden by the items"}},
		Items:  map[string]map[string][]string{"labels": {"1": {"Ensure this field has no more than 30 characters."}}},
	}
	b, jerr := json.Marshal(wire.Errors(err))
	if jerr != nil {
		t.Fatal(jerr)
	}
	if want := `[{"labels":{"1":["Ensure this field has no more than 30 characters."]},"name":["This field is required."]}]`; string(b) != want {
		t.Fatalf("errors %s, want %s", b, want)
	}
	if got, want := err.Error(), "streamapi: invalid: labels[1]: Ensure this field has no more than 30 characters.; name: This field is required."; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
}
