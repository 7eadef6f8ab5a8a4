package testclock

import (
	"testing"
	"time"
)

func TestAfterFuncFiresInAdvanceInOrder(t *testing.T) {
	c := New(time.Unix(0, 0))
	var got []int
	c.AfterFunc(2*time.Second, func() { got = append(got, 2) })
	c.AfterFunc(time.Second, func() {
		got = append(got, 1)
		c.AfterFunc(0, func() { got = append(got, 10) }) // already due: runs at once
	})
	stopped := c.AfterFunc(1500*time.Millisecond, func() { got = append(got, -1) })
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop should report true once, then false")
	}
	c.Advance(999 * time.Millisecond)
	if len(got) != 0 {
		t.Fatalf("fired early: %v", got)
	}
	c.Advance(time.Second)
	if want := []int{1, 10}; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %v, want %v", got, want)
	}
	c.Advance(time.Millisecond)
	if len(got) != 3 || got[2] != 2 || c.Pending() != 0 {
		t.Fatalf("got %v, pending %d", got, c.Pending())
	}
	fired := false
	c.AfterFunc(0, func() { fired = true })
	if !fired {
		t.Fatal("AfterFunc(0) did not fire at once")
	}
}
