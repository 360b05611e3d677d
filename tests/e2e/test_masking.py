"""Inline masking of result rows through real clients, and no raw value in the store.

A dedicated Warden instance (own data dir) masks the connection ``orders`` with detectors
and field rules; the table ``customers`` holds realistic sensitive values.
"""
from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import Warden, free_port, run_warden, start_warden, stop_process, write_config
from helpers import pg_msg as _msg, raw_login

CUSTOMERS = [
    # id, name, email, card, ssn, note
    (1, "Jane Roe", "jane.roe@example.com", "4111 1111 1111 1111", "123-45-6789",
     "call +1 415 555 0132 about order ORD-2026-000123"),
    (2, "John Doe", "john.doe@corp.example", "5500-0000-0000-0004", "219-09-9999",
     "iban DE89 3704 0044 0532 0130 00, key AKIAIOSFODNN7EXAMPLE"),
    (3, "Ana Lima", "ana@lima.example.org", "378282246310005", "078-05-1120",
     "no secrets here, invoice 2026-11-27 total 1234.56"),
]
RAW_VALUES = [
    "jane.roe@example.com", "john.doe@corp.example", "ana@lima.example.org",
    "4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005",
    "123-45-6789", "219-09-9999", "078-05-1120",
    "AKIAIOSFODNN7EXAMPLE", "DE89 3704 0044 0532 0130 00",
]
# Look-alikes that must survive.
SURVIVORS = ["ORD-2026-000123", "2026-11-27", "1234.56"]

MASKING = """
[[masking]]
connections = ["orders"]
detectors = ["credit_card", "email", "us_ssn", "iban", "phone", "secret"]
operator = "partial"
fields = { "ssn" = "redact" }

[evidence]
response_rows = 10
response_bytes = 8192
"""


@pytest.fixture(scope="module")
def masked(pg):
    pg.admin_psql(
        "create table if not exists customers(id int primary key, name text, email text, "
        "card text, ssn text, note text); truncate customers; "
        "alter table customers owner to orders_app;",
        db="orders",
    )
    values = ",".join(
        "(" + ",".join(str(v) if isinstance(v, int) else "'" + v.replace("'", "''") + "'" for v in row) + ")"
        for row in CUSTOMERS
    )
    pg.admin_psql(f"insert into customers values {values}", db="orders")
    tmp = Path(tempfile.mkdtemp(prefix="warden-e2e-mask-"))
    port = free_port()
    cfg = write_config(tmp, pg.port, port, free_port())
    cfg.write_text(cfg.read_text() + MASKING)
    r = run_warden(["config", "check", "--config", str(cfg)])
    assert r.returncode == 0, r.stdout + r.stderr
    w = Warden(config=cfg, port=port, proc=None, log=tmp / "mask.log", tmp=tmp)  # type: ignore[arg-type]
    w.keys["reporter"] = w.create_key("agent:reporter", ["agents"])
    w.keys["dana"] = w.create_key("user:dana", ["dba"])
    w.proc, w.log = start_warden(cfg, port, tmp, name="mask")
    try:
        yield w
    finally:
        stop_process(w.proc)
        shutil.rmtree(tmp, ignore_errors=True)


def assert_masked(text: str):
    for raw in RAW_VALUES:
        assert raw not in text, f"raw value {raw!r} reached the client"


def test_psql_gets_masked_rows_with_shape_kept(masked):
    r = masked.psql("select id, name, email, card, ssn, note from customers order by id",
                    key=masked.keys["reporter"].secret)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3
    assert_masked(r.stdout)
    first = lines[0].split("|")
    assert first[0] == "1" and first[1] == "Jane Roe"
    assert first[2].endswith("@example.com") and first[2] != "jane.roe@example.com"
    assert first[3].endswith("1111")
    assert first[4] != "123-45-6789"
    for s in SURVIVORS:
        assert s in r.stdout, f"look-alike {s!r} must survive masking"


def test_psycopg_extended_and_binary_results_are_masked(masked):
    import psycopg
    k = masked.keys["reporter"]
    with psycopg.connect(host="127.0.0.1", port=masked.port, dbname="orders", user=k.principal,
                         password=k.secret, connect_timeout=10) as conn:
        rows = conn.execute("select email, card, ssn from customers where id = %s", (2,),
                            prepare=True).fetchall()
        assert_masked(repr(rows))
        assert rows[0][0].endswith("@corp.example")
        # binary result format: text-like values are masked the same way
        with conn.cursor(binary=True) as cur:
            cur.execute("select email, card, note from customers order by id")
            brows = cur.fetchall()
        assert len(brows) == 3
        assert_masked(repr(brows))


def test_copy_out_is_masked(masked):
    r = masked.psql(None, key=masked.keys["dana"].secret, user="user:dana",
                    extra_args=["-c", "\\copy (select email, note from customers order by id) to stdout"])
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) == 3
    assert_masked(r.stdout)


# ---- the extended protocol message by message (raw socket), to pin down which Describe
# answers set the masking plan of which Execute.

def _parse(name: str, sql: str) -> bytes:
    return _msg(b"P", name.encode() + b"\0" + sql.encode() + b"\0" + struct.pack("!h", 0))


def _bind(portal: str, stmt: str) -> bytes:
    # no parameters, all results in text
    return _msg(b"B", portal.encode() + b"\0" + stmt.encode() + b"\0" + struct.pack("!hhh", 0, 0, 0))


def _describe_portal(portal: str) -> bytes:
    return _msg(b"D", b"P" + portal.encode() + b"\0")


def _execute(portal: str, max_rows: int = 0) -> bytes:
    return _msg(b"E", portal.encode() + b"\0" + struct.pack("!i", max_rows))


SYNC = _msg(b"S", b"")


def _exchange(s: socket.socket, data: bytes) -> list[tuple[bytes, bytes]]:
    """Send `data`, return every message answered up to ReadyForQuery."""
    s.sendall(data)
    buf, out = b"", []
    while True:
        while len(buf) >= 5 and len(buf) >= 1 + struct.unpack("!i", buf[1:5])[0]:
            n = 1 + struct.unpack("!i", buf[1:5])[0]
            out.append((buf[:1], buf[5:n]))
            buf = buf[n:]
            if out[-1][0] == b"Z":
                return out
        chunk = s.recv(65536)
        assert chunk, f"connection closed; got {out!r}"
        buf += chunk


def _rows(msgs: list[tuple[bytes, bytes]]) -> list[list[str]]:
    rows = []
    for t, body in msgs:
        if t != b"D":
            continue
        (n,), pos, row = struct.unpack("!h", body[:2]), 2, []
        for _ in range(n):
            (ln,) = struct.unpack("!i", body[pos:pos + 4])
            pos += 4
            row.append(None if ln < 0 else body[pos:pos + ln].decode())
            pos += max(ln, 0)
        rows.append(row)
    return rows


def test_extended_protocol_rows_are_masked_however_the_client_describes(masked):
    """Warden learns each Execute's columns from a Describe of the portal: the client's
    own when it comes right before the Execute (libpq: Parse, Bind, Describe, Execute,
    Sync), else one of Warden's whose answer the client never sees. Either way the client
    gets exactly the RowDescriptions it asked for and every row masked by the plan of the
    portal it belongs to."""
    s = raw_login(masked, masked.keys["reporter"].secret, db="orders")
    with s:
        q = "select id, email, card from customers order by id"
        # 1. libpq's pattern: the client's Describe answers for the Execute.
        msgs = _exchange(s, _parse("", q) + _bind("", "") + _describe_portal("") + _execute("") + SYNC)
        tags = [t for t, _ in msgs]
        assert tags == [b"1", b"2", b"T", b"D", b"D", b"D", b"C", b"Z"], tags
        rows = _rows(msgs)
        assert [r[0] for r in rows] == ["1", "2", "3"]
        assert_masked(repr(rows))
        assert rows[0][1].endswith("@example.com") and rows[0][2].endswith("1111"), rows

        # 2. No Describe from the client: Warden's own, swallowed.
        msgs = _exchange(s, _parse("", q) + _bind("", "") + _execute("") + SYNC)
        assert [t for t, _ in msgs] == [b"1", b"2", b"D", b"D", b"D", b"C", b"Z"], msgs
        assert_masked(repr(_rows(msgs)))

        # 3. A portal run in two Executes (PortalSuspended between them): the second has
        # no Describe of the client's right before it and is masked all the same.
        msgs = _exchange(s, _parse("", q) + _bind("", "") + _describe_portal("")
                         + _execute("", 1) + _execute("", 0) + SYNC)
        assert [t for t, _ in msgs] == [b"1", b"2", b"T", b"D", b"s", b"D", b"D", b"C", b"Z"], msgs
        assert_masked(repr(_rows(msgs)))
        assert [r[0] for r in _rows(msgs)] == ["1", "2", "3"]

        # 4. Two portals described one after the other, then executed: the rows of the
        # first must not be masked by the plan of the second (whose Describe answered
        # last). Column order differs, so a wrong plan leaves a raw email through.
        msgs = _exchange(s, _parse("a", "select email, ssn from customers order by id")
                         + _parse("b", "select id, name from customers order by id")
                         + _bind("pa", "a") + _describe_portal("pa")
                         + _bind("pb", "b") + _describe_portal("pb")
                         + _execute("pa") + _execute("pb") + SYNC)
        tags = [t for t, _ in msgs]
        expected = [b"1", b"1", b"2", b"T", b"2", b"T"] + [b"D"] * 3 + [b"C"] + [b"D"] * 3
        assert tags == expected + [b"C", b"Z"], tags
        rows = _rows(msgs)
        assert_masked(repr(rows))
        assert rows[0][0].endswith("@example.com") and rows[0][0] != "jane.roe@example.com", rows
        assert rows[3] == ["1", "Jane Roe"], rows


def test_evidence_keeps_only_the_masked_copy(masked):
    masked.psql("select id, email, card, ssn, note from customers order by id",
                key=masked.keys["reporter"].secret)
    reqs = [x for x in masked.audit(kind="action.request")
            if x["action"]["text"] == "select id, email, card, ssn, note from customers order by id"]
    assert reqs
    resps = [x for x in masked.audit(kind="action.response") if x.get("request_id") == reqs[-1]["id"]]
    assert len(resps) == 1
    resp = resps[0]["response"]
    assert resp["rows"] == 3
    assert resp["masked"]["columns"] == ["id", "email", "card", "ssn", "note"]
    assert len(resp["masked"]["rows"]) == 3
    assert_masked(str(resp["masked"]))
    counts = resp["masked_values"]
    assert counts.get("email", 0) >= 3 and counts.get("credit_card", 0) >= 3, counts
    # Every byte of the data dir: no raw value anywhere (records, WAL, blobs, keys).
    data = masked.tmp / "data"
    blob = b"".join(p.read_bytes() for p in data.rglob("*") if p.is_file())
    for raw in RAW_VALUES:
        assert raw.encode() not in blob, f"raw value {raw!r} found in the store"
