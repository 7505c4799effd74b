package dispatcher

import (
	"fmt"

	"github.com/go-logr/logr"
	"github.com/segmentio/kafka-go"
)

// window is how many records of one partition may be in delivery at once.
func (c *Config) window(o deliveryOrder) int {
	if o == orderPartition {
		return 1
	}
	return c.MaxInFlight
}

// readerConfig is the partition reader of consumePartition.
//
// Its queue is the in-flight window: a fetched record waits in it only while the window is
// full, so a longer queue holds records no delivery can take yet. kafka-go allocates the queue
// (184 bytes a record) and a commit queue of the same length (32 bytes an entry, unused
// without a group) when the reader is made: at its default of 100, 21 KB per partition reader
// whether or not a record ever comes, 86 MB for 1,000 subscribers x 4 partitions (P5 1k).
//
// ReadLagInterval -1: a reader without a consumer group otherwise starts a goroutine on its
// first fetch that asks the leader for the partition's last offset every minute, on a
// connection of its own. The dispatcher reports lag from the fetches' high watermark
// (subscription.commit), so the poller is a goroutine and a connection per partition and
// subscriber for nothing.
func (s *subscription) readerConfig(p int, o deliveryOrder, log logr.Logger) kafka.ReaderConfig {
	cfg := s.d.cfg
	return kafka.ReaderConfig{
		Brokers:         cfg.Brokers,
		Topic:           cfg.Topic,
		Partition:       p,
		Dialer:          cfg.Dialer,
		MinBytes:        1,
		MaxBytes:        10 << 20,
		MaxWait:         cfg.MaxWait,
		QueueCapacity:   cfg.window(o),
		ReadLagInterval: -1,
		ReadBackoffMin:  readBackoffMin,
		ReadBackoffMax:  readBackoffMax,
		ErrorLogger:     kafka.LoggerFunc(func(f string, a ...any) { log.V(1).Info(fmt.Sprintf(f, a...)) }),
	}
}
