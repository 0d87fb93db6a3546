package feed_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/internal/feed"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// memLog is a change log in memory; fail makes reads fail.
type memLog struct {
	mu      sync.Mutex
	changes map[string][]streamapi.Change // by model, in seq order
	first   map[string]int64              // lowest seq kept
	fail    bool
	reads   int
	rows    int // rows returned by reads
}

func newLog() *memLog {
	return &memLog{changes: map[string][]streamapi.Change{}, first: map[string]int64{}}
}

// add commits n changes of model and returns them.
func (l *memLog) add(model string, n int) []streamapi.Change {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []streamapi.Change
	for i := 0; i < n; i++ {
		seq := int64(len(l.changes[model])) + 1
		c := streamapi.Change{Model: model, Action: "update", Seq: seq, PK: []byte(fmt.Sprint(seq % 3)), Data: []byte("{}")}
		l.changes[model] = append(l.changes[model], c)
		out = append(out, c)
	}
	if l.first[model] == 0 {
		l.first[model] = 1
	}
	return out
}

func (l *memLog) ChangesAfter(_ context.Context, model string, after int64, limit int) ([]streamapi.Change, error) {
	return l.read(model, limit, func(c streamapi.Change) bool { return c.Seq > after })
}

func (l *memLog) ChangesOf(_ context.Context, model string, pk json.RawMessage, after, upto int64, limit int) ([]streamapi.Change, error) {
	return l.read(model, limit, func(c streamapi.Change) bool {
		return string(c.PK) == string(pk) && c.Seq > after && c.Seq <= upto
	})
}

// read returns up to limit of model's changes still held for which keep
// is true, counting the read and its rows.
func (l *memLog) read(model string, limit int, keep func(streamapi.Change) bool) ([]streamapi.Change, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reads++
	if l.fail {
		return nil, errors.New("database down")
	}
	var out []streamapi.Change
	for _, c := range l.changes[model] {
		if keep(c) && c.Seq >= l.first[model] && (limit <= 0 || len(out) < limit) {
			out = append(out, c)
		}
	}
	l.rows += len(out)
	return out, nil
}

func (l *memLog) Bounds(_ context.Context, model string) (int64, int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail {
		return 0, 0, errors.New("database down")
	}
	last := int64(len(l.changes[model]))
	first := l.first[model]
	if first == 0 {
		first = last + 1
	}
	return first, last, nil
}

func (l *memLog) Trim(context.Context, time.Time) (int64, error) { return 0, nil }

func (l *memLog) TrimKeep(context.Context, string, int64) (int64, error) { return 0, nil }

// trimTo drops the changes before seq.
func (l *memLog) trimTo(model string, seq int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.first[model] = seq
}

// sink records delivered seqs.
type sink struct {
	mu   sync.Mutex
	seqs []int64
}

func (s *sink) deliver(_ context.Context, c streamapi.Change) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seqs = append(s.seqs, c.Seq)
}

func (s *sink) got() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprint(s.seqs)
}

func newFeed(t *testing.T, l *memLog, opts feed.Options) (*feed.Feed, *sink) {
	t.Helper()
	s := &sink{}
	f, err := feed.New(context.Background(), l, []string{"m"}, s.deliver, opts)
	if err != nil {
		t.Fatal(err)
	}
	return f, s
}

func TestFeed_StartsAtTheEndOfTheLog(t *testing.T) {
	l := newLog()
	l.add("m", 3)
	f, s := newFeed(t, l, feed.Options{})
	ctx := context.Background()
	f.PollAll(ctx)
	if s.got() != "[]" {
		t.Fatalf("changes before the feed started were delivered: %s", s.got())
	}
	f.Receive(ctx, l.add("m", 1)[0])
	if s.got() != "[4]" {
		t.Fatalf("got %s, want [4]", s.got())
	}
}

func TestFeed_DropsRepeatsAndFillsGaps(t *testing.T) {
	l := newLog()
	f, s := newFeed(t, l, feed.Options{})
	ctx := context.Background()
	cs := l.add("m", 6)
	f.Receive(ctx, cs[0])
	f.Receive(ctx, cs[0]) // a repeat
	f.Receive(ctx, cs[3]) // 2 and 3 were lost: read from the log
	f.Receive(ctx, cs[1]) // late: already delivered
	f.Receive(ctx, cs[2])
	f.Receive(ctx, cs[4])
	f.PollAll(ctx) // 6 never came from the broker
	f.Receive(ctx, cs[5])
	if s.got() != "[1 2 3 4 5 6]" {
		t.Fatalf("delivered %s, want [1 2 3 4 5 6]", s.got())
	}
}

func TestFeed_PassesOnChangesWithoutSeq(t *testing.T) {
	l := newLog()
	f, s := newFeed(t, l, feed.Options{})
	f.Receive(context.Background(), streamapi.Change{Model: "m"})
	f.Receive(context.Background(), streamapi.Change{Model: "other", Seq: 9})
	if s.got() != "[0 9]" {
		t.Fatalf("got %s", s.got())
	}
}

func TestFeed_LogDownLeavesTheGapToThePoller(t *testing.T) {
	l := newLog()
	f, s := newFeed(t, l, feed.Options{})
	ctx := context.Background()
	cs := l.add("m", 3)
	l.fail = true
	f.Receive(ctx, cs[2]) // 1 and 2 cannot be read: 3 must wait
	f.PollAll(ctx)
	if s.got() != "[]" {
		t.Fatalf("delivered %s with a gap before it", s.got())
	}
	l.mu.Lock()
	l.fail = false
	l.mu.Unlock()
	f.PollAll(ctx)
	if s.got() != "[1 2 3]" {
		t.Fatalf("after the log came back: %s, want [1 2 3]", s.got())
	}
}

func TestFeed_PollerRunsAndStops(t *testing.T) {
	l := newLog()
	f, s := newFeed(t, l, feed.Options{PollInterval: 10 * time.Millisecond, Retention: -1})
	f.Start(context.Background())
	l.add("m", 2)
	deadline := time.Now().Add(5 * time.Second)
	for s.got() != "[1 2]" {
		if time.Now().After(deadline) {
			t.Fatalf("poller delivered %s within 5 s, want [1 2]", s.got())
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.Stop()
}

func TestFeed_TrimmedGapIsSkipped(t *testing.T) {
	l := newLog()
	f, s := newFeed(t, l, feed.Options{})
	l.add("m", 5)
	l.trimTo("m", 4) // this node never delivered 1..3 and they are gone
	f.PollAll(context.Background())
	if s.got() != "[4 5]" {
		t.Fatalf("got %s, want [4 5]", s.got())
	}
}

func TestFeed_Resume(t *testing.T) {
	l := newLog()
	f, s := newFeed(t, l, feed.Options{ResumeLimit: 3})
	ctx := context.Background()
	for _, c := range l.add("m", 7) {
		f.Receive(ctx, c)
	}
	pk1 := func(c *streamapi.Change) bool { return string(c.PK) == "1" }
	r, err := f.Resume(ctx, "m", 0, json.RawMessage("1"), pk1)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	for _, c := range r.Changes {
		seqs = append(seqs, c.Seq)
	}
	if fmt.Sprint(seqs) != "[1 4 7]" || r.Seq != 7 {
		t.Fatalf("resume from 0: %v up to %d, want [1 4 7] up to 7", seqs, r.Seq)
	}
	registered := false
	// While the resume is open, live delivery waits.
	more := l.add("m", 1)[0]
	delivered := make(chan struct{})
	go func() {
		f.Receive(ctx, more)
		close(delivered)
	}()
	select {
	case <-delivered:
		t.Fatal("a change was delivered while a resume was open")
	case <-time.After(100 * time.Millisecond):
	}
	r.Done(func() { registered = true })
	<-delivered
	if !registered || s.got() != "[1 2 3 4 5 6 7 8]" {
		t.Fatalf("registered %v, delivered %s", registered, s.got())
	}

	all := func(*streamapi.Change) bool { return true }
	if _, err := f.Resume(ctx, "m", 2, nil, all); !errors.Is(err, feed.ErrResync) {
		t.Fatalf("6 to replay with a limit of 3: %v, want ErrResync", err)
	}
	if _, err := f.Resume(ctx, "m", 9, nil, all); !errors.Is(err, feed.ErrResync) {
		t.Fatalf("since ahead of the log: %v, want ErrResync", err)
	}
	l.trimTo("m", 5)
	if _, err := f.Resume(ctx, "m", 3, nil, all); !errors.Is(err, feed.ErrResync) {
		t.Fatalf("since before the trim: %v, want ErrResync", err)
	}
	r, err = f.Resume(ctx, "m", 4, nil, func(c *streamapi.Change) bool { return c.Seq > 6 })
	if err != nil || len(r.Changes) != 2 {
		t.Fatalf("since at the trim: %v, %v", r, err)
	}
	r.Done(nil)
	// From now: no replay, and where it starts.
	r, err = f.Resume(ctx, "m", -1, nil, all)
	if err != nil || len(r.Changes) != 0 || r.Seq != 8 {
		t.Fatalf("from now: %+v, %v", r, err)
	}
	r.Done(nil)
}

// TestFeed_ResumeOnALaggingNode: the log holds changes this node has not
// delivered yet; the replay stops where live delivery is, and the rest
// comes live, once.
func TestFeed_ResumeOnALaggingNode(t *testing.T) {
	l := newLog()
	f, s := newFeed(t, l, feed.Options{})
	ctx := context.Background()
	cs := l.add("m", 5)
	f.Receive(ctx, cs[0])
	f.Receive(ctx, cs[1])
	r, err := f.Resume(ctx, "m", 0, nil, func(*streamapi.Change) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Changes) != 2 || r.Seq != 2 {
		t.Fatalf("replayed %d up to %d, want 2 up to 2", len(r.Changes), r.Seq)
	}
	r.Done(nil)
	f.PollAll(ctx)
	if s.got() != "[1 2 3 4 5]" {
		t.Fatalf("got %s", s.got())
	}
}

// TestFeed_ResumeAheadOfThisNode: a client that saw up to seq 4 on a node
// that is ahead resumes here, where only 2 were delivered: this node first
// catches its subscribers up to 4, and the client gets 5 live, not 3 and 4
// again.
func TestFeed_ResumeAheadOfThisNode(t *testing.T) {
	l := newLog()
	f, s := newFeed(t, l, feed.Options{})
	ctx := context.Background()
	cs := l.add("m", 5)
	f.Receive(ctx, cs[0])
	f.Receive(ctx, cs[1])
	r, err := f.Resume(ctx, "m", 4, nil, func(*streamapi.Change) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Changes) != 0 || r.Seq != 4 {
		t.Fatalf("replay %d changes up to %d, want none up to 4", len(r.Changes), r.Seq)
	}
	if s.got() != "[1 2 3 4]" {
		t.Fatalf("this node's subscribers got %s before the resume, want [1 2 3 4]", s.got())
	}
	r.Done(func() {})
	f.Receive(ctx, cs[4])
	for _, c := range cs[2:] {
		f.Receive(ctx, c) // late repeats
	}
	if s.got() != "[1 2 3 4 5]" {
		t.Fatalf("got %s", s.got())
	}
}

// TestFeed_ResumeStopsAtAHole: a hole in the middle of the log (trimmed
// out of order) is a resync, never a silent skip.
func TestFeed_ResumeStopsAtAHole(t *testing.T) {
	l := newLog()
	f, _ := newFeed(t, l, feed.Options{})
	ctx := context.Background()
	for _, c := range l.add("m", 5) {
		f.Receive(ctx, c)
	}
	l.mu.Lock()
	l.changes["m"] = append(l.changes["m"][:2:2], l.changes["m"][3:]...) // seq 3 gone
	l.mu.Unlock()
	if _, err := f.Resume(ctx, "m", 1, nil, func(*streamapi.Change) bool { return true }); !errors.Is(err, feed.ErrResync) {
		t.Fatalf("resume across a hole: %v, want ErrResync", err)
	}
}

func TestFeed_NewFailsWhenTheLogIsDown(t *testing.T) {
	l := newLog()
	l.fail = true
	if _, err := feed.New(context.Background(), l, []string{"m"}, nil, feed.Options{}); err == nil {
		t.Fatal("New succeeded with the log down")
	}
}

// TestFeed_ResumeReadsBounded: a resume reads at most ResumeScan changes of
// the log; one further behind is told to resync without reading any, and
// one object's resume reads only that object's changes (the issue's
// attack: since 0 and a pk that matches nothing, with many changes in the
// log, read every one of them).
func TestFeed_ResumeReadsBounded(t *testing.T) {
	l := newLog()
	f, _ := newFeed(t, l, feed.Options{ResumeLimit: 10, ResumeScan: 20})
	ctx := context.Background()
	for _, c := range l.add("m", 3000) {
		f.Receive(ctx, c)
	}
	all := func(*streamapi.Change) bool { return true }
	none := func(*streamapi.Change) bool { return false }
	rowsOf := func(fn func()) int {
		l.mu.Lock()
		before := l.rows
		l.mu.Unlock()
		fn()
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.rows - before
	}
	if n := rowsOf(func() {
		if _, err := f.Resume(ctx, "m", 0, nil, none); !errors.Is(err, feed.ErrResync) {
			t.Fatalf("3000 behind with a scan of 20: %v, want ErrResync", err)
		}
	}); n != 0 {
		t.Fatalf("a resume too far behind read %d rows", n)
	}
	// 20 behind: read, within the scan.
	if n := rowsOf(func() {
		r, err := f.Resume(ctx, "m", 2980, nil, none)
		if err != nil {
			t.Fatal(err)
		}
		r.Done(nil)
	}); n != 20 {
		t.Fatalf("20 behind read %d rows, want 20", n)
	}
	// One object's changes: pk 7 has none, pk 1 has 1000 (every third).
	if n := rowsOf(func() {
		r, err := f.Resume(ctx, "m", 0, json.RawMessage("7"), all)
		if err != nil || len(r.Changes) != 0 {
			t.Fatalf("an object without changes: %v, %v", r, err)
		}
		r.Done(nil)
	}); n != 0 {
		t.Fatalf("the resume of an object without changes read %d rows", n)
	}
	if n := rowsOf(func() {
		if _, err := f.Resume(ctx, "m", 0, json.RawMessage("1"), none); !errors.Is(err, feed.ErrResync) {
			t.Fatalf("1000 changes of one object with a scan of 20: %v, want ErrResync", err)
		}
	}); n > 21 {
		t.Fatalf("an object's resume read %d rows past a scan of 20", n)
	}
	r, err := f.Resume(ctx, "m", 2970, json.RawMessage("1"), all)
	if err != nil {
		t.Fatal(err)
	}
	r.Done(nil)
	var seqs []int64
	for _, c := range r.Changes {
		seqs = append(seqs, c.Seq)
	}
	if fmt.Sprint(seqs) != "[2971 2974 2977 2980 2983 2986 2989 2992 2995 2998]" {
		t.Fatalf("pk 1 after 2970: %v", seqs)
	}
}
