package sds

import "time"

// throttleEvery is how often one kind of refusal that anyone can cause may
// log a line: a flood costs one line per interval (internal/logthrottle).
const throttleEvery = 10 * time.Second
