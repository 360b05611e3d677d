"""Inline masking of result rows through real clients, and no raw value in the store.

A dedicated Warden instance (own data dir) masks the connection ``orders`` with detectors
and field rules; the table ``customers`` holds realistic sensitive values.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import Warden, free_port, run_warden, start_warden, stop_process, write_config

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
