package loadtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamapi/streamapi/client"
)

// Soak configures a soak run against the polls app (examples/polls, as
// cmd/streamapi serves it without --jwt-secret) on one or more nodes that
// share a database and a broker.
//
// For Duration, writers create, patch, update, vote on and delete
// questions and choices; readers retrieve and list; subscribers hold one
// subscription each (every kind, both dialects), disconnect now and then
// and resume with since on the next node; idle connections only answer
// pings. Then it checks, from the clients' side, that every acknowledged
// write is what the database holds, that every subscriber got every
// matching event exactly once and in seq order, and that no connection was
// closed that did not close itself.
type Soak struct {
	URLs        []string // WebSocket URLs of the nodes; clients go round them
	Duration    time.Duration
	Writers     int
	Readers     int
	Subscribers int
	Idle        int
	// Think is the pause between one client's requests.
	Think time.Duration
	// MaxSession is the longest a subscriber stays connected (each stays
	// a random quarter to all of it), MaxOffline the longest it stays
	// away before it resumes.
	MaxSession, MaxOffline time.Duration
	// Servers are the nodes' processes, for their RSS and goroutines.
	Servers []Server
	// Logf reports progress; nil is silent.
	Logf func(format string, args ...any)
}

// Server is a node's process.
type Server struct {
	PID   int
	GCURL string // cmd/streamapi's POST /debug/gc (--pprof-addr), for goroutines and heap
}

// SoakResult is what a soak measured and found.
type SoakResult struct {
	Nodes       int              `json:"nodes"`
	Elapsed     time.Duration    `json:"elapsed_ns"` // the load phase
	Writes      map[string]int64 `json:"writes"`     // acknowledged, by kind
	Reads       int64            `json:"reads"`
	Subscribers int              `json:"subscribers"`
	Sessions    int64            `json:"sessions"` // subscriber connections opened
	Resumes     int64            `json:"resumes"`  // subscribes with since
	Resyncs     int64            `json:"resyncs"`  // resumes refused 410
	Events      int64            `json:"events"`   // delivered to subscribers
	Expected    int64            `json:"expected"` // what subscribers should have got
	Diff        Diff             `json:"diff"`     // subscribers: what they got against that
	// Recorders are one connection per node subscribed to every change;
	// they must see every seq of each model once, and agree.
	RecorderEvents int64 `json:"recorder_events"`
	RecorderDiff   Diff  `json:"recorder_diff"`
	Disagreements  int   `json:"disagreements"`
	// UnexpectedCloses counts connections closed that did not close
	// themselves (a healthy client dropped).
	UnexpectedCloses int `json:"unexpected_closes"`
	// Checked is the objects read back at the end; Wrong those that did
	// not hold what was acknowledged.
	Checked         int   `json:"checked"`
	Wrong           int   `json:"wrong"`
	VotesAcked      int64 `json:"votes_acked"`
	VotesUnanswered int64 `json:"votes_unanswered"` // sent, no reply: may or may not be stored
	VotesStored     int64 `json:"votes_stored"`
	// Failures counts every failed request and check, by kind; First
	// holds the first few in words.
	Failures map[string]int64 `json:"failures"`
	First    []string         `json:"first_failures"`
	Memory   []SoakMemory     `json:"memory"`
}

// SoakMemory is a node's memory at the start (before any client), under
// load (at the end, every client still connected) and after every client
// closed.
type SoakMemory struct {
	PID    int    `json:"pid"`
	Start  Memory `json:"start"`
	Loaded Memory `json:"loaded"`
	End    Memory `json:"end"`
}

// OK reports whether the soak found nothing wrong.
func (r *SoakResult) OK() bool {
	return len(r.Failures) == 0 && r.Diff.Zero() && r.RecorderDiff.Zero() && r.Disagreements == 0 &&
		r.UnexpectedCloses == 0 && r.Wrong == 0 && r.Resyncs == 0
}

const (
	questions = "questions"
	choices   = "choices"
)

type soak struct {
	cfg Soak

	// Set up before the load and read-only during it.
	hot      []*hotQuestion // one per writer, which alone toggles it and names its choices
	hotAll   []int64        // every hot choice
	votes    map[int64]*atomic.Int64
	unacked  map[int64]*atomic.Int64 // votes sent with no reply
	doomed   []int64                 // questions writer i deletes at a random moment
	subSpecs []subSpec

	live   sync.Mutex
	liveQs []int64 // questions created, for readers (some since deleted)

	writes   sync.Map // kind → *atomic.Int64
	reads    atomic.Int64
	sessions atomic.Int64
	resumes  atomic.Int64
	resyncs  atomic.Int64
	events   atomic.Int64

	mu       sync.Mutex
	failures map[string]int64
	first    []string
}

type hotQuestion struct {
	id        int64
	published bool
	uncertain bool // a toggle went unanswered
	choices   []int64
	text      map[int64]string // acknowledged choice_text
}

// owned is a writer's own question.
type owned struct {
	id        int64
	obj       map[string]any // as created, for updates
	text      string
	choices   map[int64]string
	uncertain bool
}

func (s *soak) fail(kind, format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures[kind]++
	if len(s.first) < 10 {
		s.first = append(s.first, kind+": "+fmt.Sprintf(format, args...))
	}
}

func (s *soak) logf(format string, args ...any) {
	if s.cfg.Logf != nil {
		s.cfg.Logf(format, args...)
	}
}

func (s *soak) wrote(kind string) {
	v, _ := s.writes.LoadOrStore(kind, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

func (s *soak) dial(ctx context.Context, n int, events int) (*client.Client, error) {
	url := s.cfg.URLs[n%len(s.cfg.URLs)]
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return client.Dial(dctx, url, &client.Options{EventBuffer: events})
}

// request sends p and waits up to 15 s; err is a transport error or a
// timeout (the write may or may not have been made).
func request(ctx context.Context, c *client.Client, stream string, p client.Payload) (*client.Reply, error) {
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return c.Request(rctx, stream, p)
}

// write sends a write and reports whether it was acknowledged (2xx); a
// refusal or a lost reply is a failure, and unknown says the write may
// have been made.
func (s *soak) write(ctx context.Context, c *client.Client, stream string, p client.Payload, into any) (ok, unknown bool) {
	rep, err := request(ctx, c, stream, p)
	if err != nil {
		if ctx.Err() == nil {
			s.fail("write "+p.Action+": no reply", "%s %v: %v", stream, p.PK, err)
		}
		return false, true
	}
	if rep.Status < 200 || rep.Status >= 300 {
		s.fail(fmt.Sprintf("write %s: %d", p.Action, rep.Status), "%s %v: %s", stream, p.PK, rep.Errors)
		return false, false
	}
	if into != nil {
		if err := rep.Decode(into); err != nil {
			s.fail("write "+p.Action+": reply", "%s: %v", rep.Data, err)
			return false, false
		}
	}
	s.wrote(p.Action)
	return true, false
}

// RunSoak runs cfg. An error means the soak could not run; what it found
// wrong is in the result (OK).
func RunSoak(ctx context.Context, cfg Soak) (*SoakResult, error) {
	if len(cfg.URLs) == 0 || cfg.Duration <= 0 || cfg.Writers < 1 {
		return nil, errors.New("loadtest: a soak needs URLs, a Duration and at least one writer")
	}
	if cfg.MaxSession <= 0 {
		cfg.MaxSession = 8 * time.Second
	}
	if cfg.MaxOffline <= 0 {
		cfg.MaxOffline = time.Second
	}
	s := &soak{cfg: cfg, votes: map[int64]*atomic.Int64{}, unacked: map[int64]*atomic.Int64{}, failures: map[string]int64{}}
	res := &SoakResult{Nodes: len(cfg.URLs), Subscribers: cfg.Subscribers}
	for _, sv := range cfg.Servers {
		m, err := ReadMemory(ctx, sv.PID, sv.GCURL)
		if err != nil {
			return nil, err
		}
		res.Memory = append(res.Memory, SoakMemory{PID: sv.PID, Start: m})
	}

	// Recorders first, so that they see every change of the run.
	var recs []*recorder
	defer func() {
		for _, r := range recs {
			r.c.Close()
		}
	}()
	for i := range cfg.URLs {
		r, err := s.record(ctx, i)
		if err != nil {
			return nil, err
		}
		recs = append(recs, r)
	}
	setup, err := s.dial(ctx, 0, 16)
	if err != nil {
		return nil, err
	}
	defer setup.Close()
	if err := s.setUp(ctx, setup); err != nil {
		return nil, err
	}

	var idle []*client.Client
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for i := 0; i < cfg.Idle; i++ {
		c, err := s.dial(ctx, i, 16)
		if err != nil {
			return nil, fmt.Errorf("loadtest: idle connection %d: %w", i+1, err)
		}
		idle = append(idle, c)
	}
	s.logf("soak: %d node(s), %d writers, %d readers, %d subscribers, %d idle, for %s", len(cfg.URLs), cfg.Writers, cfg.Readers, cfg.Subscribers, cfg.Idle, cfg.Duration)

	stopLoad := make(chan struct{})
	final := make(chan struct{})
	done := make(chan struct{})
	var load, subs sync.WaitGroup
	writers := make([]*writer, cfg.Writers)
	for i := range writers {
		c, err := s.dial(ctx, i, 16)
		if err != nil {
			return nil, fmt.Errorf("loadtest: writer %d: %w", i+1, err)
		}
		defer c.Close()
		writers[i] = &writer{s: s, i: i, c: c, hot: s.hot[i]}
		load.Go(func() { writers[i].run(ctx, stopLoad) })
	}
	for i := 0; i < cfg.Readers; i++ {
		c, err := s.dial(ctx, i, 16)
		if err != nil {
			return nil, fmt.Errorf("loadtest: reader %d: %w", i+1, err)
		}
		defer c.Close()
		load.Go(func() { s.reader(ctx, c, stopLoad) })
	}
	subscribers := make([]*subscriber, cfg.Subscribers)
	for j := range subscribers {
		subscribers[j] = &subscriber{s: s, j: j, spec: s.subSpecs[j%len(s.subSpecs)], pos: -1}
		subs.Go(func() { subscribers[j].run(ctx, final, done) })
	}

	start := time.Now()
	select {
	case <-time.After(cfg.Duration):
	case <-ctx.Done():
	}
	close(stopLoad)
	load.Wait()
	res.Elapsed = time.Since(start)
	for i := range res.Memory {
		if res.Memory[i].Loaded, err = ReadMemory(ctx, cfg.Servers[i].PID, cfg.Servers[i].GCURL); err != nil {
			return nil, err
		}
	}

	// The end of each model's log, once every node has delivered it.
	last, err := s.settle(ctx, recs)
	if err != nil {
		return nil, err
	}
	close(final)
	select {
	case <-time.After(2 * time.Second): // the resumes of the subscribers that were away
	case <-ctx.Done():
	}
	close(done)
	subs.Wait()

	for _, c := range idle {
		if isClosed(c) {
			res.UnexpectedCloses++
			s.fail("idle connection closed", "status %d: %v", c.CloseStatus(), c.Err())
		}
	}
	for _, w := range writers {
		if isClosed(w.c) {
			res.UnexpectedCloses++
			s.fail("writer closed", "status %d: %v", w.c.CloseStatus(), w.c.Err())
		}
	}

	// Recorders: every seq of each model once, and the nodes agree.
	for i, r := range recs {
		if isClosed(r.c) {
			res.UnexpectedCloses++
			s.fail("recorder closed", "node %d: status %d: %v", i+1, r.c.CloseStatus(), r.c.Err())
		}
		if n := r.c.Dropped(); n > 0 {
			s.fail("recorder dropped events", "node %d: %d (client buffer)", i+1, n)
		}
		for _, stream := range []string{questions, choices} {
			rec := r.sorted(stream)
			res.RecorderEvents += int64(len(rec))
			d := compareSeqs(contiguous(span{r.from[stream], last[stream]}), seqsOf(rec))
			for _, kind := range []string{"create", "update", "delete"} {
				d.OutOfOrder += compareSeqs(nil, r.bykind[stream+" "+kind]).OutOfOrder
			}
			res.RecorderDiff = res.RecorderDiff.Add(d)
			if i > 0 {
				res.Disagreements += disagreements(recs[0].sorted(stream), rec)
			}
		}
	}
	// Subscribers: what each should have got, from the first recorder.
	for _, sb := range subscribers {
		res.UnexpectedCloses += sb.closed
		rec := recs[0].sorted(sb.spec.stream)
		want := expectedSeqs(rec, span{sb.from, last[sb.spec.stream]}, sb.gaps, sb.spec.match)
		res.Expected += int64(len(want))
		res.Diff = res.Diff.Add(compareSeqs(want, sb.got))
	}

	// Every acknowledged write, read back.
	for _, w := range writers {
		s.verify(ctx, setup, w, res)
	}
	for _, id := range s.hotAll {
		res.VotesAcked += s.votes[id].Load()
		res.VotesUnanswered += s.unacked[id].Load()
	}

	for _, r := range recs {
		r.c.Close()
	}
	for _, c := range idle {
		c.Close()
	}
	for _, w := range writers {
		w.c.Close()
	}
	setup.Close()
	select {
	case <-time.After(3 * time.Second): // the server's connection goroutines end
	case <-ctx.Done():
	}
	for i := range res.Memory {
		if res.Memory[i].End, err = ReadMemory(ctx, cfg.Servers[i].PID, cfg.Servers[i].GCURL); err != nil {
			return nil, err
		}
	}

	res.Writes = map[string]int64{}
	s.writes.Range(func(k, v any) bool {
		res.Writes[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	res.Reads, res.Sessions, res.Resumes, res.Resyncs, res.Events = s.reads.Load(), s.sessions.Load(), s.resumes.Load(), s.resyncs.Load(), s.events.Load()
	s.mu.Lock()
	res.Failures, res.First = s.failures, s.first
	s.mu.Unlock()
	return res, nil
}

// pause waits d, and reports false when stop or ctx ended first.
func pause(ctx context.Context, stop <-chan struct{}, d time.Duration) bool {
	select {
	case <-stop:
		return false
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func isClosed(c *client.Client) bool {
	select {
	case <-c.Done():
		return true
	default:
		return false
	}
}

// setUp creates each writer's hot question with three choices, and a
// doomed question per writer, and lays out the subscriptions.
func (s *soak) setUp(ctx context.Context, c *client.Client) error {
	create := func(stream string, data map[string]any) (int64, error) {
		rep, err := request(ctx, c, stream, client.Payload{Action: "create", Data: data})
		if err == nil {
			err = rep.Err()
		}
		var obj struct {
			ID int64 `json:"id"`
		}
		if err == nil {
			err = rep.Decode(&obj)
		}
		if err != nil {
			return 0, fmt.Errorf("loadtest: soak set-up: create %s: %w", stream, err)
		}
		return obj.ID, nil
	}
	for i := 0; i < s.cfg.Writers; i++ {
		id, err := create(questions, map[string]any{"question_text": fmt.Sprintf("hot %d", i)})
		if err != nil {
			return err
		}
		h := &hotQuestion{id: id, published: true, text: map[int64]string{}}
		for k := 0; k < 3; k++ {
			text := fmt.Sprintf("hot %d choice %d", i, k)
			cid, err := create(choices, map[string]any{"question": id, "choice_text": text})
			if err != nil {
				return err
			}
			h.choices = append(h.choices, cid)
			h.text[cid] = text
			s.hotAll = append(s.hotAll, cid)
			s.votes[cid], s.unacked[cid] = new(atomic.Int64), new(atomic.Int64)
		}
		s.hot = append(s.hot, h)
		d, err := create(questions, map[string]any{"question_text": fmt.Sprintf("doomed %d", i)})
		if err != nil {
			return err
		}
		s.doomed = append(s.doomed, d)
	}
	// Every kind, in both dialects, over both models.
	for i := range s.hot {
		h, d := s.hot[i], s.doomed[i]
		cid := h.choices[i%len(h.choices)]
		s.subSpecs = append(s.subSpecs,
			subSpec{stream: questions, kind: "create"},
			subSpec{stream: questions, kind: "update"},
			subSpec{stream: questions, kind: "delete"},
			subSpec{stream: questions, kind: "update", pk: h.id},
			subSpec{stream: questions, kind: "delete", pk: d},
			subSpec{stream: choices, kind: "update"},
			subSpec{stream: choices, instance: true, pk: cid},
			subSpec{stream: choices, kind: "delete"},
			subSpec{stream: choices, kind: "update", pk: cid},
			subSpec{stream: choices, kind: "create"},
		)
	}
	return nil
}

// writer is one writing connection and what it had acknowledged.
type writer struct {
	s       *soak
	i       int
	c       *client.Client
	hot     *hotQuestion
	mine    []*owned
	deleted []*owned
	n       int
	doomed  bool // its doomed question's delete was acknowledged
}

func (w *writer) run(ctx context.Context, stop <-chan struct{}) {
	s := w.s
	doomAt := time.Now().Add(time.Duration(float64(s.cfg.Duration) * (0.2 + 0.6*rand.Float64())))
	doomAsked := false
	for {
		if !pause(ctx, stop, s.cfg.Think) {
			return
		}
		if isClosed(w.c) {
			s.fail("writer closed", "writer %d: status %d: %v", w.i+1, w.c.CloseStatus(), w.c.Err())
			return
		}
		w.n++
		switch r := rand.IntN(100); {
		case !doomAsked && time.Now().After(doomAt):
			doomAsked = true
			w.doomed, _ = s.write(ctx, w.c, questions, client.Payload{Action: "delete", PK: s.doomed[w.i]}, nil)
		case r < 10 || len(w.mine) == 0:
			w.create(ctx)
		case r < 22:
			q := w.mine[rand.IntN(len(w.mine))]
			text := fmt.Sprintf("w%d patch %d", w.i, w.n)
			if ok, unknown := s.write(ctx, w.c, questions, client.Payload{Action: "patch", PK: q.id, Data: map[string]any{"question_text": text}}, nil); ok {
				q.text = text
			} else if unknown {
				q.uncertain = true
			}
		case r < 27:
			q := w.mine[rand.IntN(len(w.mine))]
			text := fmt.Sprintf("w%d update %d", w.i, w.n)
			obj := maps(q.obj)
			obj["question_text"] = text
			if ok, unknown := s.write(ctx, w.c, questions, client.Payload{Action: "update", PK: q.id, Data: obj}, nil); ok {
				q.text = text
			} else if unknown {
				q.uncertain = true
			}
		case r < 39:
			q := w.mine[rand.IntN(len(w.mine))]
			for id := range q.choices {
				text := fmt.Sprintf("w%d choice %d", w.i, w.n)
				if ok, unknown := s.write(ctx, w.c, choices, client.Payload{Action: "patch", PK: id, Data: map[string]any{"choice_text": text}}, nil); ok {
					q.choices[id] = text
				} else if unknown {
					q.uncertain = true
				}
				break
			}
		case r < 45:
			h := w.hot
			if ok, unknown := s.write(ctx, w.c, questions, client.Payload{Action: "patch", PK: h.id, Data: map[string]any{"published": !h.published}}, nil); ok {
				h.published = !h.published
			} else if unknown {
				h.uncertain = true
			}
		case r < 50:
			h := w.hot
			id := h.choices[rand.IntN(len(h.choices))]
			text := fmt.Sprintf("w%d hot %d", w.i, w.n)
			if ok, unknown := s.write(ctx, w.c, choices, client.Payload{Action: "patch", PK: id, Data: map[string]any{"choice_text": text}}, nil); ok {
				h.text[id] = text
			} else if unknown {
				h.uncertain = true
			}
		case r < 58 && len(w.mine) > 3:
			k := rand.IntN(len(w.mine))
			q := w.mine[k]
			if ok, unknown := s.write(ctx, w.c, questions, client.Payload{Action: "delete", PK: q.id}, nil); ok || unknown {
				w.mine = slices.Delete(w.mine, k, k+1)
				if ok {
					w.deleted = append(w.deleted, q)
				}
			}
		default:
			id := s.hotAll[rand.IntN(len(s.hotAll))]
			if ok, unknown := s.write(ctx, w.c, choices, client.Payload{Action: "vote", PK: id}, nil); ok {
				s.votes[id].Add(1)
			} else if unknown {
				s.unacked[id].Add(1)
			}
		}
	}
}

// create makes a question and two choices.
func (w *writer) create(ctx context.Context) {
	s := w.s
	text := fmt.Sprintf("w%d question %d", w.i, w.n)
	var obj map[string]any
	if ok, _ := s.write(ctx, w.c, questions, client.Payload{Action: "create", Data: map[string]any{"question_text": text}}, &obj); !ok {
		return
	}
	id, _ := obj["id"].(float64)
	q := &owned{id: int64(id), obj: obj, text: text, choices: map[int64]string{}}
	w.mine = append(w.mine, q)
	s.live.Lock()
	s.liveQs = append(s.liveQs, q.id)
	s.live.Unlock()
	for k := 0; k < 2; k++ {
		ctext := fmt.Sprintf("w%d question %d choice %d", w.i, w.n, k)
		var c struct {
			ID int64 `json:"id"`
		}
		ok, unknown := s.write(ctx, w.c, choices, client.Payload{Action: "create", Data: map[string]any{"question": q.id, "choice_text": ctext}}, &c)
		if ok {
			q.choices[c.ID] = ctext
		} else if unknown {
			q.uncertain = true
		}
	}
}

func maps(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// reader retrieves and lists; a question may have been deleted (404),
// nothing else may fail.
func (s *soak) reader(ctx context.Context, c *client.Client, stop <-chan struct{}) {
	for {
		if !pause(ctx, stop, s.cfg.Think) {
			return
		}
		stream, p, may404 := choices, client.Payload{Action: "retrieve", PK: s.hotAll[rand.IntN(len(s.hotAll))]}, false
		switch rand.IntN(4) {
		case 0:
			s.live.Lock()
			if n := len(s.liveQs); n > 0 {
				stream, p, may404 = questions, client.Payload{Action: "retrieve", PK: s.liveQs[rand.IntN(n)]}, true
			}
			s.live.Unlock()
		case 1:
			stream, p = questions, client.Payload{Action: "list", Data: map[string]any{"ordering": "-id", "search": "question"}}
		case 2:
			stream, p = choices, client.Payload{Action: "list", Data: map[string]any{"question": s.hot[rand.IntN(len(s.hot))].id, "ordering": "-votes"}}
		}
		rep, err := request(ctx, c, stream, p)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				s.fail("read: no reply", "%s %s: %v", stream, p.Action, err)
			}
			if isClosed(c) {
				s.fail("reader closed", "status %d: %v", c.CloseStatus(), c.Err())
				return
			}
		case rep.Status == 200 || rep.Status == 404 && may404:
			s.reads.Add(1)
		default:
			s.fail(fmt.Sprintf("read %s: %d", p.Action, rep.Status), "%s %v: %s", stream, p.PK, rep.Errors)
		}
	}
}

// verify reads back what writer w had acknowledged.
func (s *soak) verify(ctx context.Context, c *client.Client, w *writer, res *SoakResult) {
	get := func(stream string, id int64, v any) int {
		rep, err := request(ctx, c, stream, client.Payload{Action: "retrieve", PK: id})
		if err != nil {
			s.fail("verify: no reply", "%s %d: %v", stream, id, err)
			return 0
		}
		if rep.Status == 200 && v != nil {
			if err := rep.Decode(v); err != nil {
				s.fail("verify: reply", "%s %d: %v", stream, id, err)
			}
		}
		res.Checked++
		return rep.Status
	}
	wrong := func(format string, args ...any) {
		res.Wrong++
		s.fail("acknowledged write not stored", format, args...)
	}
	type question struct {
		Text      string `json:"question_text"`
		Published bool   `json:"published"`
	}
	type choice struct {
		Text      string `json:"choice_text"`
		Votes     int64  `json:"votes"`
		Published bool   `json:"question_published"`
	}
	for _, q := range w.mine {
		if q.uncertain {
			continue
		}
		var got question
		if st := get(questions, q.id, &got); st != 200 || got.Text != q.text {
			wrong("question %d: status %d, question_text %q, want %q", q.id, st, got.Text, q.text)
		}
		for id, text := range q.choices {
			var gc choice
			if st := get(choices, id, &gc); st != 200 || gc.Text != text {
				wrong("choice %d: status %d, choice_text %q, want %q", id, st, gc.Text, text)
			}
		}
	}
	for _, q := range w.deleted {
		if st := get(questions, q.id, nil); st != 404 {
			wrong("question %d deleted, read back %d", q.id, st)
		}
		for id := range q.choices {
			if st := get(choices, id, nil); st != 404 {
				wrong("choice %d of deleted question %d read back %d", id, q.id, st)
			}
		}
	}
	h := w.hot
	var hq question
	if st := get(questions, h.id, &hq); st != 200 || !h.uncertain && hq.Published != h.published {
		wrong("hot question %d: status %d, published %v, want %v", h.id, st, hq.Published, h.published)
	}
	for _, id := range h.choices {
		var gc choice
		st := get(choices, id, &gc)
		acked, unknown := s.votes[id].Load(), s.unacked[id].Load()
		res.VotesStored += gc.Votes
		switch {
		case st != 200:
			wrong("hot choice %d: status %d", id, st)
		case gc.Votes < acked || gc.Votes > acked+unknown:
			wrong("hot choice %d: %d votes stored, %d acknowledged (%d unanswered)", id, gc.Votes, acked, unknown)
		case !h.uncertain && gc.Text != h.text[id]:
			wrong("hot choice %d: choice_text %q, want %q", id, gc.Text, h.text[id])
		case gc.Published != hq.Published:
			wrong("hot choice %d: question_published %v, its question's %v", id, gc.Published, hq.Published)
		}
	}
	if w.doomed {
		if st := get(questions, s.doomed[w.i], nil); st != 404 {
			wrong("doomed question %d: read back %d after its delete", s.doomed[w.i], st)
		}
	}
}

// settle waits until every node answers the same last seq for each model
// and every recorder has got up to it, and returns it.
func (s *soak) settle(ctx context.Context, recs []*recorder) (map[string]int64, error) {
	deadline := time.Now().Add(30 * time.Second)
	var last map[string]int64
	for {
		last = map[string]int64{}
		agree := true
		for i := range s.cfg.URLs {
			for _, stream := range []string{questions, choices} {
				n, err := s.position(ctx, i, stream)
				if err != nil {
					return nil, err
				}
				if v, ok := last[stream]; ok && v != n {
					agree = false
				}
				last[stream] = max(last[stream], n)
			}
		}
		got := agree
		for _, r := range recs {
			for stream, n := range last {
				if r.top(stream) < n {
					got = false
				}
			}
		}
		if got {
			return last, nil
		}
		if time.Now().After(deadline) {
			s.fail("settle", "the nodes or recorders did not reach the log's end in 30 s: %v", last)
			return last, nil
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// position is the seq a fresh subscription to stream on node i starts at.
func (s *soak) position(ctx context.Context, i int, stream string) (int64, error) {
	c, err := s.dial(ctx, i, 16)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	sub, err := c.Subscribe(ctx, stream, "update", nil)
	if err != nil {
		return 0, fmt.Errorf("loadtest: soak: position of %s: %w", stream, err)
	}
	return sub.Seq, nil
}

// recorder is one connection to a node subscribed to every change of both
// models, which never disconnects.
type recorder struct {
	c      *client.Client
	from   map[string]int64 // where its window starts, per stream
	mu     sync.Mutex
	events map[string][]eventRec
	bykind map[string][]int64 // "stream kind" → seqs in arrival order
	wg     sync.WaitGroup
}

func (s *soak) record(ctx context.Context, node int) (*recorder, error) {
	c, err := s.dial(ctx, node, 1<<14)
	if err != nil {
		return nil, fmt.Errorf("loadtest: recorder: %w", err)
	}
	r := &recorder{c: c, from: map[string]int64{}, events: map[string][]eventRec{}, bykind: map[string][]int64{}}
	for _, stream := range []string{questions, choices} {
		for _, kind := range []string{"create", "update", "delete"} {
			sub, err := c.Subscribe(ctx, stream, kind, nil)
			if err != nil {
				c.Close()
				return nil, fmt.Errorf("loadtest: recorder: subscribe %s %s: %w", stream, kind, err)
			}
			r.from[stream] = max(r.from[stream], sub.Seq)
			r.wg.Go(func() {
				for ev := range sub.C {
					e := eventRec{Seq: ev.Seq, Action: ev.Action, PK: string(ev.PK)}
					r.mu.Lock()
					r.events[stream] = append(r.events[stream], e)
					r.bykind[stream+" "+kind] = append(r.bykind[stream+" "+kind], ev.Seq)
					r.mu.Unlock()
				}
			})
		}
	}
	return r, nil
}

// sorted returns the stream's events in its window, by seq.
func (r *recorder) sorted(stream string) []eventRec {
	r.mu.Lock()
	out := make([]eventRec, 0, len(r.events[stream]))
	for _, e := range r.events[stream] {
		if e.Seq > r.from[stream] {
			out = append(out, e)
		}
	}
	r.mu.Unlock()
	slices.SortStableFunc(out, func(a, b eventRec) int { return int(a.Seq - b.Seq) })
	return out
}

func (r *recorder) top(stream string) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n int64
	for _, e := range r.events[stream] {
		n = max(n, e.Seq)
	}
	return n
}

// subSpec is one subscriber's subscription.
type subSpec struct {
	stream   string
	kind     string // create, update, delete (Channels API)
	pk       any    // nil: any object
	instance bool   // DCRF subscribe_instance of pk
}

func (sp subSpec) match(e eventRec) bool {
	key := ""
	if sp.pk != nil {
		key = strconv.FormatInt(sp.pk.(int64), 10)
	}
	if sp.instance {
		return e.PK == key && (e.Action == "update" || e.Action == "delete")
	}
	return e.Action == sp.kind && (sp.pk == nil || e.PK == key)
}

func (sp subSpec) subscribe(ctx context.Context, c *client.Client, since int64) (*client.Subscription, error) {
	switch {
	case sp.instance && since >= 0:
		return c.SubscribeInstanceSince(ctx, sp.stream, sp.pk, since)
	case sp.instance:
		return c.SubscribeInstance(ctx, sp.stream, sp.pk)
	case since >= 0:
		return c.SubscribeSince(ctx, sp.stream, sp.kind, sp.pk, since)
	default:
		return c.Subscribe(ctx, sp.stream, sp.kind, sp.pk)
	}
}

// subscriber holds one subscription over sessions on the nodes in turn,
// resuming each from the last event it processed.
type subscriber struct {
	s    *soak
	j    int
	spec subSpec
	from int64 // its first subscription's seq
	pos  int64 // what it has processed: -1 before its first subscription
	got  []int64
	gaps []span // left by resyncs
	// closed counts sessions the server closed.
	closed int
}

func (sb *subscriber) run(ctx context.Context, final, done <-chan struct{}) {
	s := sb.s
	node := sb.j
	for {
		c, sub, err := sb.connect(ctx, node)
		node++
		if err != nil {
			if ctx.Err() == nil {
				s.fail("subscriber: connect", "subscriber %d: %v", sb.j, err)
			}
			select {
			case <-done:
				return
			case <-time.After(time.Second):
				continue
			}
		}
		session := time.NewTimer(time.Duration(float64(s.cfg.MaxSession) * (0.25 + 0.75*rand.Float64())))
		ended := false
	events:
		for {
			select {
			case ev, ok := <-sub.C:
				if !ok {
					sb.closed++
					s.fail("subscriber closed by the server", "subscriber %d: status %d: %v", sb.j, c.CloseStatus(), c.Err())
					break events
				}
				sb.take(ev)
			case <-session.C:
				if isFinal(final) {
					session.Reset(time.Hour) // stay for the end
					continue
				}
				break events
			case <-done:
				ended = true
				break events
			}
		}
		session.Stop()
		if n := c.Dropped(); n > 0 {
			s.fail("subscriber dropped events", "subscriber %d: %d (client buffer)", sb.j, n)
		}
		c.Close()
		for ev := range sub.C { // what arrived before the close
			sb.take(ev)
		}
		if ended {
			return
		}
		select {
		case <-time.After(time.Duration(rand.Int64N(int64(s.cfg.MaxOffline)))):
		case <-final:
		case <-done:
			return
		}
	}
}

func isFinal(final <-chan struct{}) bool {
	select {
	case <-final:
		return true
	default:
		return false
	}
}

func (sb *subscriber) take(ev client.Event) {
	sb.got = append(sb.got, ev.Seq)
	sb.pos = max(sb.pos, ev.Seq)
	sb.s.events.Add(1)
}

// connect dials node and subscribes: afresh the first time, then with
// since. After a resume it sends one more request: its reply comes after
// every replayed event (a connection's frames are handled in order), so
// then the subscriber has processed up to the resume's seq.
func (sb *subscriber) connect(ctx context.Context, node int) (*client.Client, *client.Subscription, error) {
	s := sb.s
	c, err := s.dial(ctx, node, 4096)
	if err != nil {
		return nil, nil, err
	}
	s.sessions.Add(1)
	since := sb.pos
	if since >= 0 {
		s.resumes.Add(1)
	}
	sub, err := sb.spec.subscribe(ctx, c, since)
	var se *client.StatusError
	if errors.As(err, &se) && se.Status == 410 {
		s.resyncs.Add(1)
		s.fail("resync", "subscriber %d (%s %s %v) since %d: %s", sb.j, sb.spec.stream, sb.spec.kind, sb.spec.pk, since, se.Errors)
		if sub, err = sb.spec.subscribe(ctx, c, -1); err == nil {
			sb.gaps = append(sb.gaps, span{since, sub.Seq})
			sb.pos = sub.Seq
		}
	}
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	if since < 0 {
		sb.from, sb.pos = sub.Seq, sub.Seq
		return c, sub, nil
	}
	if _, err := request(ctx, c, questions, client.Payload{Action: "retrieve", PK: s.hot[0].id}); err != nil {
		c.Close()
		return nil, nil, err
	}
	for drained := false; !drained; {
		select {
		case ev, ok := <-sub.C:
			if !ok {
				drained = true
				break
			}
			sb.take(ev)
		default:
			drained = true
		}
	}
	sb.pos = max(sb.pos, sub.Seq)
	return c, sub, nil
}
