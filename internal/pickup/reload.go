package pickup

// SetRoutes replaces the routes while the pickup runs; files taken after
// it returns use the new ones. Invalid routes return an error and leave
// the current ones in place. It is safe to call from any goroutine.
func (p *Pickup) SetRoutes(rs []Route) error {
	routes, err := compileRoutes(rs)
	if err != nil {
		return err
	}
	p.routesMu.Lock()
	p.routes = routes
	p.routesMu.Unlock()
	return nil
}
