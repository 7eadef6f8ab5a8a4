package status

// SetSubscribers gives the page push mode's subscriber counts per
// credential (sds.Server.Subscribers); nil shows none.
func (p *Page) SetSubscribers(f func() map[string]int) { p.subscribers.Store(&f) }

// subscriberCounts reads the counts, or nil when push mode is not wired.
func (p *Page) subscriberCounts() map[string]int {
	if f := p.subscribers.Load(); f != nil && *f != nil {
		return (*f)()
	}
	return nil
}
