// Package feed hands each model's committed changes to the fan-out exactly
// once and in seq order, whatever the broker does. The change log is the
// truth and the broker the fast path:
//
//   - a change whose seq was already delivered is dropped (a repeat);
//   - a change beyond the next expected seq first has the missing ones read
//     from the log and delivered (a publisher that crashed after commit, a
//     message lost while the broker connection was down);
//   - a poll of the log, every PollInterval and whenever the store signals a
//     write made outside streamapi, delivers what no broker message
//     announced (the last changes before a crash, trigger-logged writes).
//
// It also resumes subscriptions: under the model's lock, so that no change
// is delivered meanwhile, it reads what a subscriber missed after a given
// seq, and the subscription is registered before the lock is released: the
// replay ends exactly where live delivery starts.
package feed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/streamapi/streamapi"
)

// Options configures a Feed.
type Options struct {
	// PollInterval is how often the log is read for changes no broker
	// message announced; zero means 1 s.
	PollInterval time.Duration
	// Retention is how long the log keeps changes: a subscription can
	// resume from at most this far back. Zero means 24 h; negative keeps
	// them forever.
	Retention time.Duration
	// MaxChanges is how many changes of each model the log keeps at most,
	// whatever their age: its bound by size. Zero means 1,000,000;
	// negative means no bound.
	MaxChanges int64
	// ResumeLimit caps how many events one resume replays; beyond it the
	// client is told to resync. Zero means 512.
	ResumeLimit int
	// ResumeScan caps how many changes of the log one resume reads to
	// find its events: a resume further behind than that is told to
	// resync without a read. A resume of one object's subscription reads
	// only that object's changes (an index), so the cap is on those.
	// Zero means 2 × ResumeLimit.
	ResumeScan int
	Logger     *slog.Logger
}

// ErrResync means the subscriber cannot resume from the seq it gave: the
// log no longer holds what followed it, or never did.
var ErrResync = errors.New("resync required")

// Feed orders and completes the changes of a set of models.
type Feed struct {
	log     streamapi.ChangeLog
	deliver streamapi.ChangeHandler
	opts    Options
	lg      *slog.Logger
	models  map[string]*model

	stop context.CancelFunc
	done chan struct{}
}

type model struct {
	name string
	mu   sync.Mutex
	next int64 // the next seq to deliver
}

// batch is how many changes one read of the log takes.
const batch = 1000

// readTimeout bounds a read of the log made while holding a model's lock,
// so that a stalled database cannot hold up the model's delivery for ever.
const readTimeout = 10 * time.Second

// New returns a feed of the given models, delivering to deliver (the
// hub). It reads where each model's log ends: changes before that are not
// delivered live (a subscriber may still resume from them).
func New(ctx context.Context, log streamapi.ChangeLog, models []string, deliver streamapi.ChangeHandler, opts Options) (*Feed, error) {
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.Retention == 0 {
		opts.Retention = 24 * time.Hour
	}
	if opts.MaxChanges == 0 {
		opts.MaxChanges = 1_000_000
	}
	if opts.ResumeLimit <= 0 {
		opts.ResumeLimit = 512
	}
	if opts.ResumeScan <= 0 {
		opts.ResumeScan = 2 * opts.ResumeLimit
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	f := &Feed{log: log, deliver: deliver, opts: opts, lg: opts.Logger, models: map[string]*model{}}
	for _, name := range models {
		_, last, err := log.Bounds(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("feed: %w", err)
		}
		f.models[name] = &model{name: name, next: last + 1}
	}
	return f, nil
}

// Start runs the poller (and the log's trimming) until Stop.
func (f *Feed) Start(ctx context.Context) {
	ctx, f.stop = context.WithCancel(context.WithoutCancel(ctx))
	f.done = make(chan struct{})
	go f.run(ctx)
}

// Stop ends the poller and waits for it.
func (f *Feed) Stop() {
	if f.stop != nil {
		f.stop()
		<-f.done
	}
}

func (f *Feed) run(ctx context.Context) {
	defer close(f.done)
	poll := time.NewTicker(f.opts.PollInterval)
	defer poll.Stop()
	var trim <-chan time.Time
	if f.opts.Retention > 0 || f.opts.MaxChanges > 0 {
		every := time.Minute
		if f.opts.Retention > 0 {
			every = min(max(f.opts.Retention/10, time.Second), time.Minute)
		}
		t := time.NewTicker(every)
		defer t.Stop()
		trim = t.C
		f.trim(ctx)
	}
	var notify <-chan string
	if n, ok := f.log.(streamapi.ChangeNotifier); ok {
		notify = n.Notify()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-poll.C:
			f.PollAll(ctx)
		case _, ok := <-notify:
			if !ok {
				notify = nil
				continue
			}
			f.PollAll(ctx)
		case <-trim:
			f.trim(ctx)
		}
	}
}

func (f *Feed) trim(ctx context.Context) {
	if f.opts.Retention > 0 {
		n, err := f.log.Trim(ctx, time.Now().Add(-f.opts.Retention))
		switch {
		case err != nil && ctx.Err() == nil:
			f.lg.ErrorContext(ctx, "trim the change log", "err", err)
		case n > 0:
			f.lg.DebugContext(ctx, "trimmed the change log", "changes", n, "retention", f.opts.Retention)
		}
	}
	if f.opts.MaxChanges > 0 {
		for name := range f.models {
			n, err := f.log.TrimKeep(ctx, name, f.opts.MaxChanges)
			switch {
			case err != nil && ctx.Err() == nil:
				f.lg.ErrorContext(ctx, "trim the change log to its size", "model", name, "err", err)
			case n > 0:
				f.lg.DebugContext(ctx, "trimmed the change log to its size", "model", name, "changes", n, "keep", f.opts.MaxChanges)
			}
		}
	}
}

// PollAll delivers, for every model, what the log holds beyond what was
// delivered. The log is read without the model's lock, so a slow read does
// not hold up broker delivery.
func (f *Feed) PollAll(ctx context.Context) {
	names := make([]string, 0, len(f.models))
	for name := range f.models {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		m := f.models[name]
		for ctx.Err() == nil {
			m.mu.Lock()
			after := m.next - 1
			m.mu.Unlock()
			cs, err := f.log.ChangesAfter(ctx, name, after, batch)
			if err != nil {
				if ctx.Err() == nil {
					f.lg.ErrorContext(ctx, "read the change log", "model", name, "err", err)
				}
				break
			}
			m.mu.Lock()
			for i := range cs {
				f.deliverLocked(ctx, m, cs[i])
			}
			m.mu.Unlock()
			if len(cs) < batch {
				break
			}
		}
	}
}

// Receive is the broker's handler: it delivers c after whatever the log
// holds between the last delivered seq and c's, and drops c if it was
// delivered already.
func (f *Feed) Receive(ctx context.Context, c streamapi.Change) {
	m := f.models[c.Model]
	if m == nil || c.Seq == 0 {
		// Not a model of this feed, or a store without a log: pass it on.
		f.deliver(ctx, c)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c.Seq < m.next {
		return
	}
	if err := f.catchUpLocked(ctx, m, c.Seq-1); err != nil {
		// Leave c to the poller: delivering it now would skip the gap.
		f.lg.ErrorContext(ctx, "fill a gap from the change log", "model", m.name, "from", m.next, "to", c.Seq, "err", err)
		return
	}
	f.deliverLocked(ctx, m, c)
}

// deliverLocked delivers c if it is the next (or, after a trimmed gap, a
// later) change of m. m.mu is held.
func (f *Feed) deliverLocked(ctx context.Context, m *model, c streamapi.Change) {
	if c.Seq < m.next {
		return
	}
	if c.Seq > m.next {
		f.lg.WarnContext(ctx, "changes trimmed from the log before this node delivered them", "model", m.name, "from", m.next, "to", c.Seq-1)
	}
	f.deliver(ctx, c)
	m.next = c.Seq + 1
}

// SetStart makes model's live delivery start after seq, before Start: a
// relation's index loaded as of seq is brought up to date by the changes
// that follow it (the poller and the broker deliver them).
func (f *Feed) SetStart(model string, seq int64) {
	if m := f.models[model]; m != nil {
		m.mu.Lock()
		m.next = seq + 1
		m.mu.Unlock()
	}
}

// Position returns the last seq of model delivered (0 for a model the
// feed does not know).
func (f *Feed) Position(model string) int64 {
	m := f.models[model]
	if m == nil {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.next - 1
}

// Cut makes a consistent cut across models: it holds their delivery
// (their locks, in name order), runs read, which returns for each model
// the seq its reads reflect (one snapshot), delivers each model's changes
// up to that seq, runs apply with each model's last delivered seq, and
// lets delivery go on. Should the read or the delivery fail, apply still
// runs under the locks, with that error and the seqs delivered so far,
// and Cut returns the error. Changes after the cut are delivered after apply,
// those up to it before: apply can send what a read found without
// repeating or missing a change. Subscriptions being registered (Resume,
// Done) are either wholly before the cut or wholly after it. It is called
// from a delivery (a relation's membership change), whose own model must
// not be among models. The read runs under the feed's read timeout and
// is not cancelled with ctx.
func (f *Feed) Cut(ctx context.Context, models []string, read func(ctx context.Context) (map[string]int64, error), apply func(delivered map[string]int64, err error)) error {
	names := append([]string(nil), models...)
	sort.Strings(names)
	var held []*model
	defer func() {
		for _, m := range held {
			m.mu.Unlock()
		}
	}()
	for i, name := range names {
		if i > 0 && names[i-1] == name {
			continue
		}
		m := f.models[name]
		if m == nil {
			continue // not a model of this feed: nothing of it to hold
		}
		m.mu.Lock()
		held = append(held, m)
	}
	delivered := func() map[string]int64 {
		out := make(map[string]int64, len(held))
		for _, m := range held {
			out[m.name] = m.next - 1
		}
		return out
	}
	ctx = context.WithoutCancel(ctx)
	rctx, cancel := context.WithTimeout(ctx, readTimeout)
	seqs, err := read(rctx)
	cancel()
	if err != nil {
		err = fmt.Errorf("feed: cut: %w", err)
		apply(delivered(), err)
		return err
	}
	for _, m := range held {
		if err := f.catchUpLocked(ctx, m, seqs[m.name]); err != nil {
			apply(delivered(), err)
			return err
		}
	}
	apply(delivered(), nil)
	return nil
}

// A Resume is a subscription being resumed. While it is open the model's
// live delivery waits, so Done must be called, promptly and once.
type Resume struct {
	// Changes are the missed changes that matched, in seq order.
	Changes []streamapi.Change
	// Seq is the last seq delivered before the subscription starts: live
	// events follow it.
	Seq int64
	m   *model
}

// Done registers the subscription (register runs under the model's lock,
// so no change falls between the replay and live delivery) and lets
// delivery go on.
func (r *Resume) Done(register func()) {
	defer r.m.mu.Unlock()
	if register != nil {
		register()
	}
}

// Resume prepares a subscription to model that starts after seq since
// (since < 0: from now), replaying the changes for which match is true;
// match may rewrite the change as the subscriber sees it. pk, when not
// nil, is the canonical pk of the one object the subscription is about:
// only its changes are read. It returns ErrResync when the log no longer
// holds what followed since, when since is ahead of the log, when more
// than ResumeLimit changes match, or when more than ResumeScan changes
// would have to be read. On success the model's lock is held until the
// Resume's Done.
func (f *Feed) Resume(ctx context.Context, name string, since int64, pk json.RawMessage, match func(*streamapi.Change) bool) (*Resume, error) {
	m := f.models[name]
	if m == nil {
		return nil, fmt.Errorf("feed: no model %q", name)
	}
	rd := &reader{f: f, name: name, pk: pk, match: match}
	after := since
	if since >= 0 {
		first, last, err := f.log.Bounds(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("feed: %w", err)
		}
		if since > last || since+1 < first {
			return nil, ErrResync
		}
		if pk == nil && last-since > int64(f.opts.ResumeScan) {
			return nil, ErrResync // too far behind to read for
		}
		// The bulk, without the lock, up to what this node had delivered a
		// moment ago (it only grows): nothing past it, which comes live.
		m.mu.Lock()
		upto := min(last, m.next-1)
		m.mu.Unlock()
		if after, err = rd.collect(ctx, since, upto); err != nil {
			return nil, err
		}
	}
	m.mu.Lock()
	if since < 0 {
		return &Resume{Seq: m.next - 1, m: m}, nil
	}
	// A client may come from a node that is ahead of this one: bring this
	// node's subscribers up to since first (they are owed those changes
	// anyway), so that live delivery starts after since and repeats
	// nothing the client saw.
	if err := f.catchUpLocked(ctx, m, since); err != nil {
		m.mu.Unlock()
		return nil, err
	}
	// The rest, up to what was delivered live, under the lock.
	if after < m.next-1 {
		if _, err := rd.collect(ctx, max(after, since), m.next-1); err != nil {
			m.mu.Unlock()
			return nil, err
		}
	}
	if pk != nil {
		// An object's changes are not consecutive, so a trim during the
		// read shows only in the bounds.
		if first, _, err := f.log.Bounds(ctx, name); err != nil || since+1 < first {
			m.mu.Unlock()
			if err != nil {
				return nil, fmt.Errorf("feed: %w", err)
			}
			return nil, ErrResync
		}
	}
	return &Resume{Changes: rd.got, Seq: m.next - 1, m: m}, nil
}

// Snapshot prepares a subscription that starts from a read (a live
// list's first window): under model's lock, read runs (under the feed's
// read timeout, one read snapshot) and returns the model's last seq in
// it; the changes up to that seq are delivered, so that live delivery
// to the new subscription starts right after what it read. On success
// the lock is held until the Resume's Done, whose Seq is that seq.
func (f *Feed) Snapshot(ctx context.Context, name string, read func(ctx context.Context) (int64, error)) (*Resume, error) {
	m := f.models[name]
	if m == nil {
		return nil, fmt.Errorf("feed: no model %q", name)
	}
	m.mu.Lock()
	rctx, cancel := context.WithTimeout(ctx, readTimeout)
	seq, err := read(rctx)
	cancel()
	if err == nil {
		if seq < m.next-1 {
			err = fmt.Errorf("feed: a snapshot at %d of %s, behind its delivery at %d", seq, name, m.next-1)
		} else {
			err = f.catchUpLocked(context.WithoutCancel(ctx), m, seq)
		}
	}
	if err != nil {
		m.mu.Unlock()
		return nil, err
	}
	return &Resume{Seq: seq, m: m}, nil
}

// catchUpLocked delivers m's changes up to seq upto from the log. m.mu is
// held.
func (f *Feed) catchUpLocked(ctx context.Context, m *model, upto int64) error {
	for m.next-1 < upto {
		rctx, cancel := context.WithTimeout(ctx, readTimeout)
		cs, err := f.log.ChangesAfter(rctx, m.name, m.next-1, int(min(upto-m.next+1, batch)))
		cancel()
		if err != nil {
			return fmt.Errorf("feed: catch up: %w", err)
		}
		if len(cs) == 0 {
			return fmt.Errorf("feed: catch up: the log has no change of %s after %d", m.name, m.next-1)
		}
		for i := range cs {
			f.deliverLocked(ctx, m, cs[i])
		}
	}
	return nil
}

// reader collects a resume's matching changes, counting what it reads.
type reader struct {
	f       *Feed
	name    string
	pk      json.RawMessage
	match   func(*streamapi.Change) bool
	got     []streamapi.Change
	scanned int
}

// collect appends the matching changes in (after, upto] and returns the
// last seq read.
func (r *reader) collect(ctx context.Context, after, upto int64) (int64, error) {
	f := r.f
	for after < upto {
		left := f.opts.ResumeScan - r.scanned
		n := int(min(upto-after, batch, int64(left)+1))
		var cs []streamapi.Change
		var err error
		if r.pk != nil {
			cs, err = f.log.ChangesOf(ctx, r.name, r.pk, after, upto, n)
		} else {
			cs, err = f.log.ChangesAfter(ctx, r.name, after, n)
		}
		if err != nil {
			return 0, fmt.Errorf("feed: resume: %w", err)
		}
		if r.scanned += len(cs); r.scanned > f.opts.ResumeScan {
			return 0, ErrResync
		}
		if len(cs) == 0 {
			if r.pk != nil {
				return upto, nil // the object has no more changes in the range
			}
			return 0, ErrResync // trimmed meanwhile
		}
		for i := range cs {
			if r.pk == nil && cs[i].Seq != after+1 {
				return 0, ErrResync // a hole: trimmed meanwhile
			}
			if cs[i].Seq > upto {
				return upto, nil
			}
			if r.match(&cs[i]) {
				if len(r.got) == f.opts.ResumeLimit {
					return 0, ErrResync
				}
				r.got = append(r.got, cs[i])
			}
			after = cs[i].Seq
		}
		if r.pk != nil && len(cs) < n {
			return upto, nil
		}
	}
	return after, nil
}
