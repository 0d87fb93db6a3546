package streamapi_test

import (
	"encoding/json"
	"testing"

	"github.com/streamapi/streamapi"
)

// TestAsSeen is the original's group logic, case by case.
func TestAsSeen(t *testing.T) {
	before, after := json.RawMessage(`{"v":"before"}`), json.RawMessage(`{"v":"after"}`)
	cases := []struct {
		action        string
		was, is       bool
		ok            bool
		action2, data string
	}{
		{"create", false, true, true, "create", `{"v":"after"}`},
		{"create", false, false, false, "", ""},
		{"update", true, true, true, "update", `{"v":"after"}`},
		{"update", false, true, true, "create", `{"v":"after"}`},
		{"update", true, false, true, "delete", `{"v":"before"}`},
		{"update", false, false, false, "", ""},
		{"delete", true, false, true, "delete", `{"v":"before"}`},
		{"delete", false, false, false, "", ""},
	}
	for _, c := range cases {
		ch := streamapi.Change{Action: c.action, Data: after}
		if c.action == "update" {
			ch.Before = before
		}
		if c.action == "delete" {
			ch.Data = before
		}
		got, ok := streamapi.AsSeen(ch, c.was, c.is)
		if ok != c.ok || ok && (got.Action != c.action2 || string(got.Data) != c.data || got.Before != nil && got.Action != "update") {
			t.Errorf("%s seen before %v, after %v: %+v, %v; want %s %s, %v", c.action, c.was, c.is, got, ok, c.action2, c.data, c.ok)
		}
	}
}
