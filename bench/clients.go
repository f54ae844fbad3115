package main

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/autopaho/queue/file"
	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// runClients measures the durable modes of paho.mqtt.golang (FileStore)
// and paho.golang autopaho (file queue) at QoS 1. Neither calls fsync
// on its files; mqspool does on every commit.
func runClients(e *env, r *report) error {
	for _, size := range payloadSizes {
		store, err := drainPahoFileStore(e, size)
		if err != nil {
			return err
		}
		queue, err := drainAutopaho(e, size)
		if err != nil {
			return err
		}
		r.addClients(size, store, queue)
	}
	return nil
}

// drainPahoFileStore publishes Drain messages through paho.mqtt.golang
// with a FileStore and a persistent session, at most maxInflight
// unacknowledged, until ClientLimit, and times them until they arrived.
func drainPahoFileStore(e *env, size int) (rate, error) {
	dir, err := e.dir(fmt.Sprintf("paho-filestore-%d", size))
	if err != nil {
		return rate{}, err
	}
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + e.broker.addr()).
		SetClientID(e.clientID("paho")).SetCleanSession(false).
		SetStore(mqtt.NewFileStore(filepath.Join(dir, "store"))).SetAutoReconnect(false)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return rate{}, fmt.Errorf("paho.mqtt.golang connect to %s: %v", e.broker.addr(), tok.Error())
	}
	defer c.Disconnect(250)

	e.sub.reset()
	start := time.Now()
	sent := publishWindowed(c, size, e.sizes.Drain, start.Add(e.sizes.ClientLimit))
	last, err := e.sub.wait(sent, e.sizes.Wait)
	if err != nil {
		return rate{}, fmt.Errorf("paho.mqtt.golang FileStore, %d B: %w", size, err)
	}
	r := rate{Messages: sent, Elapsed: last.Sub(start), Bounded: sent < int64(e.sizes.Drain)}
	logf("paho FileStore %d B: %d in %s", size, sent, r.Elapsed)
	return r, nil
}

// publishWindowed publishes up to n messages, keeping at most
// maxInflight tokens open, and stops early at deadline. It returns how
// many it published.
func publishWindowed(c mqtt.Client, size, n int, deadline time.Time) int64 {
	payload := bytes.Repeat([]byte("p"), size)
	window := make(chan struct{}, maxInflight)
	var sent int64
	for sent < int64(n) && time.Now().Before(deadline) {
		window <- struct{}{}
		tok := c.Publish(dataTopic, 1, false, payload)
		go func() {
			tok.WaitTimeout(time.Minute)
			<-window
		}()
		sent++
	}
	return sent
}

// drainAutopaho fills an autopaho file queue with Drain messages while
// disconnected, then connects and times them until they arrived or
// ClientLimit passed.
func drainAutopaho(e *env, size int) (rate, error) {
	dir, err := e.dir(fmt.Sprintf("autopaho-queue-%d", size))
	if err != nil {
		return rate{}, err
	}
	q, err := file.New(dir, "queue", ".msg")
	if err != nil {
		return rate{}, fmt.Errorf("create autopaho file queue in %s: %w", dir, err)
	}
	if err := fillQueue(q, size, e.sizes.Drain); err != nil {
		return rate{}, err
	}
	u, err := url.Parse(e.broker.url())
	if err != nil {
		return rate{}, fmt.Errorf("parse broker URL %s: %w", e.broker.url(), err)
	}
	cfg := autopaho.ClientConfig{
		ServerUrls: []*url.URL{u}, KeepAlive: 30, SessionExpiryInterval: 3600, Queue: q,
		ClientConfig: paho.ClientConfig{ClientID: e.clientID("autopaho")},
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.sub.reset()
	start := time.Now()
	cm, err := autopaho.NewConnection(ctx, cfg)
	if err != nil {
		return rate{}, fmt.Errorf("start autopaho to %s: %w", u, err)
	}
	r := waitBounded(e, start)
	cancel()
	<-cm.Done()
	if r.Bounded {
		// Let messages already sent arrive before the next run resets
		// the subscriber's count.
		time.Sleep(2 * time.Second)
	}
	logf("autopaho file queue %d B: %d in %s (bounded %v)", size, r.Messages, r.Elapsed, r.Bounded)
	return r, nil
}

func fillQueue(q *file.Queue, size, n int) error {
	pub := &paho.Publish{QoS: 1, Topic: dataTopic, Payload: bytes.Repeat([]byte("p"), size)}
	var buf bytes.Buffer
	if _, err := pub.Packet().WriteTo(&buf); err != nil {
		return fmt.Errorf("encode PUBLISH: %w", err)
	}
	for range n {
		if err := q.Enqueue(bytes.NewReader(buf.Bytes())); err != nil {
			return fmt.Errorf("enqueue into autopaho file queue: %w", err)
		}
	}
	return nil
}

// waitBounded waits until Drain messages arrived or ClientLimit passed
// since start, and returns what arrived by then.
func waitBounded(e *env, start time.Time) rate {
	n := int64(e.sizes.Drain)
	last, err := e.sub.wait(n, e.sizes.ClientLimit-time.Since(start))
	if err == nil {
		return rate{Messages: n, Elapsed: last.Sub(start)}
	}
	return rate{Messages: e.sub.count.Load(), Elapsed: time.Since(start), Bounded: true}
}
