package sds

import "time"

// throttleEvery is how often one kind of refusal that anyone can cause may
// log a line: a flood costs one line per interval.
const throttleEvery = 10 * time.Second

// throttle lets one event through per throttleEvery and counts the rest.
// Its user guards it (Server.mu).
type throttle struct {
	next time.Time
	n    int
}

// take counts one event and reports whether to log it, with the number of
// events it stands for.
func (t *throttle) take(now time.Time) (int, bool) {
	t.n++
	if now.Before(t.next) {
		return 0, false
	}
	t.next = now.Add(throttleEvery)
	n := t.n
	t.n = 0
	return n, true
}
