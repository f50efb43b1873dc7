"""Admin keys: a Bearer key selects the tenant every management call acts in.

Keys are compared by SHA-256 digest in constant time; a tenant never sees another's data
because every query in the management API is filtered by the tenant found here.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from aiohttp import web

from tokenbroker.config import TenantSettings
from tokenbroker.errors import Unauthorized


class AdminKeys:
    def __init__(self, tenants: Mapping[str, TenantSettings]) -> None:
        self._by_digest: list[tuple[bytes, str]] = []
        for name, tenant in tenants.items():
            for key in tenant.admin_keys:
                self._by_digest.append((hashlib.sha256(key.reveal().encode()).digest(), name))

    def __len__(self) -> int:
        return len(self._by_digest)

    def tenant_for(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("an admin key is required: Authorization: Bearer <key>")
        presented = hashlib.sha256(value.strip().encode()).digest()
        tenant: str | None = None
        for digest_, name in self._by_digest:  # no early exit: constant time over all keys
            if hmac.compare_digest(digest_, presented):
                tenant = name
        if tenant is None:
            raise Unauthorized("the admin key is not valid")
        return tenant
