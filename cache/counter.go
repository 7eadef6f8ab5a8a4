package cache

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// MintCounter counts events (mints) per name in Redis sorted sets, so every
// replica of a fleet sees the same rolling counts; it satisfies
// budget.Counter. Names are hashed, as token keys are: Redis never holds a
// credential name or broker client id in clear. It shares the tier's
// timeout and circuit breaker.
type MintCounter struct {
	r    *Redis
	keep time.Duration
}

// MintCounter returns a counter that remembers events for keep.
func (r *Redis) MintCounter(keep time.Duration) *MintCounter {
	return &MintCounter{r: r, keep: keep}
}

func (c *MintCounter) key(name string) string {
	sum := sha256.Sum256([]byte("tokenbroker.budget.v1\x00" + name))
	return c.r.opts.KeyPrefix + "budget:" + hex.EncodeToString(sum[:])
}

// Add records one event for name at at, and trims events older than keep.
func (c *MintCounter) Add(ctx context.Context, name string, at time.Time) error {
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	member := strconv.FormatInt(at.UnixNano(), 36) + "." + hex.EncodeToString(nonce[:]) // unique per event
	key := c.key(name)
	return c.r.do(ctx, func(ctx context.Context) error {
		_, err := c.r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.ZAdd(ctx, key, redis.Z{Score: float64(at.UnixMilli()), Member: member})
			p.ZRemRangeByScore(ctx, key, "-inf", "("+strconv.FormatInt(at.Add(-c.keep).UnixMilli(), 10))
			p.PExpire(ctx, key, c.keep)
			return nil
		})
		return err
	})
}

// Count returns how many events for name fall in [since, until].
func (c *MintCounter) Count(ctx context.Context, name string, since, until time.Time) (int64, error) {
	var n int64
	key := c.key(name)
	err := c.r.do(ctx, func(ctx context.Context) error {
		var err error
		n, err = c.r.client.ZCount(ctx, key, strconv.FormatInt(since.UnixMilli(), 10), strconv.FormatInt(until.UnixMilli(), 10)).Result()
		return err
	})
	return n, err
}
