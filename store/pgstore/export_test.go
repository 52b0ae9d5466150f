package pgstore

// ListenerState reports the change listener's connection: whether it is
// connected, how many times it has connected, and its backend PID (0 when
// down or not started).
func ListenerState(st *Store) (connected bool, connects int64, pid uint32) {
	s := st.db
	s.mu.Lock()
	l := s.lis
	s.mu.Unlock()
	if l == nil {
		return false, 0, 0
	}
	return l.connected.Load(), l.connects.Load(), l.pid.Load()
}
