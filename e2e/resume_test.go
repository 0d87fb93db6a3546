package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/client"
	"github.com/streamapi/streamapi/resource"
	"github.com/streamapi/streamapi/server"
	"github.com/streamapi/streamapi/store/sqlstore"
)

// createQ creates a question over c and returns its id.
func createQ(t *testing.T, c *client.Client, text string) int64 {
	t.Helper()
	r := do(t, c, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": text, "pub_date": "2026-11-29T10:00:00Z"}})
	r.want(t, 201, "[]")
	return r.id(t)
}

func TestResume_MissedThenLive(t *testing.T) {
	e := start(t)
	w := e.dial("")
	ctx := tctx(t)

	a := e.dial("")
	sub, err := a.Subscribe(ctx, "questions", "create", nil)
	if err != nil {
		t.Fatal(err)
	}
	if sub.Seq != 0 {
		t.Fatalf("a subscription on an empty log starts at seq %d, want 0", sub.Seq)
	}
	q1 := createQ(t, w, "one")
	ev := next(t, sub)
	if ev.Seq != 1 || compact(ev.PK) != fmtID(q1) {
		t.Fatalf("first event %s, want seq 1", ev.Raw)
	}
	a.Close()

	// Missed while away: two creates and an update (which a create
	// subscription does not see).
	q2 := createQ(t, w, "two")
	do(t, w, "questions", client.Payload{Action: "patch", PK: q1, Data: map[string]any{"question_text": "one!"}}).want(t, 200, "[]")
	q3 := createQ(t, w, "three")

	b := e.dial("")
	sub, err = b.SubscribeSince(ctx, "questions", "create", nil, ev.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if sub.Seq != 4 {
		t.Errorf("resumed subscription starts at %d, want 4 (the last change delivered)", sub.Seq)
	}
	for _, want := range []struct {
		id  int64
		seq int64
	}{{q2, 2}, {q3, 4}} {
		ev := next(t, sub)
		if ev.Action != "create" || compact(ev.PK) != fmtID(want.id) || ev.Seq != want.seq {
			t.Fatalf("replayed %s, want the create of %d with seq %d", ev.Raw, want.id, want.seq)
		}
	}
	q4 := createQ(t, w, "four")
	if ev := next(t, sub); compact(ev.PK) != fmtID(q4) || ev.Seq != 5 {
		t.Fatalf("live event %s, want the create of %d with seq 5", ev.Raw, q4)
	}
	none(t, sub, "after the live event")

	// A pk-scoped update subscription replays only that object's updates.
	c := e.dial("")
	upd, err := c.SubscribeSince(ctx, "questions", "update", q1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, upd); ev.Seq != 3 || ev.Action != "update" {
		t.Fatalf("replayed update %s, want seq 3", ev.Raw)
	}
	none(t, upd, "one update of q1 was made")
}

// TestResume_Seam resumes again and again while a writer writes: every
// resumed subscriber sees each seq after its since exactly once, in order,
// across the seam between replay and live delivery.
func TestResume_Seam(t *testing.T) {
	e := start(t, func(s *server.Config, _ *resource.Config[Note]) { s.Log.ResumeLimit = 10000; s.Conn.MaxQueue = 40000 })
	w := e.dial("")
	const total = 300
	var last int64
	done := make(chan struct{})
	var mu sync.Mutex
	go func() {
		defer close(done)
		for i := 0; i < total; i++ {
			r, err := w.Request(context.Background(), "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": fmt.Sprint("q", i), "pub_date": "2026-11-29T10:00:00Z"}})
			if err != nil || r.Status != 201 {
				t.Errorf("create %d: %v %v", i, err, r)
				return
			}
			mu.Lock()
			last = int64(i + 1)
			mu.Unlock()
		}
	}()
	type result struct {
		since int64
		seqs  []int64
		err   error
	}
	results := make(chan result, 20)
	var wg sync.WaitGroup
	for k := 0; k < 20; k++ {
		time.Sleep(time.Duration(k%4) * 5 * time.Millisecond)
		mu.Lock()
		since := last / 2
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := result{since: since}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := client.Dial(ctx, e.ws, &client.Options{EventBuffer: total + 10})
			if err != nil {
				r.err = err
				results <- r
				return
			}
			defer c.Close()
			sub, err := c.SubscribeSince(ctx, "questions", "create", nil, since)
			if err != nil {
				r.err = err
				results <- r
				return
			}
			for len(r.seqs) == 0 || r.seqs[len(r.seqs)-1] < total {
				select {
				case ev := <-sub.C:
					r.seqs = append(r.seqs, ev.Seq)
				case <-ctx.Done():
					r.err = errors.New("timed out before the last write's event")
					results <- r
					return
				}
			}
			results <- r
		}()
	}
	wg.Wait()
	<-done
	close(results)
	for r := range results {
		if r.err != nil {
			t.Fatalf("since %d: %v", r.since, r.err)
		}
		want := r.since + 1
		for _, s := range r.seqs {
			if s != want {
				t.Fatalf("since %d: got seq %d where %d was due (events %v)", r.since, s, want, r.seqs)
			}
			want++
		}
		if want != total+1 {
			t.Fatalf("since %d: ended at %d", r.since, want-1)
		}
	}
}

func TestResume_Refusals(t *testing.T) {
	e := start(t)
	w := e.dial("")
	createQ(t, w, "one")
	createQ(t, w, "two")
	c := e.dial("")
	sub := func(data map[string]any) reply {
		return do(t, c, "questions", client.Payload{Action: "subscribe", Data: data})
	}
	// Ahead of the log: this history never had it.
	sub(map[string]any{"action": "create", "since": 3}).want(t, 410, `["resync required"]`)
	sub(map[string]any{"action": "create", "since": 2}).want(t, 200, "[]")
	for _, bad := range []any{"x", -1, 1.5, true, map[string]any{}} {
		sub(map[string]any{"action": "create", "since": bad}).want(t, 400, `[{"since":["A valid integer is required."]}]`)
	}
	do(t, c, "questions", client.Payload{Action: "subscribe_instance", PK: 1, Data: map[string]any{"since": "x"}}).want(t, 400, `[{"since":["A valid integer is required."]}]`)

	// Trimmed: what followed seq 0 is gone (SQLite keeps the newest
	// change, seq 2); resuming from the last seq kept still works.
	if _, err := e.db.Trim(context.Background(), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	first, _, err := e.db.Bounds(context.Background(), "polls.question")
	if err != nil || first != 2 {
		t.Fatalf("after the trim the log starts at %d (%v), want 2", first, err)
	}
	sub(map[string]any{"action": "update", "since": 0}).want(t, 410, `["resync required"]`)
	do(t, c, "questions", client.Payload{Action: "subscribe_instance", PK: 1, Data: map[string]any{"since": 0}}).want(t, 410, `["resync required"]`)
	sub(map[string]any{"action": "update", "since": 1}).want(t, 200, "[]")
	_, err = c.SubscribeSince(tctx(t), "questions", "delete", nil, 0)
	var se *client.StatusError
	if !errors.As(err, &se) || se.Status != 410 {
		t.Fatalf("SubscribeSince past the log: %v, want a 410 StatusError", err)
	}
}

func TestResume_TooFarBehind(t *testing.T) {
	e := start(t, func(s *server.Config, _ *resource.Config[Note]) { s.Log.ResumeLimit = 3 })
	w := e.dial("")
	for i := 0; i < 5; i++ {
		createQ(t, w, fmt.Sprint("q", i))
	}
	c := e.dial("")
	// Five creates missed, at most three replayed: resync. Updates: none
	// missed, fine.
	do(t, c, "questions", client.Payload{Action: "subscribe", Data: map[string]any{"action": "create", "since": 0}}).want(t, 410, `["resync required"]`)
	do(t, c, "questions", client.Payload{Action: "subscribe", Data: map[string]any{"action": "create", "since": 2}}).want(t, 200, "[]")
	do(t, c, "questions", client.Payload{Action: "subscribe", Data: map[string]any{"action": "update", "since": 0}}).want(t, 200, "[]")
}

func TestResume_Instance(t *testing.T) {
	e := start(t)
	w := e.dial("")
	ctx := tctx(t)
	id := createQ(t, w, "one")
	other := createQ(t, w, "two")
	do(t, w, "questions", client.Payload{Action: "patch", PK: id, Data: map[string]any{"question_text": "a"}})
	do(t, w, "questions", client.Payload{Action: "patch", PK: other, Data: map[string]any{"question_text": "b"}})
	do(t, w, "questions", client.Payload{Action: "delete", PK: id})

	// The object is gone, but a resume from before its delete still
	// subscribes and replays its update and delete, with this request_id.
	c := e.dial("")
	sub, err := c.SubscribeInstanceSince(ctx, "questions", id, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		action string
		seq    int64
	}{{"update", 3}, {"delete", 5}} {
		ev := next(t, sub)
		if ev.Action != want.action || ev.Seq != want.seq || len(ev.RequestID) == 0 {
			t.Fatalf("replayed %s, want %s seq %d with the request_id", ev.Raw, want.action, want.seq)
		}
	}
	none(t, sub, "after the delete")
	// Without since, a deleted object is still a 404.
	do(t, c, "questions", client.Payload{Action: "subscribe_instance", PK: id}).want(t, 404, `["Not found."]`)
}

// A DCRF subscriber that has seen no event resumes from its 201 reply's
// seq (beside data null, before request_id): nothing from before it,
// everything after.
func TestResume_InstanceFromItsReply(t *testing.T) {
	e := start(t)
	w := e.dial("")
	ctx := tctx(t)
	id := createQ(t, w, "one")
	do(t, w, "questions", client.Payload{Action: "patch", PK: id, Data: map[string]any{"question_text": "before"}})
	c := e.dial("")
	r := do(t, c, "questions", client.Payload{Action: "subscribe_instance", PK: id, RequestID: "i1"})
	r.want(t, 201, "[]")
	if want := `{"stream":"questions","payload":{"action":"subscribe_instance","data":null,"errors":[],"response_status":201,"seq":2,"request_id":"i1"}}`; string(r.Raw) != want {
		t.Fatalf("reply %s\nwant %s", r.Raw, want)
	}
	c.Close()
	do(t, w, "questions", client.Payload{Action: "patch", PK: id, Data: map[string]any{"question_text": "while away"}})

	c = e.dial("")
	sub, err := c.SubscribeInstanceSince(ctx, "questions", id, r.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, sub); ev.Seq != 3 || !strings.Contains(string(ev.Data), "while away") {
		t.Fatalf("replayed %s, want seq 3, the patch made while away", ev.Raw)
	}
	none(t, sub, "after the replay")
	if sub.Seq != 3 {
		t.Fatalf("Subscription.Seq %d, want 3 (the reply's)", sub.Seq)
	}
}

func TestResume_WithoutChangeLog(t *testing.T) {
	e := start(t, func(s *server.Config, _ *resource.Config[Note]) { s.ChangeLog = nil })
	c := e.dial("")
	do(t, c, "questions", client.Payload{Action: "subscribe", Data: map[string]any{"action": "create", "since": 0}}).want(t, 410, `["resync required"]`)
	r := do(t, c, "questions", client.Payload{Action: "subscribe", Data: map[string]any{"action": "create"}})
	r.want(t, 200, "[]")
	if compact(r.Data) != `{"action":"create"}` {
		t.Fatalf("subscribe reply without a log %s, want no seq", r.Data)
	}
}

// lostPublisher stands for a node that crashed between commit and publish:
// it publishes nothing.
type lostPublisher struct{}

func (lostPublisher) Publish(context.Context, ...streamapi.Change) error {
	return errors.New("crashed")
}

// TestOutbox_PublishLost: a change committed but never published still
// reaches subscribers, from the change log. Without the log it is lost:
// the control shows the test can fail.
func TestOutbox_PublishLost(t *testing.T) {
	for _, withLog := range []bool{true, false} {
		t.Run(fmt.Sprint("log=", withLog), func(t *testing.T) {
			e := startWith(t, func(o *sqlstore.Options) {
				o.Publisher = lostPublisher{}
				o.NoChangeLog = !withLog
			}, func(s *server.Config, _ *resource.Config[Note]) {
				s.Log.PollInterval = 20 * time.Millisecond
				if !withLog {
					s.ChangeLog = nil
				}
			})
			c := e.dial("")
			sub, err := c.Subscribe(tctx(t), "questions", "create", nil)
			if err != nil {
				t.Fatal(err)
			}
			id := createQ(t, e.dial(""), "committed, never published")
			select {
			case ev := <-sub.C:
				if !withLog {
					t.Fatalf("without a change log an unpublished change arrived: %s", ev.Raw)
				}
				if compact(ev.PK) != fmtID(id) || ev.Seq != 1 {
					t.Fatalf("event %s", ev.Raw)
				}
			case <-time.After(time.Second):
				if withLog {
					t.Fatal("the committed change was not delivered from the log within 1 s")
				}
			}
		})
	}
}
