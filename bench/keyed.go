package bench

import (
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/kafkachannel/kafkachannel/dispatcher"
)

// keysOf picks one of `keys` record keys for each record, at random with a fixed seed: keys
// collide in a partition's in-flight window as real traffic's do, the same way in every run.
func keysOf(keys int) func(int) []byte {
	r := rand.New(rand.NewPCG(25, uint64(keys)))
	return func(int) []byte { return []byte("key-" + strconv.Itoa(r.IntN(keys))) }
}

// FillKeyed is Fill with each record keyed by one of `keys` keys (keysOf).
func (e *Env) FillKeyed(ch Channel, prefix string, n, keys int) error {
	return e.fill(ch, prefix, n, keysOf(keys))
}

// KeyedDispatcherRate is DispatcherRate for a channel delivered ordered-by-key, its records
// keyed by one of `keys` keys.
func (e *Env) KeyedDispatcherRate(ch Channel, sink *Sink, n, keys int, budget time.Duration) (float64, error) {
	return e.dispatcherRate(ch, sink, n, dispatcher.Channel{OrderedByKey: true}, keysOf(keys), budget)
}
