package main

import "testing"

func TestGCPercentFor(t *testing.T) {
	for _, tc := range []struct {
		live uint64
		want int
	}{
		{0, 100},
		{10 << 20, 100},
		{gcHeadroom, 100},
		{2 * gcHeadroom, 50},
		{4 * gcHeadroom, 25},
		{6 * gcHeadroom, 16},
		{40 * gcHeadroom, minGCPercent},
	} {
		if got := gcPercentFor(tc.live); got != tc.want {
			t.Errorf("gcPercentFor(%d MiB) = %d, want %d", tc.live>>20, got, tc.want)
		}
	}
}
