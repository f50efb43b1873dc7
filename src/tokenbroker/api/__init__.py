"""The HTTP edge: management API, OAuth callback and browser pages (aiohttp)."""
