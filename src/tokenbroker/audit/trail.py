"""The audit trail as the broker's one :class:`~tokenbroker.records.Recorder`.

``build_services`` puts an :class:`AuditTrail` in ``svc.recorder``: its ``record()`` waits for
the event's commit into the chain (management flows read the table right after), through the
same :class:`~tokenbroker.audit.writer.ChainedRecorder` the gateway queues into without
waiting. Every event of a process therefore goes through one writer and one chain per tenant.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbroker.audit.pseudonyms import Pseudonyms
from tokenbroker.audit.signing import Signer
from tokenbroker.audit.writer import ChainedRecorder
from tokenbroker.config import AuditSettings
from tokenbroker.records import Event, Recorder
from tokenbroker.services import Services
from tokenbroker.vault.envelope import Envelope, KeyRingProvider


class AuditTrail:
    def __init__(self, writer: ChainedRecorder, pseudonyms: Pseudonyms, signer: Signer) -> None:
        self.writer = writer
        self.pseudonyms = pseudonyms
        self.signer = signer

    async def record(self, event: Event) -> None:
        await self.writer.commit(event)

    # The gateway's recorder interface, for `durability = "sync"`.
    @property
    def healthy(self) -> bool:
        return self.writer.healthy

    async def flush(self) -> None:
        await self.writer.flush()

    async def close(self) -> None:
        await self.writer.close()


def build_trail(
    engine: AsyncEngine, envelope: Envelope, keys: KeyRingProvider, settings: AuditSettings
) -> AuditTrail:
    pseudonyms = Pseudonyms(envelope)
    writer = ChainedRecorder(engine, window=settings.commit_window_ms / 1000, pseudonyms=pseudonyms)
    return AuditTrail(writer, pseudonyms, Signer(keys))


def trail_of(svc: Services) -> AuditTrail:
    """The services' trail; services built around another recorder get one of their own."""
    if isinstance(svc.recorder, AuditTrail):
        return svc.recorder
    from tokenbroker.runtime import keyring_provider

    keys = keyring_provider(svc.settings)
    trail = build_trail(svc.engine, _envelope(svc), keys, svc.settings.audit)
    return trail


def _envelope(svc: Services) -> Envelope:
    envelope = getattr(svc.sealed, "_envelope", None)
    assert isinstance(envelope, Envelope)
    return envelope


def gateway_recorder(svc: Services) -> ChainedRecorder | AuditTrail:
    """What the gateway records through: the shared writer (``group``: queue and go on) or
    the trail itself (``sync``: each record waits for its commit)."""
    trail = trail_of(svc)
    return trail if svc.settings.audit.durability == "sync" else trail.writer


def is_trail(recorder: Recorder) -> bool:
    return isinstance(recorder, AuditTrail)
