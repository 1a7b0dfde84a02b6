"""NATS plumbing: connecting, the connection pool and sync runner, the publisher, every
name (``names``), declaration, KV and stream helpers, nats-py's private members
(``compat``), and the embedded server. Nothing here knows what a job is."""
