"""6-9. psycopg (extended protocol, prepared statements, server-side cursors), 1M rows,
COPY, cancellation."""
import threading
import time

import psycopg
import pytest

from conftest import wait_for
from helpers import one_request, records_with_text, response_for, tag


def test_prepared_statements(warden):
    t = tag()
    q = f"select id, name from items where id = %s and name <> %s -- prep-{t}"
    sent = f"select id, name from items where id = $1 and name <> $2 -- prep-{t}"
    with warden.connect("reporter", autocommit=True) as conn:
        cur = conn.cursor()
        for i in (5, 6, 7, 8, 9):
            cur.execute(q, (i, f"not-{t}"), prepare=True)
            assert cur.fetchall() == [(i, f"item-{i}")]
    reqs = wait_for(lambda: (lambda r: r if len(r) >= 5 else None)(records_with_text(warden, sent)),
                    what="five action.request records for the prepared statement")
    assert len(reqs) == 5, reqs
    # every execution is its own action, carrying its bound values as text
    for rec in reqs:
        params = rec["action"]["params"]
        assert len(params) == 2, params
        assert params[1] == f"not-{t}", params
        assert rec["decision"]["effect"] == "allow"
    for rec in reqs:
        resp = response_for(warden, rec)
        assert resp["response"]["status"] == "ok"
        assert resp["response"]["rows"] == 1


def test_int_params_rendered_as_decimal_text(warden):
    # Evidence "params" are "bound values rendered as text". psycopg sends Python ints in
    # binary format; the auditor should still read `41`, not raw bytes.
    t = tag()
    q = f"select %s::int + 1 -- intparam-{t}"
    sent = f"select $1::int + 1 -- intparam-{t}"
    with warden.connect("reporter", autocommit=True) as conn:
        assert conn.execute(q, (41,)).fetchone()[0] == 42
    rec = one_request(warden, sent)
    assert rec["action"]["params"] == ["41"], rec["action"]["params"]


def test_text_params_exact(warden):
    t = tag()
    q = f"select %t::text || %t::text -- textparam-{t}"
    sent = f"select $1::text || $2::text -- textparam-{t}"
    with warden.connect("reporter", autocommit=True) as conn:
        assert conn.execute(q, ("ab", None)).fetchone()[0] is None
    rec = one_request(warden, sent)
    assert rec["action"]["params"] == ["ab", None]


def test_server_side_cursor(warden):
    t = tag()
    with warden.connect("reporter") as conn:
        with conn.cursor(name=f"c_{t}") as cur:
            cur.execute(f"select id from items where '{t}' <> '' order by id")
            got = []
            while True:
                chunk = cur.fetchmany(100)
                if not chunk:
                    break
                assert len(chunk) <= 100
                got.extend(r[0] for r in chunk)
        conn.commit()
    assert got == list(range(1, 1001))
    decl = [x for x in warden.audit(kind="action.request")
            if t in x["action"]["text"] and "declare" in x["action"]["text"].lower()]
    assert decl, "the DECLARE of the server-side cursor is evidence"
    fetches = [x for x in warden.audit(kind="action.request")
               if x["session_id"] == decl[0]["session_id"] and x["action"]["text"].lower().startswith("fetch")]
    assert len(fetches) >= 10, [f["action"]["text"] for f in fetches]


def test_million_rows_bounded_memory(warden):
    t = tag()
    q = f"select g, md5(g::text) from generate_series(1,1000000) g where '{t}' <> ''"
    hwm_before = warden.vm_hwm_kb()
    rss_before = warden.vm_rss_kb()
    n = 0
    started = time.monotonic()
    with warden.connect("reporter", autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute(q)
        while True:
            rows = cur.fetchmany(10000)
            if not rows:
                break
            n += len(rows)
        # plain (client-side) cursor: psycopg has the whole result; streamed by Warden
    elapsed = time.monotonic() - started
    hwm_after = warden.vm_hwm_kb()
    print(f"\n1M rows in {elapsed:.1f}s; warden VmRSS before {rss_before} kB, "
          f"VmHWM before {hwm_before} kB, after {hwm_after} kB")
    assert n == 1_000_000
    resp = response_for(warden, one_request(warden, q), timeout=20)
    assert resp["response"]["status"] == "ok"
    assert resp["response"]["rows"] == 1_000_000
    assert hwm_after < 200 * 1024, f"Warden peak RSS {hwm_after} kB exceeds 200 MB"


def test_million_rows_server_side_cursor(warden):
    t = tag()
    q = f"select g, md5(g::text) from generate_series(1,1000000) g where '{t}' <> ''"
    n = 0
    with warden.connect("reporter") as conn:
        with conn.cursor(name=f"big_{t}") as cur:
            cur.itersize = 20000
            cur.execute(q)
            for _ in cur:
                n += 1
        conn.commit()
    assert n == 1_000_000
    hwm = warden.vm_hwm_kb()
    print(f"\nwarden VmHWM after 1M rows via server-side cursor: {hwm} kB")
    assert hwm < 200 * 1024


def test_copy_out_psql_dba(warden):
    r = warden.psql(None, warden.keys["dana"].secret, user="user:dana",
                    extra_args=["-c", r"\copy (select * from items) to stdout"])
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 1000
    reqs = [x for x in warden.audit(kind="action.request")
            if x["principal"]["id"] == "user:dana" and x["action"]["text"].lower().startswith("copy")]
    assert reqs, "the COPY is evidence"
    resp = response_for(warden, reqs[-1])
    assert resp["response"]["status"] == "ok"
    assert resp["response"]["rows"] == 1000


def test_copy_out_denied_for_agent(warden):
    r = warden.psql(None, warden.keys["reporter"].secret,
                    extra_args=["-c", r"\copy (select * from items) to stdout"])
    assert r.returncode != 0
    assert "denied" in r.stderr, r.stderr
    assert r.stdout == ""


def test_copy_in_dba(warden, pg):
    base = 500000
    try:
        with warden.connect("dana", autocommit=True) as conn:
            cur = conn.cursor()
            with cur.copy("COPY items (id, name, price) FROM STDIN") as cp:
                for i in range(100):
                    cp.write_row((base + i, f"copied-{i}", i))
            assert cur.rowcount == 100
            assert conn.execute(f"select count(*) from items where id >= {base} and id < {base + 100}"
                                ).fetchone()[0] == 100
        recs = records_with_text(warden, "COPY items (id, name, price) FROM STDIN")
        recs = [r for r in recs if r["principal"]["id"] == "user:dana"]
        assert recs and recs[-1]["decision"]["effect"] == "allow"
        assert recs[-1]["decision"]["rules"] == ["dba-all"]
        resp = response_for(warden, recs[-1])
        assert resp["response"]["status"] == "ok"
        assert resp["response"]["rows"] == 100
        assert resp["response"]["bytes"] > 0
    finally:
        # clean up directly (even the dba may not delete through Warden: `no-deletes` covers `*`)
        pg.admin_psql(f"delete from items where id >= {base}", db="orders")


def test_copy_in_denied_for_agent(warden):
    with warden.connect("reporter", autocommit=True) as conn:
        cur = conn.cursor()
        with pytest.raises(psycopg.Error) as ei:
            with cur.copy("COPY items (id, name, price) FROM STDIN") as cp:
                cp.write_row((600000, "nope", 1))
        assert ei.value.sqlstate == "42501", ei.value
        assert "denied" in str(ei.value)
        assert conn.execute("select 1").fetchone()[0] == 1
    r = warden.psql("select count(*) from items where id = 600000", warden.keys["dana"].secret,
                    user="user:dana")
    assert r.stdout.strip() == "0"


def test_cancel_psycopg(warden):
    with warden.connect("reporter", autocommit=True) as conn:
        timer = threading.Timer(0.5, conn.cancel)
        started = time.monotonic()
        timer.start()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("select pg_sleep(30)")
        finally:
            timer.cancel()
        elapsed = time.monotonic() - started
        assert elapsed < 5, f"cancel took {elapsed:.1f}s"
        # the session is usable afterwards
        assert conn.execute("select 2").fetchone()[0] == 2
    reqs = records_with_text(warden, "select pg_sleep(30)")
    resp = response_for(warden, reqs[-1])
    assert resp["response"]["status"] in ("error", "cancelled")
    assert resp["response"].get("error_code") == "57014"


def test_cancel_with_wrong_secret_is_ignored(warden):
    # A CancelRequest with a wrong secret must not cancel another session's query.
    import socket
    import struct
    with warden.connect("reporter", autocommit=True) as conn:
        pid = conn.info.backend_pid
        def bogus_cancel():
            with socket.create_connection(("127.0.0.1", warden.port), timeout=5) as s:
                s.sendall(struct.pack("!iiii", 16, 80877102, pid, 0x0BADBEEF))
        timer = threading.Timer(0.3, bogus_cancel)
        timer.start()
        started = time.monotonic()
        conn.execute("select pg_sleep(1.5)")
        timer.join()
        assert time.monotonic() - started >= 1.4
