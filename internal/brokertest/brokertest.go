// Package brokertest is the conformance suite every streamapi.Broker
// passes: delivery by topic, in publish order, to every subscriber until it
// cancels, and clean failure after Close. Brokers that deliver
// asynchronously (Redis, NATS) pass it too: it waits for deliveries.
package brokertest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/streamapi/streamapi"
)

// Factory returns a new broker. Two calls may return two connections to the
// same bus (as two nodes would have): the suite checks that a change
// published on one reaches subscribers of the other.
type Factory func(t testing.TB) streamapi.Broker

// sink collects the changes a handler receives.
type sink struct {
	mu  sync.Mutex
	got []streamapi.Change
	ch  chan struct{}
}

func newSink() *sink { return &sink{ch: make(chan struct{}, 1)} }

func (s *sink) handle(_ context.Context, c streamapi.Change) {
	s.mu.Lock()
	s.got = append(s.got, c)
	s.mu.Unlock()
	select {
	case s.ch <- struct{}{}:
	default:
	}
}

func (s *sink) changes() []streamapi.Change {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]streamapi.Change(nil), s.got...)
}

// wait returns once s holds n changes, failing after 5 s.
func (s *sink) wait(t *testing.T, n int) []streamapi.Change {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		if got := s.changes(); len(got) >= n {
			return got
		}
		select {
		case <-s.ch:
		case <-deadline:
			t.Fatalf("received %d changes within 5 s, want %d", len(s.changes()), n)
		}
	}
}

// subscribe subscribes a new sink to topic on b; the subscription is
// cancelled at the end of the test, or earlier by calling cancel.
func subscribe(t *testing.T, b streamapi.Broker, topic string) (s *sink, cancel func()) {
	t.Helper()
	s = newSink()
	cancel, err := b.Subscribe(context.Background(), topic, s.handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	return s, cancel
}

// settle gives an asynchronous broker time to deliver anything stray.
func settle() { time.Sleep(50 * time.Millisecond) }

func change(model string, pk int) streamapi.Change {
	b, _ := json.Marshal(pk)
	return streamapi.Change{Model: model, Action: streamapi.ChangeUpdate, PK: b, Data: json.RawMessage(fmt.Sprintf(`{"id":%d}`, pk))}
}

// Run runs the suite against brokers made by open.
func Run(t *testing.T, open Factory) {
	ctx := context.Background()

	t.Run("DeliversByTopicInOrder", func(t *testing.T) {
		b := open(t)
		a, _ := subscribe(t, b, "app.a")
		other, _ := subscribe(t, b, "app.b")
		const n = 200
		for i := 0; i < n; i++ {
			if err := b.Publish(ctx, change("app.a", i)); err != nil {
				t.Fatal(err)
			}
		}
		got := a.wait(t, n)
		for i, c := range got {
			if string(c.PK) != fmt.Sprint(i) || c.Model != "app.a" || c.Action != "update" || string(c.Data) != fmt.Sprintf(`{"id":%d}`, i) {
				t.Fatalf("change %d: %+v", i, c)
			}
		}
		settle()
		if n := len(other.changes()); n != 0 {
			t.Fatalf("another topic's subscriber got %d changes", n)
		}
		if n := len(a.changes()); n != 200 {
			t.Fatalf("%d changes delivered, want 200 (duplicates)", n)
		}
	})

	t.Run("BatchKeepsOrder", func(t *testing.T) {
		b := open(t)
		s, _ := subscribe(t, b, "app.a")
		if err := b.Publish(ctx, change("app.a", 1), change("app.b", 2), change("app.a", 3)); err != nil {
			t.Fatal(err)
		}
		got := s.wait(t, 2)
		if string(got[0].PK) != "1" || string(got[1].PK) != "3" {
			t.Fatalf("got %+v", got)
		}
	})

	t.Run("EverySubscriberUntilCancel", func(t *testing.T) {
		b := open(t)
		s1, c1 := subscribe(t, b, "app.a")
		s2, _ := subscribe(t, b, "app.a")
		if err := b.Publish(ctx, change("app.a", 1)); err != nil {
			t.Fatal(err)
		}
		s1.wait(t, 1)
		s2.wait(t, 1)
		c1()
		c1() // twice is harmless
		if err := b.Publish(ctx, change("app.a", 2)); err != nil {
			t.Fatal(err)
		}
		s2.wait(t, 2)
		settle()
		if n := len(s1.changes()); n != 1 {
			t.Fatalf("cancelled subscriber got %d changes, want 1", n)
		}
	})

	t.Run("AcrossConnections", func(t *testing.T) {
		pub, sub := open(t), open(t)
		s, _ := subscribe(t, sub, "app.x")
		if err := pub.Publish(ctx, change("app.x", 7)); err != nil {
			t.Fatal(err)
		}
		if got := s.wait(t, 1); string(got[0].PK) != "7" {
			t.Fatalf("got %+v", got)
		}
	})

	t.Run("ConcurrentPublishersEachOnce", func(t *testing.T) {
		b := open(t)
		s, _ := subscribe(t, b, "app.a")
		const writers, each = 4, 50
		var wg sync.WaitGroup
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					if err := b.Publish(ctx, change("app.a", w*1000+i)); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		got := s.wait(t, writers*each)
		last := map[int]int{}
		for _, c := range got {
			var pk int
			_ = json.Unmarshal(c.PK, &pk)
			w, i := pk/1000, pk%1000
			if prev, ok := last[w]; ok && i != prev+1 {
				t.Fatalf("publisher %d: %d after %d (each publisher's order must hold)", w, i, prev)
			}
			last[w] = i
		}
		settle()
		if n := len(s.changes()); n != writers*each {
			t.Fatalf("%d changes, want %d", n, writers*each)
		}
	})

	t.Run("Close", func(t *testing.T) {
		b := open(t)
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(ctx, change("app.a", 1)); err == nil {
			t.Error("Publish after Close succeeded")
		}
		if _, err := b.Subscribe(ctx, "app.a", newSink().handle); err == nil {
			t.Error("Subscribe after Close succeeded")
		}
	})
}

// PerTest returns a Factory for brokers on a shared bus (Redis, NATS):
// open gets a channel or subject prefix made for the test, the same for
// every connection the test opens (as the nodes of one deployment share
// one), so that tests running at once do not hear each other. The brokers
// are closed when the test ends.
func PerTest(open func(prefix string) (streamapi.Broker, error)) Factory {
	var mu sync.Mutex
	prefixes := map[testing.TB]string{}
	return func(t testing.TB) streamapi.Broker {
		mu.Lock()
		p := prefixes[t]
		if p == "" {
			p = fmt.Sprintf("streamapi_test_%d_%d.", time.Now().UnixNano(), len(prefixes))
			prefixes[t] = p
		}
		mu.Unlock()
		b, err := open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
}
