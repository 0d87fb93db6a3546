package conn

import "github.com/streamapi/streamapi"

// queue is a connection's outbound frames, bounded in frames and in bytes
// (the bound of a slow consumer's backlog). It is a plain data structure:
// the connection's mutex guards it.
type queue struct {
	frames    []streamapi.Frame
	bytes     int
	batched   int // frames queued by pushBatch: not counted against maxFrames
	batchedB  int // their bytes: bounded apart, by maxBytes too
	maxFrames int
	maxBytes  int
}

// push appends f, or reports false when that would take the queue past
// either bound: the client is then a slow consumer. A frame bigger than
// the byte bound is taken when nothing else waits: the bound is on the
// backlog, not on one reply's size.
func (q *queue) push(f streamapi.Frame) bool {
	size := f.Len()
	if own := q.bytes - q.batchedB; len(q.frames)-q.batched >= q.maxFrames || own > 0 && own+size > q.maxBytes {
		return false
	}
	q.frames = append(q.frames, f)
	q.bytes += size
	return true
}

// pushBatch appends fs, or reports false when the batches waiting would
// then come to more bytes than the byte bound. Batches are bounded apart
// from the frames push queues, each by maxBytes, so a burst does not make
// the next live event overflow, and the queue holds at most twice the
// bound. Their frames are not counted against the frame bound: a burst of
// many small frames (objects entering view) is one event of the app's,
// bounded by its bytes.
func (q *queue) pushBatch(fs []streamapi.Frame) bool {
	size := 0
	for _, f := range fs {
		size += f.Len()
	}
	if q.batchedB+size > q.maxBytes {
		return false
	}
	q.frames = append(q.frames, fs...)
	q.bytes += size
	q.batched += len(fs)
	q.batchedB += size
	return true
}

// take returns every queued frame in order and empties the queue, which
// goes on in buf's storage: the writer hands back the batch it wrote (its
// frames cleared), so that two slices serve a connection's whole life.
func (q *queue) take(buf []streamapi.Frame) []streamapi.Frame {
	out := q.frames
	q.frames, q.bytes, q.batched, q.batchedB = buf[:0], 0, 0, 0
	return out
}

// reset drops every frame and the storage.
func (q *queue) reset() { q.frames, q.bytes, q.batched, q.batchedB = nil, 0, 0, 0 }

func (q *queue) len() int { return len(q.frames) }
