"""Self-upgrade: the request's checks and pending record, the install into a
versioned runtime, and the runtime layout (current link, rollback)."""
