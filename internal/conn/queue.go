package conn

import "github.com/streamapi/streamapi"

// queue is a connection's outbound frames, bounded in frames and in bytes
// (the bound of a slow consumer's backlog). It is a plain data structure:
// the connection's mutex guards it.
type queue struct {
	frames    []streamapi.Frame
	bytes     int
	batched   int // frames queued by pushBatch: not counted against maxFrames
	maxFrames int
	maxBytes  int
}

// push appends f, or reports false when that would take the queue past
// either bound: the client is then a slow consumer. A frame bigger than
// the byte bound is taken when nothing else waits: the bound is on the
// backlog, not on one reply's size.
func (q *queue) push(f streamapi.Frame) bool {
	size := f.Len()
	if len(q.frames)-q.batched >= q.maxFrames || q.bytes > 0 && q.bytes+size > q.maxBytes {
		return false
	}
	q.frames = append(q.frames, f)
	q.bytes += size
	return true
}

// pushBatch appends fs, or reports false when they come to more bytes
// than the byte bound. A batch is judged on its own, whatever waits
// before it (which push keeps within the bound), so a burst passes or
// fails by its size alone, and the queue holds at most twice the bound.
// Their number is not counted against the frame bound: a burst of many
// small frames (objects entering view) is one event of the app's,
// bounded by its bytes.
func (q *queue) pushBatch(fs []streamapi.Frame) bool {
	size := 0
	for _, f := range fs {
		size += f.Len()
	}
	if size > q.maxBytes {
		return false
	}
	q.frames = append(q.frames, fs...)
	q.bytes += size
	q.batched += len(fs)
	return true
}

// take returns every queued frame in order and empties the queue, which
// goes on in buf's storage: the writer hands back the batch it wrote (its
// frames cleared), so that two slices serve a connection's whole life.
func (q *queue) take(buf []streamapi.Frame) []streamapi.Frame {
	out := q.frames
	q.frames, q.bytes, q.batched = buf[:0], 0, 0
	return out
}

// reset drops every frame and the storage.
func (q *queue) reset() { q.frames, q.bytes, q.batched = nil, 0, 0 }

func (q *queue) len() int { return len(q.frames) }
