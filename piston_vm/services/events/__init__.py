"""The event engine: CouchDB changes → events → webhooks, e-mail and the live stream
(docs/events.md)."""
