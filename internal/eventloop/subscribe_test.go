package eventloop

import (
	"reflect"
	"testing"
)

func TestDiffSubscriptions(t *testing.T) {
	a := Subscription{Filter: "a/#", QoS: 1, Identifier: 1}
	b := Subscription{Filter: "b/#", QoS: 2, Identifier: 2}
	bQoS1 := b
	bQoS1.QoS = 1
	bRenumbered := b
	bRenumbered.Identifier = 1
	cases := []struct {
		name       string
		have, want []Subscription
		add        []Subscription
		remove     []string
	}{
		{"no session", nil, []Subscription{a, b}, []Subscription{a, b}, nil},
		{"unchanged", []Subscription{a, b}, []Subscription{a, b}, nil, nil},
		{"removed", []Subscription{a, b}, []Subscription{b}, nil, []string{"a/#"}},
		{"added", []Subscription{a}, []Subscription{a, b}, []Subscription{b}, nil},
		{"options changed", []Subscription{a, b}, []Subscription{a, bQoS1}, []Subscription{bQoS1}, nil},
		{"identifier changed", []Subscription{a, b}, []Subscription{bRenumbered}, []Subscription{bRenumbered}, []string{"a/#"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			add, remove := diffSubscriptions(c.have, c.want)
			if !reflect.DeepEqual(add, c.add) {
				t.Errorf("add = %v, want %v", add, c.add)
			}
			if !reflect.DeepEqual(remove, c.remove) {
				t.Errorf("remove = %v, want %v", remove, c.remove)
			}
		})
	}
}
