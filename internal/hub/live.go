package hub

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/internal/livelist"
	"github.com/streamapi/streamapi/internal/wire"
)

// Live lists (docs/protocol.md §6.2): each stream that serves them keeps
// its lists in a livelist.Index, so that a change visits only the lists
// whose anchor condition its object meets (before or after the change),
// and each visited list applies the change to its window. Events are per
// list, carrying its request_id, index and count.
//
// Locks: a stream's live lists have their own mutex, held while a change
// is applied (a refill may read the store); the hub's mutex is never held
// while waiting for it.

// liveKey names a live list of a peer: its stream and request_id.
type liveKey struct {
	stream, rid string
}

// liveStream is the live lists of one stream.
type liveStream struct {
	stream, model string
	lister        streamapi.LiveLister
	readTx        func(ctx context.Context, fn func(ctx context.Context) error) error

	mu    sync.Mutex
	index *livelist.Index
	lists map[livelist.ID]*LiveSub
}

// LiveSub is one registered live list.
type LiveSub struct {
	id   livelist.ID
	ls   *liveStream
	peer streamapi.Peer
	rid  json.RawMessage
	dcrf bool
	list streamapi.LiveList
}

// List returns the subscription's live list.
func (s *LiveSub) List() streamapi.LiveList { return s.list }

var liveIDs atomic.Uint64

// liveReadTimeout bounds the reads (refills) of one change's live lists.
const liveReadTimeout = 10 * time.Second

// BindLive makes stream, bound to model, serve live lists of lister.
// readTx, when not nil, runs one change's refills in one read snapshot.
func (h *Hub) BindLive(stream, model string, lister streamapi.LiveLister, readTx func(ctx context.Context, fn func(ctx context.Context) error) error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ls := &liveStream{stream: stream, model: model, lister: lister, readTx: readTx, index: livelist.New(), lists: map[livelist.ID]*LiveSub{}}
	h.live[stream] = ls
	h.liveByModel[model] = append(h.liveByModel[model], ls)
}

// SubscribeLive registers list as p's live list on stream answered with
// request id rid (raw JSON); one of p's with the same stream and rid is
// replaced. Call it with the list's model's delivery held (feed.Resume),
// the list's first Read installed. It returns false for a stream that
// serves no live lists.
func (h *Hub) SubscribeLive(p streamapi.Peer, stream string, rid json.RawMessage, dcrf bool, list streamapi.LiveList) bool {
	k := liveKey{stream, ridKey(rid)}
	s := &LiveSub{id: livelist.ID(liveIDs.Add(1)), peer: p, rid: []byte(k.rid), dcrf: dcrf, list: list}
	h.mu.Lock()
	ls := h.live[stream]
	if ls == nil {
		h.mu.Unlock()
		return false
	}
	s.ls = ls
	ps := h.peer(p)
	if ps.live == nil {
		ps.live = map[liveKey]livelist.ID{}
	}
	old, had := ps.live[k]
	ps.live[k] = s.id
	h.mu.Unlock()

	ls.mu.Lock()
	if had {
		ls.removeLocked(old)
	}
	ls.lists[s.id] = s
	ls.index.Add(s.id, list.Conds())
	ls.mu.Unlock()
	// A Drop (or an unsubscribe) between the two locks found nothing of
	// it in ls to remove: undo.
	h.mu.RLock()
	ps = h.byPeer[p]
	gone := ps == nil || ps.live[k] != s.id
	h.mu.RUnlock()
	if gone {
		ls.mu.Lock()
		if ls.lists[s.id] == s {
			ls.removeLocked(s.id)
		}
		ls.mu.Unlock()
	}
	return true
}

// UnsubscribeLive removes p's live list on stream answered with rid. It
// reports whether there was one. No event of it is sent after it returns.
func (h *Hub) UnsubscribeLive(p streamapi.Peer, stream string, rid json.RawMessage) bool {
	k := liveKey{stream, ridKey(rid)}
	h.mu.Lock()
	ps := h.byPeer[p]
	if ps == nil {
		h.mu.Unlock()
		return false
	}
	id, ok := ps.live[k]
	if ok {
		delete(ps.live, k)
		h.forgetIfEmpty(p, ps)
	}
	ls := h.live[stream]
	h.mu.Unlock()
	if ok && ls != nil {
		ls.mu.Lock()
		ls.removeLocked(id)
		ls.mu.Unlock()
	}
	return ok
}

func (ls *liveStream) removeLocked(id livelist.ID) {
	delete(ls.lists, id)
	ls.index.Remove(id)
}

// dropLive removes the live lists of a departed peer (ids by stream),
// after h.mu is released.
func (h *Hub) dropLive(ids map[*liveStream][]livelist.ID) {
	for ls, list := range ids {
		ls.mu.Lock()
		for _, id := range list {
			ls.removeLocked(id)
		}
		ls.mu.Unlock()
	}
}

// LiveLists returns how many live lists the peers hold.
func (h *Hub) LiveLists() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	n := 0
	for _, ps := range h.byPeer {
		n += len(ps.live)
	}
	return n
}

// LiveOf returns the live lists of user's peers on stream.
func (h *Hub) LiveOf(user, stream string) []*LiveSub {
	h.mu.RLock()
	ls := h.live[stream]
	var ids []livelist.ID
	for p := range h.byUser[user] {
		for k, id := range h.byPeer[p].live {
			if k.stream == stream {
				ids = append(ids, id)
			}
		}
	}
	h.mu.RUnlock()
	if ls == nil || len(ids) == 0 {
		return nil
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	var out []*LiveSub
	for _, id := range ids {
		if s := ls.lists[id]; s != nil {
			out = append(out, s)
		}
	}
	return out
}

// InstallLive installs a new read of s's list (install, from its Read)
// and sends the events that take its client there, numbered seq: a
// reload after its user's view changed. Call it with the list's model's
// delivery held at seq. A list unsubscribed meanwhile is left alone.
func (h *Hub) InstallLive(ctx context.Context, s *LiveSub, seq int64, install func() streamapi.LiveUpdate) {
	ls := s.ls
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.lists[s.id] != s {
		return
	}
	h.sendLive(ctx, s, seq, install())
}

func closePeer(p streamapi.Peer) {
	if c, ok := p.(interface {
		Close(code uint16, reason string)
	}); ok {
		go c.Close(1011, "live list failed: subscribe again")
	}
}

// publishLive applies c to the live lists of its model whose anchor c's
// object meets, before or after the change, and sends their events.
func (h *Hub) publishLive(ctx context.Context, ls *liveStream, c *streamapi.Change) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if len(ls.lists) == 0 {
		return
	}
	lc := ls.lister.DecodeLive(c)
	var cands []*LiveSub
	seen := map[livelist.ID]bool{}
	for _, after := range []bool{false, true} {
		ls.index.Candidates(func(column string) (any, bool) { return lc.Value(after, column) }, func(id livelist.ID) {
			if !seen[id] {
				seen[id] = true
				if s := ls.lists[id]; s != nil {
					cands = append(cands, s)
				}
			}
		})
	}
	if len(cands) == 0 {
		return
	}
	reads := false
	for _, s := range cands {
		if s.list.MayRead(lc) {
			reads = true
			break
		}
	}
	done := 0
	var failed []*LiveSub
	run := func(ctx context.Context) error {
		for _, s := range cands[done:] {
			done++
			up, err := s.list.Change(ctx, lc)
			if err != nil {
				h.log.ErrorContext(ctx, "live list: apply a change", "stream", ls.stream, "seq", c.Seq, "err", err)
				failed = append(failed, s)
				continue
			}
			h.sendLive(ctx, s, c.Seq, up)
		}
		return nil
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), liveReadTimeout)
	defer cancel()
	if reads && ls.readTx != nil {
		if err := ls.readTx(rctx, run); err != nil {
			h.log.ErrorContext(ctx, "live list: read", "stream", ls.stream, "seq", c.Seq, "err", err)
		}
		failed = append(failed, cands[done:]...)
	} else {
		_ = run(rctx)
	}
	for _, s := range failed {
		ls.removeLocked(s.id)
		closePeer(s.peer)
	}
}

// sendLive sends a list's events for one change (or reload), numbered
// seq; a change that moved only the count sends a count event when the
// client asked for the count.
func (h *Hub) sendLive(ctx context.Context, s *LiveSub, seq int64, up streamapi.LiveUpdate) {
	var count *int
	if _, asked := s.list.Count(); asked {
		n := up.Count
		count = &n
	}
	e := wire.LiveEvent{Stream: s.ls.stream, Model: s.ls.model, Seq: seq, RequestID: s.rid, DCRF: s.dcrf, Count: count}
	var frames []streamapi.Frame
	send := func() {
		f, err := wire.EncodeLiveEvent(&e)
		if err != nil {
			h.log.ErrorContext(ctx, "encode live list event", "stream", s.ls.stream, "err", err)
			return
		}
		frames = append(frames, f)
	}
	// One change's (or a reload's) events go as one batch, bounded by
	// bytes apart from live frames: a reload of a window of 100 is not a
	// slow consumer's backlog.
	defer func() {
		if bs, ok := s.peer.(BatchSender); ok && len(frames) > 1 {
			bs.SendBatch(frames)
			return
		}
		for _, f := range frames {
			s.peer.Send(f)
		}
	}()
	for _, ev := range up.Events {
		e.Event = ev
		send()
	}
	if len(up.Events) == 0 && up.CountChanged && count != nil {
		e.Event = streamapi.LiveEvent{Action: wire.LiveCount}
		send()
	}
}

// HoldsLive reports whether p holds a live list on stream answered with
// rid: subscribing it again replaces it, at no cost.
func (h *Hub) HoldsLive(p streamapi.Peer, stream string, rid json.RawMessage) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	ps := h.byPeer[p]
	if ps == nil {
		return false
	}
	_, ok := ps.live[liveKey{stream, ridKey(rid)}]
	return ok
}
