"""Benchmark the audit writer process alone: its CPU per record against a bare INSERT.

A real writer process (``python -m tokenbroker.audit.writer_process``, SQLite) gets the
gateway's two records per request (``proxy.started``, ``proxy.finished``) as a worker sends
them: one frame per commit window (``--window-ms``) of at most 128 records, at a steady
rate. Its CPU (every thread, from ``/proc``) per record covers decoding, canonical encoding,
pseudonyms, hashing and the group commit.

The baseline, measured in the same run on the same core, is the floor of any writer in Python:
the very rows the writer committed, inserted again into an empty database of the same schema
with ``sqlite3``'s ``executemany``, in commits of the same size. The ratio is what the chain
costs on top of storing the rows.

Usage: ``python bench/audit_writer.py [--records N] [--rate RECORDS_PER_SECOND]``
"""

from __future__ import annotations

import argparse
import marshal
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tokenbroker.audit.process_recorder import SEND_AT_MOST
from tokenbroker.audit.wire import Record, frame
from tokenbroker.records import Scalar
from tokenbroker.vault.keyring import create_key_file

WRITER_CORE = 0
FEEDER_CORE = 1
ADMIN_KEY = "bench-admin-key-0123456789"
AGENT = "agt_HvXDsaZb07_F_epSkKOsrw"
COLUMNS = (
    "tenant_id, seq, prev_hash, at, type, actor, user_id, user_ref, agent_id, provider, "
    "connection_id, outcome, detail, hash"
)
CONFIG = """\
public_url = "http://127.0.0.1:9"
database_url = "sqlite:///{db}"
key_file = "tokenbroker.keys"

[admin]
key_env = "TB_ADMIN"

[audit]
writer = "process"
"""


def requests(count: int, now: float) -> list[Record]:
    """``count`` requests' records, as the gateway builds them."""
    base: dict[str, Scalar] = {
        "agent_id": AGENT, "grant_id": "grt_m8qShyb4p18Cx9i-Oeb-AQ", "method": "GET",
        "operation": "files.list", "path": "/files", "raw": False,
    }  # fmt: skip
    records: list[Record] = []
    for i in range(count):
        rid = f"req-{now:.0f}-{i}"
        who = ("default", f"agent:{AGENT}", "usr_alice", "demo", "conn_kOK1g3CpcalltIXchbsmew")
        records.append(("proxy.started", *who, "allowed", {**base, "request_id": rid}, now))
        finished: dict[str, Scalar] = {
            **base, "request_id": rid, "status": 200, "bytes_in": 0, "bytes_out": 179,
            "latency_ms": 0.21,
        }  # fmt: skip
        records.append(("proxy.finished", *who, "status:200", finished, now))
    return records


def cpu_seconds(pid: int) -> float:
    """User and system time of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def migrated(tmp: Path, name: str) -> Path:
    config = tmp / f"{name}.toml"
    config.write_text(CONFIG.format(db=tmp / f"{name}.db"), encoding="utf-8")
    env = {**os.environ, "TB_ADMIN": ADMIN_KEY}
    cli = [sys.executable, "-m", "tokenbroker.cli", "--config", str(config), "migrate"]
    subprocess.run(cli, env=env, check=True, capture_output=True, cwd=tmp)
    return config


def frame_size(rate: float, window: float) -> int:
    """Records per frame as a worker sends them: a window's, at most ``SEND_AT_MOST``."""
    return max(2, min(round(rate * window), SEND_AT_MOST) // 2 * 2)


def run_writer(config: Path, records: int, rate: float, window: float) -> tuple[float, float]:
    """(writer CPU seconds per record, seconds) for ``records`` records at ``rate``/s."""
    ours, theirs = socket.socketpair()
    env = {**os.environ, "TB_ADMIN": ADMIN_KEY}
    argv = [sys.executable, "-m", "tokenbroker.audit.writer_process", "--fd", str(theirs.fileno())]
    proc = subprocess.Popen([*argv, str(config)], pass_fds=[theirs.fileno()], env=env)
    theirs.close()
    os.sched_setaffinity(proc.pid, {WRITER_CORE})
    incoming = ours.makefile("rb")

    def message() -> tuple[object, ...]:
        size = int.from_bytes(incoming.read(4), "big")
        loaded: tuple[object, ...] = marshal.loads(incoming.read(size))
        return loaded

    if message() != ("ready",):
        raise SystemExit("the writer process did not start")
    per_frame = frame_size(rate, window)
    start_cpu, start = cpu_seconds(proc.pid), time.monotonic()
    sent = 0
    while sent < records:
        batch = requests(per_frame // 2, time.time())
        ours.sendall(frame(("records", batch, False)))
        sent += len(batch)
        pause = start + sent / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    ours.sendall(frame(("flush",)))
    while True:
        reply = message()
        if reply[0] == "progress" and isinstance(reply[1], int) and reply[1] >= sent:
            break
    used, took = cpu_seconds(proc.pid) - start_cpu, time.monotonic() - start
    ours.shutdown(socket.SHUT_WR)
    proc.wait(timeout=60)
    return used / sent, took


def bare_insert(source: Path, target: Path, commit_rows: int) -> float:
    """CPU seconds per row to insert ``source``'s events again into ``target`` (same schema)."""
    rows = sqlite3.connect(source).execute(f"SELECT {COLUMNS} FROM events ORDER BY id").fetchall()
    db = sqlite3.connect(target, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
        db.execute(f"PRAGMA {pragma}")
    marks = ", ".join("?" * len(COLUMNS.split(",")))
    sql = f"INSERT INTO events ({COLUMNS}) VALUES ({marks})"
    start = time.process_time()
    for first in range(0, len(rows), commit_rows):
        db.execute("BEGIN")
        db.executemany(sql, rows[first : first + commit_rows])
        db.execute("COMMIT")
    used = time.process_time() - start
    db.close()
    return used / len(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=60_000, help="records to write")
    parser.add_argument("--rate", type=float, default=8_000, help="records per second")
    parser.add_argument("--window-ms", type=int, default=50, help="the audit commit window")
    args = parser.parse_args()
    os.sched_setaffinity(0, {FEEDER_CORE})
    tmp = Path(tempfile.mkdtemp(prefix="tokenbroker-writer-bench-"))
    try:
        create_key_file(tmp / "tokenbroker.keys")
        writer_config = migrated(tmp, "writer")
        migrated(tmp, "bare")
        window = args.window_ms / 1000
        per_record, took = run_writer(writer_config, args.records, args.rate, window)
        commit_rows = frame_size(args.rate, window)
        os.sched_setaffinity(0, {WRITER_CORE})
        per_row = bare_insert(tmp / "writer.db", tmp / "bare.db", commit_rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    command = " ".join(["python", "bench/audit_writer.py", *sys.argv[1:]])
    print(f"`{command}`: {args.records:,} records at {args.rate:,.0f}/s in {took:.1f} s, SQLite")
    print(f"commits of about {commit_rows} records; writer and baseline on core {WRITER_CORE}\n")
    print("| what | CPU us per record |\n| --- | --- |")
    writer = "audit writer process (decode, encode, pseudonym, hash, commit)"
    print(f"| {writer} | {per_record * 1e6:.1f} |")
    print(f"| bare executemany of the same rows (baseline) | {per_row * 1e6:.1f} |")
    print(f"| ratio | {per_record / per_row:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
