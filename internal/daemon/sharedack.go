package daemon

import "sync"

// sharedAck joins the copies of one PUBLISH that several inboxes store
// into the single acknowledgement the broker expects. The event loop's
// Release is called once every inbox has released its copy, so the
// message is never acknowledged before it is in every inbox it belongs
// to. The first Decline gives the whole message up at once: the broker
// gets no acknowledgement and sends the message again, and the inboxes
// that have not written their copy yet decline it too.
//
// NOTE: a QoS 2 copy written before the decline is stored a second time
// after the restart if a consumer took its file meanwhile, because an
// inbox matches a redelivery only against the files in new/ at start.
type sharedAck struct {
	release, decline func() // the event loop's; nil does nothing

	mu          sync.Mutex
	pending     int  // copies not released yet
	done        bool // release or decline was passed on
	wasDeclined bool
}

func newSharedAck(copies int, release, decline func()) *sharedAck {
	return &sharedAck{release: release, decline: decline, pending: copies}
}

// part returns the Release and Decline of one copy. After either of them
// is called, the other does nothing, as with eventloop.Incoming.
func (a *sharedAck) part() (release, decline func()) {
	var once sync.Once
	return func() { once.Do(a.releaseCopy) }, func() { once.Do(a.declineAll) }
}

// releaseCopy counts one stored copy and releases the acknowledgement
// with the last one, unless a copy was declined.
func (a *sharedAck) releaseCopy() {
	a.mu.Lock()
	a.pending--
	last := a.pending == 0 && !a.done
	if last {
		a.done = true
	}
	a.mu.Unlock()
	if last && a.release != nil {
		a.release()
	}
}

// declineAll declines the message, unless it was released already.
func (a *sharedAck) declineAll() {
	a.mu.Lock()
	first := !a.done
	if first {
		a.done, a.wasDeclined = true, true
	}
	a.mu.Unlock()
	if first && a.decline != nil {
		a.decline()
	}
}

// declined reports whether a copy declined the message.
func (a *sharedAck) declined() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.wasDeclined
}
