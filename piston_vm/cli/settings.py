"""Settings for a command: the environment, then the command's own `--couchdb-url`."""

from __future__ import annotations

from piston_vm.core.config import CouchEndpoint, Settings, settings_from_env


def command_settings(couchdb_url: str | None) -> Settings:
    settings = settings_from_env()
    if couchdb_url:
        settings = settings.with_overrides(couchdb=CouchEndpoint.parse(couchdb_url))
    return settings
