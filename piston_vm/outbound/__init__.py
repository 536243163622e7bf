"""Talking to the world outside CouchDB: webhook receivers (docs/events.md)."""
