"""The audit trail as the broker's one :class:`~tokenbroker.records.Recorder`.

``build_services`` puts an :class:`AuditTrail` in ``svc.recorder``: its ``record()`` waits for
the event's commit into the chain (management flows read the table right after), through the
same :class:`~tokenbroker.audit.writer.ChainedRecorder` the gateway queues into without
waiting (``[audit] writer = "inline"``). With ``writer = "process"`` (the default) the gateway
hands its records to a writer process instead (:mod:`tokenbroker.audit.process_recorder`);
both writers append to the same per-tenant chains, one locked batch at a time, as replicas do.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbroker.audit.process_recorder import ProcessRecorder
from tokenbroker.audit.pseudonyms import Pseudonyms
from tokenbroker.audit.signing import Signer
from tokenbroker.audit.writer import ChainedRecorder
from tokenbroker.config import AuditSettings
from tokenbroker.errors import ConfigError
from tokenbroker.records import Event, Recorder
from tokenbroker.services import Services
from tokenbroker.vault.envelope import Envelope, KeyRingProvider


class AuditTrail:
    def __init__(self, writer: ChainedRecorder, pseudonyms: Pseudonyms, signer: Signer) -> None:
        self.writer = writer
        self.pseudonyms = pseudonyms
        self.signer = signer
        self.gateway_writer: ProcessRecorder | None = None  # writer = "process", once started

    async def record(self, event: Event) -> None:
        await self.writer.commit(event)

    # The gateway's recorder interface, for `durability = "sync"`.
    @property
    def healthy(self) -> bool:
        return self.writer.healthy

    async def flush(self) -> None:
        """Commit everything queued now, the gateway's writer process included (erasure,
        export and retention read the table right after)."""
        if self.gateway_writer is not None:
            await self.gateway_writer.flush()
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
    from tokenbroker.vault.settings_keys import keyring_provider

    keys = keyring_provider(svc.settings)
    trail = build_trail(svc.engine, _envelope(svc), keys, svc.settings.audit)
    return trail


def _envelope(svc: Services) -> Envelope:
    envelope = getattr(svc.sealed, "_envelope", None)
    assert isinstance(envelope, Envelope)
    return envelope


GatewayRecorder = ChainedRecorder | AuditTrail | ProcessRecorder


async def open_gateway_recorder(svc: Services) -> GatewayRecorder:
    """What the gateway records through: a writer process of its own (``writer =
    "process"``), or the shared writer (``group``: queue and go on) or the trail itself
    (``sync``: each record waits for its commit). Close it with
    :func:`close_gateway_recorder`."""
    trail = trail_of(svc)
    audit = svc.settings.audit
    sync = audit.durability == "sync"
    if audit.writer == "inline" or not audit.enabled:
        return trail if sync else trail.writer
    if svc.settings.source is None:
        raise ConfigError(
            '[audit] writer = "process" needs the broker to run from a configuration file '
            '(its writer process reads the same file); use writer = "inline" when embedding'
        )
    recorder = ProcessRecorder(svc.settings.source, window=audit.commit_window_ms / 1000, sync=sync)
    await recorder.start()
    trail.gateway_writer = recorder
    return recorder


async def close_gateway_recorder(svc: Services, recorder: GatewayRecorder) -> None:
    await recorder.close()
    trail = trail_of(svc)
    if trail.gateway_writer is recorder:
        trail.gateway_writer = None


def is_trail(recorder: Recorder) -> bool:
    return isinstance(recorder, AuditTrail)
