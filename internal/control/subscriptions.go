package control

// SubscriptionStatus is the state of one downlink subscription and its
// inbox.
type SubscriptionStatus struct {
	Filter   string `json:"filter"`
	Dir      string `json:"dir"`
	Received uint64 `json:"received"`
	// Duplicates counts the messages of Received whose PUBLISH had the
	// DUP flag set. It is not a count of messages stored twice, because
	// the broker also sets DUP on a message that mqspool dropped unstored
	// or whose earlier send was lost with its connection.
	Duplicates   uint64 `json:"duplicates"`
	Dropped      uint64 `json:"dropped_qos0"`
	Failed       uint64 `json:"failed"`
	BacklogFiles int    `json:"backlog_files"`
	BacklogBytes int64  `json:"backlog_bytes"`
	// BacklogStale means the last count of the inbox's new/ failed, so
	// the backlog figures are from an earlier count.
	BacklogStale bool `json:"backlog_stale"`
	// Full means the inbox reached max_files or max_bytes, so
	// acknowledgements are held until a consumer removes files.
	Full bool `json:"full"`
	// Rejected is the SUBACK reason when the broker refused the filter, or
	// why it was not sent when its SUBSCRIBE exceeds the broker's Maximum
	// Packet Size.
	Rejected string `json:"rejected,omitempty"`
	// Error is the error that makes the inbox unusable, and empty while
	// it works; acknowledgements are held meanwhile.
	Error string `json:"error,omitempty"`
	// Skipped counts QoS 1 messages not stored because the broker sent
	// them again on a later connection, where they were stored.
	Skipped uint64 `json:"skipped"`
}
