package dispatcher

import (
	"strings"
	"sync"

	"github.com/kafkachannel/kafkachannel/api/v1alpha1"
)

// Pausing a subscriber is how a ResetOffset moves its position safely (docs/architecture.md,
// "Replay"): while the channel carries the pause annotation for a subscriber, this dispatcher
// runs no consumer group member for it. Stopping the member is the ordinary graceful stop:
// fetching ends, in-flight deliveries finish (or are abandoned after DrainTimeout and so
// redelivered), handled offsets are committed and the member leaves the group. When every
// replica has done so the group is empty, which is the acknowledgement the manager waits for
// before it commits new offsets; a replica that starts while the annotation is set never joins.
// Removing the annotation starts a fresh member from the group's committed offsets.

// pausedFrom reads the pause annotations of a KafkaChannel: subscriber uid -> token.
func pausedFrom(annotations map[string]string) map[string]string {
	var out map[string]string
	for k, v := range annotations {
		uid, ok := strings.CutPrefix(k, v1alpha1.PauseAnnotationPrefix)
		if !ok || uid == "" {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[uid] = v
	}
	return out
}

// holdPaused stops the member of a paused subscriber, if one runs, and reports whether the
// subscriber is paused. The subscriber's last state stays as it was: a pause is not a failure,
// and the channel's readiness must not flap during a reset.
func (d *Dispatcher) holdPaused(c *Channel, uid string, subs map[string]*subscription, stopping *sync.WaitGroup) bool {
	token, paused := c.Paused[uid]
	if !paused {
		return false
	}
	s := subs[uid]
	if s == nil {
		return true
	}
	delete(subs, uid)
	d.log.Info("pausing subscriber for an offset reset: leaving its consumer group", "subscriber", uid, "group", s.group, "reset", token)
	stopping.Add(1)
	go func() {
		defer stopping.Done()
		s.stop()
		d.log.Info("subscriber paused: in-flight events handled and committed, group left", "subscriber", uid, "group", s.group)
	}()
	return true
}
