"""Use cases between HTTP and storage: what each endpoint does, without knowing about aiohttp."""
