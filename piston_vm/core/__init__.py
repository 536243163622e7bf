"""Pure code, no I/O: errors, time, media names, tokens, validation, configuration."""
