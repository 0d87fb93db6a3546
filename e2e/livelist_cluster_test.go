package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/streamapi/streamapi/client"
	"github.com/streamapi/streamapi/internal/testenv"
)

// TestLiveList_TwoNodes: live lists held on node A while four writers
// (three WebSocket connections and REST) change choices on node B, on
// PostgreSQL, through Redis and through NATS, with the log's polling off
// (events cross through the broker): at the end every list equals a
// fresh list of its query on either node, and each list's events came
// in seq order.
func TestLiveList_TwoNodes(t *testing.T) {
	for name, url := range brokers(t) {
		t.Run(name, func(t *testing.T) {
			dsn := testenv.Postgres(t)
			a := startNode(t, "A", dsn, url, "--change-poll", "1h")
			b := startNode(t, "B", dsn, url, "--change-poll", "1h")
			ca, cb := a.dial(t), b.dial(t)
			var questions, initial []int64
			for i := 0; i < 3; i++ {
				questions = append(questions, create(t, cb, "questions", map[string]any{"question_text": fmt.Sprint("q", i)}))
			}
			for i := 0; i < 12; i++ {
				initial = append(initial, create(t, cb, "choices", map[string]any{"question": questions[i%3], "choice_text": fmt.Sprint("c", i), "votes": i % 5}))
			}
			queries := []map[string]any{
				{"question": questions[0], "ordering": "-votes", "page_size": 3, "with_count": true},
				{"question__in": []int64{questions[1], questions[2]}, "votes__gte": 2, "ordering": "votes,-id", "page_size": 2, "with_count": true},
				{"ordering": "-id", "page_size": 4},
				{"votes__lt": 3, "ordering": "id", "page_size": 5, "with_count": true},
			}
			var lists []*client.LiveList
			for _, q := range queries {
				l, err := ca.LiveList(tctx(t), "choices", q)
				if err != nil {
					t.Fatal(err)
				}
				lists = append(lists, l)
			}
			// Each list's events, in arrival order, by seq.
			seqs := make([][]int64, len(lists))
			var wg sync.WaitGroup
			for i, l := range lists {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for ev := range l.C {
						seqs[i] = append(seqs[i], ev.Seq)
					}
				}()
			}
			var writers []*client.Client
			for i := 0; i < 3; i++ {
				writers = append(writers, b.dial(t))
			}
			p := &testenv.Polls{WS: b.ws(), Base: "http://" + b.addr}
			var ww sync.WaitGroup
			errs := make(chan error, 4)
			for w := 0; w < 4; w++ {
				ww.Add(1)
				go func() {
					defer ww.Done()
					if err := liveWriter(p, writers, w, questions, initial, uint64(w+1)); err != nil {
						errs <- err
					}
				}()
			}
			ww.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			for i, l := range lists {
				for _, c := range []*client.Client{ca, cb} {
					want, n := freshList(t, c, "choices", queries[i])
					eventually(t, fmt.Sprintf("list %v to match a fresh list", queries[i]), func() bool {
						got := l.Items()
						if len(got) != len(want) || queries[i]["with_count"] != nil && l.Count() != n {
							return false
						}
						for k := range got {
							if !sameJSON(got[k], want[k]) {
								return false
							}
						}
						return true
					})
				}
			}
			total := 0
			for _, l := range lists {
				if err := l.Close(tctx(t)); err != nil {
					t.Fatal(err)
				}
			}
			wg.Wait()
			for i := range seqs {
				for k := 1; k < len(seqs[i]); k++ {
					if seqs[i][k] < seqs[i][k-1] {
						t.Fatalf("list %d: seq %d after %d", i, seqs[i][k], seqs[i][k-1])
					}
				}
				total += len(seqs[i])
			}
			t.Logf("%s: 4 live lists on node A, 100 writes on node B: %d events, in seq order, and every list equal to a fresh list on both nodes", name, total)
		})
	}
}

// TestLiveList_SlowConsumer: a client holding 50 live lists that never
// reads is dropped (1008) when its queue overflows; 20 readers, each
// with a live list of the same query, are not, and each ends holding
// what a fresh list holds, having received every update in order.
func TestLiveList_SlowConsumer(t *testing.T) {
	e := start(t)
	ctx := tctx(t)
	w := e.dial("")
	q := create(t, w, "questions", map[string]any{"question_text": "slow?"})
	hot := create(t, w, "choices", map[string]any{"question": q, "choice_text": "hot", "votes": 0})
	create(t, w, "choices", map[string]any{"question": q, "choice_text": "cold", "votes": 0})
	query := map[string]any{"question": q, "ordering": "-votes", "page_size": 2, "with_count": true}
	slow, _, err := websocket.Dial(ctx, e.ws, &websocket.DialOptions{HTTPClient: stalledHTTP()})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.CloseNow()
	const lists = 50
	for i := 0; i < lists; i++ {
		frame := fmt.Sprintf(`{"stream":"choices","payload":{"action":"subscribe","request_id":%d,"data":{"action":"list","query":%s}}}`, i, mustJSON(query))
		if err := slow.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
			t.Fatal(err)
		}
	}
	const fast = 20
	readers := make([]*client.Client, fast)
	live := make([]*client.LiveList, fast)
	got := make([][]int64, fast)
	var wg sync.WaitGroup
	for k := range fast {
		readers[k] = e.dial("")
		l, err := readers[k].LiveList(ctx, "choices", query)
		if err != nil {
			t.Fatal(err)
		}
		live[k] = l
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ev := range l.C {
				var c struct{ Votes int64 }
				_ = json.Unmarshal(ev.Data, &c)
				got[k] = append(got[k], c.Votes)
			}
		}()
	}
	eventually(t, "all subscribed", func() bool { return e.srv.Subscriptions() == lists+fast })
	text := strings.Repeat("x", 150)
	sent := 0
	for e.srv.Subscribers() == fast+1 {
		if sent == 3000 {
			t.Fatal("the slow consumer was not dropped after 3000 writes")
		}
		if rep := do(t, w, "choices", client.Payload{Action: "patch", PK: hot, Data: map[string]any{"votes": sent + 1, "choice_text": text[:100+sent%50]}}); rep.Status != 200 {
			t.Fatalf("write %d: %d %s", sent, rep.Status, rep.Errors)
		}
		sent++
	}
	for i := 0; i < 5; i++ {
		do(t, w, "choices", client.Payload{Action: "patch", PK: hot, Data: map[string]any{"votes": sent + 1}})
		sent++
	}
	for k, l := range live {
		eventually(t, "every reader to receive every update", func() bool {
			return len(l.Items()) == 2 && readers[k].Err() == nil && l.Last() > 0 && func() bool {
				want, _ := freshList(t, readers[k], "choices", query)
				return sameJSON(l.Items()[0], want[0])
			}()
		})
	}
	for _, c := range readers {
		if c.Dropped() != 0 {
			t.Fatalf("a reader's own buffer dropped %d events", c.Dropped())
		}
		c.Close()
	}
	wg.Wait()
	for k := range got {
		if len(got[k]) != sent {
			t.Fatalf("reader %d received %d events, %d updates were made", k, len(got[k]), sent)
		}
		for i, v := range got[k] {
			if v != int64(i+1) {
				t.Fatalf("reader %d: event %d carries %d votes, want %d", k, i, v, i+1)
			}
		}
	}
	rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		if _, _, err := slow.Read(rctx); err != nil {
			if got := websocket.CloseStatus(err); got != websocket.StatusPolicyViolation {
				t.Fatalf("the slow client ended with %v (%v), want 1008", got, err)
			}
			break
		}
	}
	t.Logf("the stalled client with %d live lists was dropped after %d updates; %d readers received all, in order", lists, sent, fast)
}
