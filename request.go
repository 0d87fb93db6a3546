package streamapi

import "encoding/json"

// Action names on the wire.
const (
	ActionCreate              = "create"
	ActionRetrieve            = "retrieve"
	ActionUpdate              = "update"
	ActionPatch               = "patch"
	ActionDelete              = "delete"
	ActionList                = "list"
	ActionSubscribe           = "subscribe"
	ActionUnsubscribe         = "unsubscribe"
	ActionSubscribeInstance   = "subscribe_instance"   // DCRF dialect
	ActionUnsubscribeInstance = "unsubscribe_instance" // DCRF dialect
)

// Request is one decoded request frame, whichever surface it came from.
// PK, Data and RequestID keep their raw JSON; a missing one is nil.
type Request struct {
	Stream    string
	Action    string
	PK        json.RawMessage
	Data      json.RawMessage
	RequestID json.RawMessage
	User      *User
}

// Reply is a resource's answer to a Request. When Err is set, Status and
// Data are ignored: the surface derives the status from the error's code and
// sends data null. A zero Status means 200.
type Reply struct {
	Status int
	Data   any
	Err    error
	// Seq, when not 0, is sent as the payload's "seq", just before its
	// request_id: where a DCRF instance subscription starts (its data
	// stays null), so that a client that sees no event can still resume.
	Seq int64
}
