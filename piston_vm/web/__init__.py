"""aiohttp plumbing: the request pipeline, dispatch, gate, envelope, uploads, app keys."""
