// Package eventloop is the reconnecting MQTT 5 client at the core of
// mqspool. It takes publish requests from a [Source], keeps the MQTT
// session state, journals every change of that state through a [Journal]
// before writing the packets that depend on it, and reports what happens
// as [Event] values returned by [Loop.Poll].
//
// # Goroutines
//
// The goroutine that calls Poll owns everything: the connection, the
// session state, the timers and the queues. Poll runs only while it is
// called, the way an iterator is driven. Two helper goroutines exist:
//
//   - the committer, one per loop, calls Journal.Commit with every change
//     queued since the last call, so Poll never waits on the disk;
//   - the reader, one per connection, decodes packets and hands them to
//     Poll over a channel, as many at once as its buffer holds.
//
// A connect attempt also runs a short watcher that cancels it at the
// connect timeout. Close, Shutdown, and the end of a connection stop these
// goroutines before Poll returns [ErrClosed]. Commands such as Pause or
// Shutdown, and Incoming.Release, may be called from any goroutine: they
// queue a request that Poll runs. Stats is safe from any goroutine.
//
// # Durability
//
// A change is applied to the in-memory state when it is made and is
// durable once Commit returned. A PUBLISH of QoS 1 or 2, a PUBREL, and the
// PUBREC and PUBCOMP of an incoming QoS 2 flow are written only after the
// change they depend on is durable; acknowledgement events are returned
// only after their change is durable too.
//
// See docs/event-loop.md for the reasoning behind keep alive, reconnects
// and retransmission.
package eventloop
