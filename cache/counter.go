package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// MintCounter counts events (mints) per name in Redis sorted sets, so every
// replica of a fleet sees the same rolling counts; it satisfies
// budget.Counter. Names are keyed hashes, as token keys are (see
// Redis.Names): Redis never holds a credential name or broker client id in
// clear, and reading it cannot confirm a guessed one or see its count. It
// shares the tier's timeout and circuit breaker.
type MintCounter struct {
	r    *Redis
	keep time.Duration
}

// MintCounter returns a counter that remembers events for keep.
func (r *Redis) MintCounter(keep time.Duration) *MintCounter {
	return &MintCounter{r: r, keep: keep}
}

// key is name's sorted set under the i-th naming key (0: the encrypting key's).
func (c *MintCounter) key(i int, name string) string {
	return c.r.opts.KeyPrefix + "budget:{" + keyedTag(c.r.nameKeys[i], "budget", name) + "}"
}

// Event is one mint to record. Its ID makes it count once however often it
// is recorded: a retry after a reply that was lost, a replay of a mint the
// shared tier missed while it was away.
type Event struct {
	At time.Time
	ID string
}

// NewEvent is an event at at with an ID of its own.
func NewEvent(at time.Time) Event {
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	return Event{At: at, ID: strconv.FormatInt(at.UnixNano(), 36) + "." + hex.EncodeToString(nonce[:])}
}

// Add records one event for name at at, and trims events older than keep.
func (c *MintCounter) Add(ctx context.Context, name string, at time.Time) error {
	return c.Record(ctx, name, NewEvent(at))
}

// Record records events for name in one round trip, and trims events older
// than keep before the latest of them.
func (c *MintCounter) Record(ctx context.Context, name string, events ...Event) error {
	if len(events) == 0 {
		return nil
	}
	latest := events[0].At
	for _, e := range events[1:] {
		if e.At.After(latest) {
			latest = e.At
		}
	}
	key := c.key(0, name)
	return c.r.do(ctx, opCount, key, func(ctx context.Context) error {
		_, err := c.r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for _, e := range events {
				p.ZAdd(ctx, key, redis.Z{Score: float64(e.At.UnixMilli()), Member: e.ID})
			}
			p.ZRemRangeByScore(ctx, key, "-inf", "("+strconv.FormatInt(latest.Add(-c.keep).UnixMilli(), 10))
			p.PExpire(ctx, key, c.keep)
			return nil
		})
		return err
	})
}

// Count returns how many events for name fall in [since, until]. During a
// key rotation it adds the counts under every configured key's name: each
// event is recorded under exactly one, so nothing is counted twice and a
// rotation does not reset a budget.
func (c *MintCounter) Count(ctx context.Context, name string, since, until time.Time) (int64, error) {
	var total int64
	lo, hi := strconv.FormatInt(since.UnixMilli(), 10), strconv.FormatInt(until.UnixMilli(), 10)
	for i := range c.r.nameKeys {
		key := c.key(i, name)
		var n int64
		err := c.r.do(ctx, opCount, key, func(ctx context.Context) error {
			var err error
			n, err = c.r.client.ZCount(ctx, key, lo, hi).Result()
			return err
		})
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}
