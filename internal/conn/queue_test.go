package conn

import (
	"strings"
	"testing"

	"github.com/streamapi/streamapi"
)

func frame(s string) streamapi.Frame { return streamapi.Frame{Head: []byte(s)} }

// The frame bound: the MaxQueue-th frame is taken, the next is refused.
func TestQueue_FrameBound(t *testing.T) {
	q := queue{maxFrames: 3, maxBytes: 1 << 20}
	for i := 0; i < 3; i++ {
		if !q.push(frame("x")) {
			t.Fatalf("frame %d of 3 refused", i+1)
		}
	}
	if q.push(frame("x")) {
		t.Fatal("a 4th frame taken by a queue of 3")
	}
	if q.len() != 3 || q.bytes != 3 {
		t.Fatalf("a refused push changed the queue: %d frames, %d bytes", q.len(), q.bytes)
	}
}

// The byte bound: exactly maxBytes is taken, one byte more is refused; a
// frame larger than the bound is taken only into an empty queue.
func TestQueue_ByteBound(t *testing.T) {
	q := queue{maxFrames: 100, maxBytes: 10}
	if !q.push(frame("123456")) || !q.push(frame("7890")) {
		t.Fatal("10 bytes refused by a 10-byte bound")
	}
	if q.push(frame("x")) {
		t.Fatal("an 11th byte taken")
	}
	q.take(nil)
	big := frame(strings.Repeat("b", 50))
	if !q.push(big) {
		t.Fatal("an oversized frame refused by an empty queue")
	}
	if q.push(frame("x")) {
		t.Fatal("a frame taken behind an oversized one")
	}
	q.take(nil)
	if !q.push(frame("x")) || q.push(big) {
		t.Fatal("an oversized frame taken behind another frame")
	}
	// Mid and Tail count too.
	q = queue{maxFrames: 100, maxBytes: 4}
	if !q.push(frame("ab")) || q.push(streamapi.Frame{Head: []byte("a"), Mid: []byte("b"), Tail: []byte("c")}) {
		t.Fatal("a three-part frame's bytes not all counted")
	}
}

// take returns the frames in order and empties the queue; a batch handed
// back is reused for later pushes without touching the batch taken since.
func TestQueue_TakeReusesWithoutAliasing(t *testing.T) {
	q := queue{maxFrames: 10, maxBytes: 100}
	q.push(frame("a"))
	q.push(frame("b"))
	first := q.take(nil)
	if len(first) != 2 || string(first[0].Head) != "a" || string(first[1].Head) != "b" || q.len() != 0 || q.bytes != 0 {
		t.Fatalf("take: %d frames, queue left %d/%d", len(first), q.len(), q.bytes)
	}
	q.push(frame("c"))
	second := q.take(first[:0]) // the writer hands back the batch it wrote
	q.push(frame("d"))          // goes into first's storage
	if string(second[0].Head) != "c" {
		t.Fatalf("the batch taken second changed under a push: %q", second[0].Head)
	}
	third := q.take(second[:0])
	if len(third) != 1 || string(third[0].Head) != "d" {
		t.Fatalf("third batch %v", third)
	}
	q.push(frame("e"))
	q.reset()
	if q.len() != 0 || q.bytes != 0 || q.frames != nil {
		t.Fatal("reset kept frames or storage")
	}
}

// A batch (a visibility burst) is bounded by its bytes alone: more frames
// than the frame bound pass, and do not count against later pushes; a
// batch over the byte bound fails whatever the queue holds.
func TestQueue_Batch(t *testing.T) {
	q := queue{maxFrames: 2, maxBytes: 10}
	if !q.push(frame("aaaa")) {
		t.Fatal("first frame refused")
	}
	burst := []streamapi.Frame{frame("b"), frame("b"), frame("b"), frame("b"), frame("b")}
	if !q.pushBatch(burst) {
		t.Fatal("a 5-frame, 5-byte batch refused by a 2-frame queue")
	}
	if !q.push(frame("c")) {
		t.Fatal("a frame after the batch refused: the batch counted against the frame bound")
	}
	if q.push(frame("d")) {
		t.Fatal("the frame bound no longer holds after a batch")
	}
	if q.pushBatch([]streamapi.Frame{frame(strings.Repeat("e", 11))}) {
		t.Fatal("an 11-byte batch taken by a 10-byte bound")
	}
	// Batches are bounded together: 5 bytes wait, 5 more fit, 1 more not.
	if !q.pushBatch([]streamapi.Frame{frame("fffff")}) || q.pushBatch([]streamapi.Frame{frame("g")}) {
		t.Fatal("the batches waiting are not bounded by the byte bound together")
	}
	// The bytes of batches do not count against push's bound: 5 of push's
	// own wait (aaaa, c), 5 more fit.
	q.maxFrames = 10
	if !q.push(frame("hhhhh")) {
		t.Fatal("a live frame refused for the bytes of the batches before it")
	}
	got := q.take(nil)
	if len(got) != 9 || q.batched != 0 || q.bytes != 0 || q.batchedB != 0 {
		t.Fatalf("take: %d frames, batched %d, bytes %d", len(got), q.batched, q.bytes)
	}
	empty := queue{maxFrames: 2, maxBytes: 10}
	if empty.pushBatch([]streamapi.Frame{frame(strings.Repeat("e", 11))}) {
		t.Fatal("an oversized batch taken by an empty queue")
	}
}
