"""The HTTP API the viewer calls. Never imports workers: it enqueues tasks by name."""
