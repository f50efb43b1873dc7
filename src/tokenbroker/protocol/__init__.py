"""The pure OAuth 2.0 / OpenID Connect protocol layer: builders, parsers and checks.

One module per specification (RFC 6749, 7009, 7636, 8414, 8628, 9207, OIDC Core). Nothing here
does I/O or reads the clock: callers pass ``now`` in and send the prepared requests themselves.
"""
