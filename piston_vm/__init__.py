"""piston_vm: the Piston voicemail-box REST API on CouchDB."""

__version__ = "0.1.0"
