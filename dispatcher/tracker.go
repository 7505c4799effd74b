package dispatcher

import "sync"

// tracker knows which fetched offsets of a partition are handled, and so how far the group may
// commit: up to (not including) the oldest offset still in flight. Offsets arrive in increasing
// order but may have gaps (compaction, transaction markers), so it keeps the fetched offsets
// themselves rather than assuming offset+1.
type tracker struct {
	mu      sync.Mutex
	pending []int64 // fetched, not yet committable, in fetch order
	done    map[int64]bool
	next    int64 // the offset to commit: everything below it is handled
	hwm     int64
}

func newTracker(start int64) *tracker {
	return &tracker{next: start, done: map[int64]bool{}, hwm: -1}
}

func (t *tracker) add(offset, highWatermark int64) {
	t.mu.Lock()
	t.pending = append(t.pending, offset)
	t.hwm = highWatermark
	t.mu.Unlock()
}

// markDone marks an offset handled and advances the committable prefix.
func (t *tracker) markDone(offset int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.done[offset] = true
	i := 0
	for ; i < len(t.pending) && t.done[t.pending[i]]; i++ {
		delete(t.done, t.pending[i])
		t.next = t.pending[i] + 1
	}
	if i > 0 {
		t.pending = append(t.pending[:0], t.pending[i:]...)
	}
}

func (t *tracker) committable() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.next
}

func (t *tracker) highWatermark() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.hwm
}
