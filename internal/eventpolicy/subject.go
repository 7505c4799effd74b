package eventpolicy

// AdmitsSubject reports whether p names subject among its senders, whatever the event: a
// policy that does not cannot admit anything that sender sends, which the receiver can tell
// before reading the body.
func (p *Policy) AdmitsSubject(subject string) bool {
	for _, s := range p.subjects {
		if subjectMatches(s, subject) {
			return true
		}
	}
	return false
}

// NeedsEvent reports whether p's verdict on a sender it names depends on the event (it has
// filters), so it can only be judged once the body is decoded.
func (p *Policy) NeedsEvent() bool { return len(p.Spec.Filters) > 0 }
