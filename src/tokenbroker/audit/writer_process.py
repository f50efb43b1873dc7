"""The audit writer process: ``python -m tokenbroker.audit.writer_process --fd N CONFIG``.

A gateway worker (``[audit] writer = "process"``, the default for ``tokenbroker serve``) starts
one and hands it its records over a socket pair (:mod:`tokenbroker.audit.wire`), about one
frame per commit window, sent just in time for the commit (see
:mod:`tokenbroker.audit.process_recorder`). Here they go
through the same :class:`~tokenbroker.audit.writer.ChainedRecorder` as in-process: canonical
encoding, pseudonyms, hashing and the group commit run on another core, not on the worker's
event loop. After each commit this process reports how many records are durable, and whether
commits are failing, so the worker can answer ``sync`` requests, apply back-pressure and
refuse new requests (``on_failure = "deny"``) exactly as with the in-process writer.

The worker's end closing (a clean shutdown, or the worker killed outright) makes this process
commit everything it has received and exit: records already handed over survive the worker.
SIGINT and SIGTERM are ignored for that reason: a terminal's Ctrl-C or a service manager's
SIGTERM reaches the whole process group, and the worker's own shutdown ends this process once
its last records are here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbroker.audit.pseudonyms import Pseudonyms
from tokenbroker.audit.wire import frame, read_frame, to_prepared
from tokenbroker.audit.writer import ChainedRecorder
from tokenbroker.config import load_settings
from tokenbroker.db.engine import create_blocking_sqlite_engine, create_engine, is_sqlite
from tokenbroker.observability.logging import configure_logging
from tokenbroker.vault.envelope import Envelope

log = logging.getLogger("tokenbroker.audit")
CLOSE_SECONDS = 60.0


async def serve(sock: socket.socket, config: Path) -> None:
    from tokenbroker.vault.settings_keys import keyring_provider

    settings = load_settings(config)
    # SQLite: whole commits in one thread hand-off (see create_blocking_sqlite_engine);
    # PostgreSQL: asyncpg, no threads at all.
    url = settings.database_url
    engine = (
        create_blocking_sqlite_engine(url) if is_sqlite(url) else create_engine(url, pool_size=2)
    )
    reader, writer = await asyncio.open_connection(sock=sock)
    committed = 0

    def progress(count: int, failing: bool) -> None:
        nonlocal committed
        committed += count
        if not writer.is_closing():
            writer.write(frame(("progress", committed, failing)))

    recorder = ChainedRecorder(
        engine,
        # The worker holds records for most of their window and sends them just in time to be
        # committed by its end (process_recorder.py): what arrives is committed at once, and
        # what arrives during a commit goes into the next one.
        window=0.0,
        pseudonyms=Pseudonyms(Envelope(keyring_provider(settings))),
        on_progress=progress,
        max_queue=2**62,  # the worker bounds what it has outstanding
    )
    writer.write(frame(("ready",)))
    try:
        while (message := await read_frame(reader)) is not None:
            if message[0] == "records":
                recorder.enqueue([to_prepared(record) for record in message[1]])
                if message[2]:
                    recorder.hurry()
            elif message[0] == "flush":
                await recorder.flush()
                progress(0, False)
    finally:
        # Commit everything received, retrying for a while; a writer whose worker has gone
        # must not live on forever when the database never comes back.
        try:
            await asyncio.wait_for(recorder.close(), CLOSE_SECONDS)
        except TimeoutError:
            log.error(
                "the audit writer could not commit %d records within %.0f s and stops; "
                "they are lost",
                recorder.queue_depth,
                CLOSE_SECONDS,
            )
        with contextlib.suppress(ConnectionError):
            writer.close()
            await writer.wait_closed()
        if isinstance(engine, AsyncEngine):
            await engine.dispose()
        else:
            engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True, help="the socket shared with the worker")
    parser.add_argument("config", type=Path)
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    text = os.environ.get("TOKENBROKER_LOG_FORMAT") == "text"
    configure_logging(os.environ.get("TOKENBROKER_LOG_LEVEL", "INFO"), "text" if text else "json")
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)  # many short-lived objects per record: see runtime.py
    sock = socket.socket(fileno=args.fd)
    asyncio.run(serve(sock, args.config))


if __name__ == "__main__":
    main()
