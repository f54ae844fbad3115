package main

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/autopaho/queue/file"
	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
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

// drainPahoFileStore times the drain of Drain messages stored in a
// paho.mqtt.golang FileStore before the client connects. The client then
// connects with Clean Session 0 and resends them, at most maxInflight at a
// time. The store keys messages by packet identifier, so it holds at most
// 65 535, and the drain runs in parts of PubChunk messages whose times are
// added up.
func drainPahoFileStore(e *env, size int) (rate, error) {
	dir, err := e.dir(fmt.Sprintf("paho-filestore-%d", size))
	if err != nil {
		return rate{}, err
	}
	var total rate
	for part := 0; total.Messages < int64(e.sizes.Drain); part++ {
		n := min(e.sizes.Drain-int(total.Messages), e.sizes.PubChunk)
		store := filepath.Join(dir, fmt.Sprintf("store-%d", part))
		fillFileStore(store, size, n)
		r, err := resumeFileStore(e, store, n, total.Elapsed)
		if err != nil {
			return rate{}, fmt.Errorf("paho.mqtt.golang FileStore, %d B: %w", size, err)
		}
		total.Messages += r.Messages
		total.Elapsed += r.Elapsed
		if r.Bounded {
			total.Bounded = true
			break
		}
	}
	logf("paho FileStore %d B: %d in %s (bounded %v)", size, total.Messages, total.Elapsed, total.Bounded)
	return total, nil
}

// fillFileStore writes n outbound QoS 1 PUBLISH packets into a FileStore
// in dir, under the keys the client gives them.
func fillFileStore(dir string, size, n int) {
	fs := mqtt.NewFileStore(dir)
	fs.Open()
	defer fs.Close()
	payload := bytes.Repeat([]byte("p"), size)
	for id := 1; id <= n; id++ {
		pub := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
		pub.Qos, pub.TopicName, pub.Payload, pub.MessageID = 1, dataTopic, payload, uint16(id)
		fs.Put("o."+strconv.Itoa(id), pub)
	}
}

// resumeFileStore connects a client to the filled store and times it
// until the subscriber has n messages, or until ClientLimit less used
// has passed.
func resumeFileStore(e *env, store string, n int, used time.Duration) (rate, error) {
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + e.broker.addr()).
		SetClientID(e.clientID("paho")).SetCleanSession(false).
		SetStore(mqtt.NewFileStore(store)).SetAutoReconnect(false).
		SetMaxResumePubInFlight(maxInflight)
	c := mqtt.NewClient(opts)
	e.sub.reset()
	start := time.Now()
	if tok := c.Connect(); !tok.WaitTimeout(e.sizes.ClientLimit) || tok.Error() != nil {
		return rate{}, fmt.Errorf("connect to %s: %v", e.broker.addr(), tok.Error())
	}
	defer c.Disconnect(250)

	limit := e.sizes.ClientLimit - used - time.Since(start)
	last, err := e.sub.wait(int64(n), limit)
	if err == nil {
		return rate{Messages: int64(n), Elapsed: last.Sub(start)}, nil
	}
	return rate{Messages: e.sub.count.Load(), Elapsed: time.Since(start), Bounded: true}, nil
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
