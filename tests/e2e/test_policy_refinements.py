"""Rule refinements through a live PostgreSQL session: tables, functions, UPDATE/DELETE
without WHERE, and `require_purpose` (PRODUCT.md rules; issue 4)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from conftest import (Warden, free_port, run_warden, start_warden, stop_process, wait_for,
                      write_config)

EXTRA = """
[[connections]]
name = "refined"
protocol = "postgres"
upstream = "127.0.0.1:{pg_port}"
database = "orders"
user = "orders_app"
password = "${{ORDERS_PW}}"

[[rules]]
id = "read"
principals = ["group:agents"]
connections = ["refined"]
sql = ["select"]
effect = "allow"

[[rules]]
id = "no-big-table"
principals = ["group:agents"]
connections = ["refined"]
sql = ["select"]
tables = ["public.big"]
effect = "deny"

[[rules]]
id = "no-sleeping"
principals = ["*"]
connections = ["refined"]
functions = ["pg_sleep"]
effect = "deny"

[[rules]]
id = "filtered-updates"
principals = ["group:agents"]
connections = ["refined"]
sql = ["update"]
effect = "allow"

[[rules]]
id = "unfiltered-updates-denied"
principals = ["group:agents"]
connections = ["refined"]
sql = ["update"]
without_where = true
effect = "deny"

[[rules]]
id = "ddl-needs-purpose"
principals = ["group:agents"]
connections = ["refined"]
sql = ["ddl"]
require_purpose = true
effect = "allow"
"""


@pytest.fixture(scope="module")
def gw(pg):
    tmp = Path(tempfile.mkdtemp(prefix="warden-e2e-refine-"))
    port = free_port()
    cfg = write_config(tmp, pg.port, port, free_port(), extra=EXTRA.format(pg_port=pg.port))
    r = run_warden(["config", "check", "--config", str(cfg)])
    assert r.returncode == 0, r.stdout + r.stderr
    w = Warden(config=cfg, port=port, proc=None, log=tmp / "w.log", tmp=tmp)  # type: ignore[arg-type]
    w.keys["reporter"] = w.create_key("agent:reporter", ["agents"])
    w.proc, w.log = start_warden(cfg, port, tmp, name="refine")
    try:
        yield w
    finally:
        stop_process(w.proc)
        shutil.rmtree(tmp, ignore_errors=True)


def run(gw, sql, pgoptions=None):
    return gw.psql(sql, key=gw.keys["reporter"].secret, db="refined", pgoptions=pgoptions)


def test_table_and_function_refinements(gw):
    assert run(gw, "select count(*) from items").returncode == 0
    r = run(gw, "select count(*) from big")
    assert r.returncode != 0 and "no-big-table" in r.stderr, r.stderr
    r = run(gw, "select pg_sleep(0)")
    assert r.returncode != 0 and "no-sleeping" in r.stderr, r.stderr


def test_update_without_where_is_denied_with_where_allowed(gw):
    r = run(gw, "update items set name = name where id = 3")
    assert r.returncode == 0, r.stderr
    r = run(gw, "update items set name = name")
    assert r.returncode != 0 and "unfiltered-updates-denied" in r.stderr, r.stderr


def test_require_purpose(gw):
    r = run(gw, "create table if not exists refine_t (id int)")
    assert r.returncode != 0 and "purpose" in r.stderr, r.stderr
    r = run(gw, "create table if not exists refine_t (id int)", pgoptions="-c warden.purpose=INC-7")
    assert r.returncode == 0, r.stderr
    # SET warden.purpose earlier in the same string counts for the statements after it.
    r = run(gw, "set warden.purpose = 'INC-8'; drop table refine_t")
    assert r.returncode == 0, r.stderr
    denied = [x for x in gw.audit(kind="policy.denied") if "refine_t" in x["action"]["text"]]
    assert denied and denied[0]["decision"]["rules"] == ["ddl-needs-purpose"]
    ok = [x for x in gw.audit(kind="action.request") if x["action"]["text"] == "drop table refine_t"]
    assert ok and ok[0]["purpose"] == "INC-8"


def test_policy_check_cli_knows_refinements(gw):
    args = ["policy", "check", "--config", str(gw.config), "--principal", "agent:reporter",
            "--group", "agents", "--connection", "refined"]
    r = run_warden(args + ["--sql", "update items set price = 0"])
    assert r.returncode == 4 and "unfiltered-updates-denied" in r.stdout, r.stdout
    r = run_warden(args + ["--sql", "create table x (id int)"])
    assert r.returncode == 4 and "purpose" in r.stdout, r.stdout
    r = run_warden(args + ["--sql", "create table x (id int)", "--purpose", "INC-9"])
    assert r.returncode == 0, r.stdout


def test_reparsed_statement_is_decided_again_when_the_purpose_changes(gw):
    # Extended protocol through libpq's PQexecParams: the same text as an unnamed Parse
    # each time. The gateway reuses the last Parse's decision only while the declared
    # purpose is the same.
    import psycopg
    from psycopg import pq
    sql = "create table if not exists refine_memo (id int)"
    k = gw.keys["reporter"]
    with psycopg.connect(host="127.0.0.1", port=gw.port, dbname="refined", user=k.principal,
                         password=k.secret, connect_timeout=10, autocommit=True) as conn:
        def attempt():
            r = conn.pgconn.exec_params(sql.encode(), [])
            if r.status == pq.ExecStatus.COMMAND_OK:
                return "ok"
            assert r.error_field(pq.DiagnosticField.SQLSTATE) == b"42501", r.error_message
            assert b"purpose" in r.error_message, r.error_message
            return "denied"
        assert attempt() == "denied"
        assert attempt() == "denied"
        conn.execute("set warden.purpose = 'INC-77'")
        assert attempt() == "ok"
        assert attempt() == "ok"
        conn.execute("set warden.purpose = 'DEFAULT'")
        assert attempt() == "denied"
    denied = [x for x in gw.audit(kind="policy.denied") if x["action"]["text"] == sql]
    allowed = [x for x in gw.audit(kind="action.request") if x["action"]["text"] == sql]
    assert len(denied) == 3, denied
    assert [x["purpose"] for x in allowed] == ["INC-77", "INC-77"], allowed


def test_texts_differing_only_in_literals_keep_their_own_text_and_decision(gw):
    """psql sends each statement as a new simple-protocol text. Inside Warden, texts that
    differ only in numbers share one classification (warden_policy::literal_shape; the
    sharing itself is covered by the unit and property tests, a client cannot see it).
    What a client and the evidence see must not change: each statement keeps its own text
    and its own decision, and text outside the shape lexer's subset (a backslash, here)
    is split and classified on its own."""
    for n in (11, 12, 13):
        r = run(gw, f"select name from items where id = {n}")
        assert r.returncode == 0 and r.stdout.strip() == f"item-{n}", r.stdout + r.stderr
    want = {f"select name from items where id = {n}" for n in (11, 12, 13)}

    def recorded():
        texts = {x["action"]["text"] for x in gw.audit(kind="action.request")}
        return want <= texts
    wait_for(recorded, what="each statement's own text in the evidence")

    # The function a shared shape calls is still seen: denied with any argument.
    for arg in ("0", "0.01"):
        r = run(gw, f"select pg_sleep({arg})")
        assert r.returncode != 0 and "no-sleeping" in r.stderr, r.stderr

    # The same through the extended protocol: psycopg's prepare=True sends each text as a
    # Parse (Warden's `classify_one`); each keeps its text and its decision.
    import psycopg
    k = gw.keys["reporter"]
    with psycopg.connect(host="127.0.0.1", port=gw.port, dbname="refined", user=k.principal,
                         password=k.secret, connect_timeout=10, autocommit=True) as conn:
        for n in (31, 32, 33):
            row = conn.execute(f"select name from items where id = {n}", prepare=True).fetchone()
            assert row == (f"item-{n}",)
        for arg in ("0", "0.02"):
            with pytest.raises(psycopg.Error, match="no-sleeping"):
                conn.execute(f"select pg_sleep({arg})", prepare=True)
    want = {f"select name from items where id = {n}" for n in (31, 32, 33)}
    wait_for(recorded, what="each prepared statement's own text in the evidence")

    # With standard_conforming_strings (the default) a backslash does not escape the
    # quote: PostgreSQL would run an UPDATE without WHERE after the SELECT. Same literal
    # count as the shape above, but it is not shaped: split, classified, denied.
    before = run(gw, "select count(*) from items where name = 'pwned'").stdout.strip()
    r = run(gw, "select name from items where name = 'x\\'; update items set name = 'pwned'; --'")
    assert r.returncode != 0 and "unfiltered-updates-denied" in r.stderr, r.stderr
    assert run(gw, "select count(*) from items where name = 'pwned'").stdout.strip() == before == "0"
