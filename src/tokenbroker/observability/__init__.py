"""Operating the broker: JSON logs with redaction, Prometheus metrics, readiness.

The modules are imported directly (``observability.logging``, ``.metrics``, ``.routes``) so the
hot paths that record metrics do not pull in the web routes.
"""
