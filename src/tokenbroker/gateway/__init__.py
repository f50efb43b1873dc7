"""The API gateway: proxy requests to providers with the broker's credential injected.

Egress guards live in small pure modules: ``paths`` (RFC 3986 §3.3 path checks, SECURITY.md D4/D6),
``headers`` (RFC 9110 §7.6.1 allowlists, D5/D7/D8) and ``destination`` (SSRF guard with a pinned
resolver, OWASP SSRF cheat sheet, RFC 9728 §7.7, D1/D2).
"""
