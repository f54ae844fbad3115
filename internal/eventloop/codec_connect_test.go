package eventloop

import (
	"bytes"
	"testing"

	"github.com/eclipse/paho.golang/packets"
)

// TestCodec_ConnectDownlinkLimits checks the CONNECT properties that
// bound incoming publishes: Receive Maximum as configured, and Topic
// Alias Maximum present and 0, so every PUBLISH carries its topic.
func TestCodec_ConnectDownlinkLimits(t *testing.T) {
	data, err := mqtt5Codec{}.encode(&connectPacket{ClientID: "c", ReceiveMaximum: 64, SessionExpiry: 60})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := packets.ReadPacket(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	props := cp.Content.(*packets.Connect).Properties
	if props.ReceiveMaximum == nil || *props.ReceiveMaximum != 64 {
		t.Errorf("Receive Maximum = %v, want 64", props.ReceiveMaximum)
	}
	if props.TopicAliasMaximum == nil || *props.TopicAliasMaximum != 0 {
		t.Errorf("Topic Alias Maximum = %v, want present and 0", props.TopicAliasMaximum)
	}
}

// TestCodec_SubscribeIdentifier checks that a SUBSCRIBE carries its
// Subscription Identifier, and that a CONNACK without the property allows
// identifiers.
func TestCodec_SubscribeIdentifier(t *testing.T) {
	data, err := mqtt5Codec{}.encode(&subscribePacket{PacketID: 3, Identifier: 7, Subscriptions: []Subscription{{Filter: "a/#", QoS: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := packets.ReadPacket(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if id := cp.Content.(*packets.Subscribe).Properties.SubscriptionIdentifier; id == nil || *id != 7 {
		t.Errorf("Subscription Identifier = %v, want 7", id)
	}
	if ack := fromPahoConnack(&packets.Connack{Properties: &packets.Properties{}}); !ack.SubscriptionIDs {
		t.Errorf("CONNACK without the property reports identifiers unavailable")
	}
	off := byte(0)
	if ack := fromPahoConnack(&packets.Connack{Properties: &packets.Properties{SubIDAvailable: &off}}); ack.SubscriptionIDs {
		t.Errorf("CONNACK with Subscription Identifiers Available 0 reports them available")
	}
}
