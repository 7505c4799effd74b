package dispatcher

import (
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// keyQueues serialises the deliveries of one partition per record key (ordered-by-key mode):
// a record whose key has a delivery in flight waits behind it and is delivered by the same
// goroutine once that one is handled, so a key's records go out one at a time in offset
// order while other keys proceed. Records without a key share the empty key: they keep
// per-partition order among themselves. Commits need nothing of this: the partition's tracker
// still commits only the contiguous handled prefix.
type keyQueues struct {
	mu sync.Mutex
	// waiting has an entry for every key with a delivery in flight: the records fetched
	// behind it, in offset order.
	waiting map[string][]queued
}

type queued struct {
	msg     *kafka.Message
	fetched time.Time
}

// enqueue reports whether m's key was idle, so the caller starts a run for it; otherwise m
// is queued behind the key's delivery in flight.
func (q *keyQueues) enqueue(m *kafka.Message, fetched time.Time) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if w, busy := q.waiting[string(m.Key)]; busy {
		q.waiting[string(m.Key)] = append(w, queued{m, fetched})
		return false
	}
	q.waiting[string(m.Key)] = nil
	return true
}

// run delivers m and then each record queued behind it on its key, until the key's queue is
// empty. A delivery is abandoned (not handled) only once the deliveries' context has ended,
// so the records queued behind an abandoned one are not sent either: they fail at once and
// stay uncommitted with it, for the partition's next owner to deliver in order.
func (q *keyQueues) run(m *kafka.Message, fetched time.Time, deliver func(*kafka.Message, time.Time)) {
	k := string(m.Key)
	for {
		deliver(m, fetched)
		q.mu.Lock()
		w := q.waiting[k]
		if len(w) == 0 {
			delete(q.waiting, k)
			q.mu.Unlock()
			return
		}
		m, fetched = w[0].msg, w[0].fetched
		q.waiting[k] = w[1:]
		q.mu.Unlock()
	}
}
