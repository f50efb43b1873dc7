"""What the gateway derives from a provider's spec, once per provider and process."""

from __future__ import annotations

from dataclasses import dataclass

from tokenbroker.gateway.audit_path import AuditPaths
from tokenbroker.gateway.headers import extra_allowed
from tokenbroker.policy.operations import OperationIndex
from tokenbroker.providers.model import ProviderSpec


@dataclass(frozen=True)
class ProviderRules:
    operations: OperationIndex  # which declared operation a request is
    extra_headers: frozenset[str]  # request headers the template lets through
    audit_paths: AuditPaths  # the path a request is recorded with

    @classmethod
    def of(cls, spec: ProviderSpec) -> ProviderRules:
        return cls(
            OperationIndex(spec.operations),
            extra_allowed(spec.forward_headers),
            AuditPaths(spec.audit_redact_paths),
        )
