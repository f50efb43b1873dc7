"""The bundled DEMO OAuth 2 / OpenID Connect provider and demo API.

Not a real identity provider: it exists so ``make demo`` has something to connect to and so the
tests can run a strict, scriptable and optionally hostile authorization server and resource
server on a loopback port. See :mod:`tokenbroker.demo.provider` and :mod:`tokenbroker.demo.api`.
"""
