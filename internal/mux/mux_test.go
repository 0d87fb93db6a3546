package mux_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/internal/hub"
	"github.com/streamapi/streamapi/internal/mux"
)

// fakeResource answers every Serve with rep, and knows objects 1 and 2.
type fakeResource struct {
	rep    streamapi.Reply
	denied bool
}

func (f *fakeResource) Stream() string          { return "things" }
func (f *fakeResource) Model() string           { return "t.thing" }
func (f *fakeResource) Init(streamapi.Defaults) {}
func (f *fakeResource) Serve(context.Context, *streamapi.Request) streamapi.Reply {
	return f.rep
}
func (f *fakeResource) Authorize(_ context.Context, u *streamapi.User, _ string, _ any) error {
	if f.denied {
		return streamapi.PermissionDenied(u)
	}
	return nil
}
func (f *fakeResource) ParsePK(raw json.RawMessage) (any, error) {
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil {
		return nil, streamapi.ErrNotFound
	}
	return n, nil
}
func (f *fakeResource) Offers(string) bool                    { return true }
func (f *fakeResource) CustomActions() []streamapi.ActionInfo { return nil }
func (f *fakeResource) ListPage(context.Context, *streamapi.Request, map[string][]string) (streamapi.Page, error) {
	return streamapi.Page{}, nil
}
func (f *fakeResource) Exists(_ context.Context, pk any) (bool, error) {
	return pk == int64(1) || pk == int64(2), nil
}

// peer records frames; on each Send it also notes how many subscriptions
// the hub held at that moment.
type peer struct {
	mu     sync.Mutex
	h      *hub.Hub
	frames []string
	subsAt []int
}

func (p *peer) Send(f streamapi.Frame) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frames = append(p.frames, string(f.Bytes()))
	p.subsAt = append(p.subsAt, p.h.Subscriptions(p))
}
func (p *peer) User() *streamapi.User   { return nil }
func (p *peer) SetUser(*streamapi.User) {}

func setup(rep streamapi.Reply) (*mux.Mux, *hub.Hub, *peer, *fakeResource, *bytes.Buffer) {
	var logs bytes.Buffer
	h := hub.New(nil)
	h.Bind("t.thing", "things")
	res := &fakeResource{rep: rep}
	m := mux.New(map[string]streamapi.Resource{"things": res}, h, nil, slog.New(slog.NewTextHandler(&logs, nil)))
	return m, h, &peer{h: h}, res, &logs
}

func TestHandle_SubscribeTakesEffectAfterItsReply(t *testing.T) {
	m, h, p, _, _ := setup(streamapi.Reply{})
	ctx := context.Background()
	m.Handle(ctx, p, []byte(`{"stream":"things","payload":{"action":"subscribe","data":{"action":"update"},"request_id":1}}`))
	m.Handle(ctx, p, []byte(`{"stream":"things","payload":{"action":"subscribe_instance","pk":1,"request_id":2}}`))
	m.Handle(ctx, p, []byte(`{"stream":"things","payload":{"action":"unsubscribe","data":{"action":"update"},"request_id":3}}`))
	m.Handle(ctx, p, []byte(`{"stream":"things","payload":{"action":"unsubscribe_instance","pk":1,"request_id":4}}`))
	// When each reply was queued: 0 subscriptions (subscribe not yet in
	// effect), 1 (the instance one not yet), 1 (unsubscribe already in
	// effect), 0.
	if got := mustJSON(p.subsAt); got != "[0,1,1,0]" {
		t.Fatalf("subscriptions when each reply was sent: %s (frames %q)", got, p.frames)
	}
	if h.Subscriptions(p) != 0 {
		t.Fatal("subscriptions left")
	}
}

func TestHandle_DeniedSubscriptionRegistersNothing(t *testing.T) {
	m, h, p, res, _ := setup(streamapi.Reply{})
	res.denied = true
	m.Handle(context.Background(), p, []byte(`{"stream":"things","payload":{"action":"subscribe","data":{"action":"create"}}}`))
	m.Handle(context.Background(), p, []byte(`{"stream":"things","payload":{"action":"subscribe_instance","pk":1}}`))
	if h.Subscriptions(p) != 0 {
		t.Fatal("a denied subscription was registered")
	}
	for _, f := range p.frames {
		if !strings.Contains(f, `"response_status":401`) {
			t.Errorf("frame %s, want 401", f)
		}
	}
}

func TestHandle_InternalErrorsAreLoggedNotShown(t *testing.T) {
	m, _, p, _, logs := setup(streamapi.Reply{Err: errors.New("pq: password for db01.internal rejected")})
	m.Handle(context.Background(), p, []byte(`{"stream":"things","payload":{"action":"list","request_id":"x"}}`))
	want := `{"stream":"things","payload":{"action":"list","data":null,"errors":["Internal server error."],"response_status":500,"request_id":"x"}}`
	if len(p.frames) != 1 || p.frames[0] != want {
		t.Fatalf("frames %q, want %s", p.frames, want)
	}
	if !strings.Contains(logs.String(), "db01.internal") {
		t.Fatalf("the internal error was not logged: %q", logs.String())
	}
}

func TestHandle_UnencodableDataIs500(t *testing.T) {
	m, _, p, _, _ := setup(streamapi.Reply{Status: 200, Data: map[string]any{"f": func() {}}})
	m.Handle(context.Background(), p, []byte(`{"stream":"things","payload":{"action":"list"}}`))
	if len(p.frames) != 1 || !strings.Contains(p.frames[0], `"response_status":500`) {
		t.Fatalf("frames %q", p.frames)
	}
}

func TestHandle_ExactlyOneReplyPerFrame(t *testing.T) {
	m, _, p, _, _ := setup(streamapi.Reply{Status: 200, Data: []int{}})
	frames := []string{
		``, `{}`, `null`, `{"stream":"x"}`, `{"stream":"things","payload":{"action":"list"}}`,
		`{"stream":"things","payload":{"action":"subscribe"}}`, `{"stream":"things","payload":{"action":"subscribe_instance","pk":"zz"}}`,
		`{"stream":"things","payload":{"action":"subscribe_instance","pk":9}}`,
	}
	for _, f := range frames {
		m.Handle(context.Background(), p, []byte(f))
	}
	if len(p.frames) != len(frames) {
		t.Fatalf("%d replies to %d frames", len(p.frames), len(frames))
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
