package pickup

import "testing"

func TestPickup_SetRoutes(t *testing.T) {
	p, err := New(testOptions(t), newFakeStore())
	if err != nil {
		t.Fatal(err)
	}
	if r := p.matchRoute("a/f"); r != nil {
		t.Fatalf("route %q matched before any was set", r.Match)
	}

	if err := p.SetRoutes([]Route{{Match: "a/*", Topic: "routed"}}); err != nil {
		t.Fatal(err)
	}
	if r := p.matchRoute("a/f"); r == nil || r.Topic != "routed" {
		t.Errorf("after SetRoutes, a/f matched %v, want the route to routed", r)
	}

	if err := p.SetRoutes([]Route{{Match: "a/[", Topic: "x"}}); err == nil {
		t.Error("SetRoutes accepted an invalid glob")
	}
	if r := p.matchRoute("a/f"); r == nil || r.Topic != "routed" {
		t.Errorf("an invalid SetRoutes replaced the routes: a/f matched %v", r)
	}
}
