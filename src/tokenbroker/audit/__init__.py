"""The audit trail behind the recording seam: group-committed, hash-chained per tenant, signed.

``trail`` → ``writer`` → ``chain``; then ``verify``, ``query``, ``export``, ``retention``,
``erasure``.
"""
