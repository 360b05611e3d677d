"""Approvals through the CLI and the admin API against a running gateway.

A gateway of its own (module fixture) with `approve` rules: agents' UPDATEs need one DBA,
their DDL needs two, and their INSERTs are granted for an hour once approved. A tiny HTTP
receiver checks the signed webhooks. The held statement runs in psql in the background;
the approval id is found with `warden approvals list --pending --format json`.
"""
from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import (WARDEN_BIN, Warden, free_port, require_tool, run_warden, start_warden,
                      stop_process, wait_for, write_config)

SECRET = "e2e-hook-secret"

EXTRA = """
[approvals]
timeout = "{timeout}"
webhooks = ["http://127.0.0.1:{hook_port}/hook"]
webhook_secret = "{secret}"

[[rules]]
id = "agents-update-needs-dba"
principals = ["group:agents"]
connections = ["orders"]
sql = ["update"]
effect = "approve"
approvers = ["group:dba"]

[[rules]]
id = "agents-ddl-needs-two"
principals = ["group:agents"]
connections = ["orders"]
sql = ["ddl"]
effect = "approve"
approvers = ["group:dba"]
min_approvals = 2

# A second name for the same database: the base config denies DELETE on `orders`.
[[connections]]
name = "orders_apr"
protocol = "postgres"
upstream = "127.0.0.1:{pg_port}"
database = "orders"
user = "orders_app"
password = "${{ORDERS_PW}}"

[[rules]]
id = "agents-read-apr"
principals = ["group:agents"]
connections = ["orders_apr"]
sql = ["select"]
effect = "allow"

[[rules]]
id = "agents-delete-needs-dba"
principals = ["group:agents"]
connections = ["orders_apr"]
sql = ["delete"]
effect = "approve"
approvers = ["group:dba"]

[[rules]]
id = "agents-insert-granted"
principals = ["group:agents"]
connections = ["orders"]
sql = ["insert"]
effect = "approve"
approvers = ["group:dba"]
grant = "1h"
"""


class Hooks(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        Hooks.received.append((dict(self.headers), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture(scope="module")
def gw(pg):
    # Its own table: approved writes here must not change what other suites count in `items`.
    pg.admin_psql(
        "drop table if exists appr_items; create table appr_items(id int primary key, name text, price numeric);"
        "insert into appr_items select g, 'item-' || g, (g % 100) + 0.5 from generate_series(1, 20) g;"
        "alter table appr_items owner to orders_app;",
        db="orders",
    )
    hook_port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", hook_port), Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tmp = Path(tempfile.mkdtemp(prefix="warden-e2e-apr-"))
    w = approvals_gateway(pg, tmp, hook_port)
    try:
        yield w
    finally:
        stop_process(w.proc)
        server.shutdown()
        print(f"\n--- warden log tail ({w.log}) ---\n" + w.log.read_text()[-3000:])
        shutil.rmtree(tmp, ignore_errors=True)


def approvals_gateway(pg, tmp: Path, hook_port: int) -> Warden:
    """A started gateway with the approval rules of EXTRA, its keys and admin API."""
    port, admin_port = free_port(), free_port()
    cfg = write_config(tmp, pg.port, port, free_port(), admin_port=admin_port,
                       extra=EXTRA.format(timeout="8s", hook_port=hook_port, secret=SECRET, pg_port=pg.port))
    r = run_warden(["config", "check", "--config", str(cfg)])
    assert r.returncode == 0, r.stdout + r.stderr
    w = Warden(config=cfg, port=port, proc=None, log=tmp / "warden.log", tmp=tmp)  # type: ignore[arg-type]
    w.keys["reporter"] = w.create_key("agent:reporter", ["agents"])
    w.keys["dana"] = w.create_key("user:dana", ["dba"])
    w.keys["erin"] = w.create_key("user:erin", ["dba"])
    w.keys["outsider"] = w.create_key("agent:outsider")
    w.proc, w.log = start_warden(cfg, port, tmp)
    w.admin_url = f"http://127.0.0.1:{admin_port}"
    return w


def cli(gw, args: list[str], token: str | None) -> subprocess.CompletedProcess:
    require_tool(WARDEN_BIN)
    env = dict(os.environ, WARDEN_ADMIN_URL=gw.admin_url)
    env.pop("WARDEN_TOKEN", None)
    if token is not None:
        env["WARDEN_TOKEN"] = token
    return subprocess.run([str(WARDEN_BIN), "approvals"] + args, env=env, capture_output=True,
                          text=True, timeout=60)


def held_psql(gw, sql: str, db: str = "orders") -> subprocess.Popen:
    env = dict(os.environ, PGPASSWORD=gw.keys["reporter"].secret, PGCONNECT_TIMEOUT="10")
    env.pop("PGOPTIONS", None)
    return subprocess.Popen(
        ["psql", gw.conninfo("agent:reporter", db), "-X", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def pending_for(gw, text: str) -> dict:
    def find():
        r = cli(gw, ["list", "--pending", "--format", "json"], gw.keys["dana"].secret)
        assert r.returncode == 0, r.stderr
        for line in r.stdout.splitlines():
            a = json.loads(line)
            if text in a["statement"]:
                return a
        return None
    return wait_for(find, timeout=15, what=f"a pending approval for {text!r}")


def decided(gw, approval_id: str) -> list[dict]:
    return [r for r in gw.audit(kind="approval.decided") if r["approval"]["id"] == approval_id]


def test_held_update_approved_via_cli(gw):
    p = held_psql(gw, "UPDATE appr_items SET price = 1.5 WHERE id = 7")
    a = pending_for(gw, "UPDATE appr_items SET price = 1.5")
    aid = a["id"]
    assert a["requester"] == "agent:reporter" and a["approvers"] == ["group:dba"]
    # Other statements flow meanwhile, on another connection.
    r = gw.psql("SELECT name FROM appr_items WHERE id = 7", gw.keys["reporter"].secret)
    assert r.returncode == 0 and r.stdout.strip() == "item-7", r.stderr
    assert p.poll() is None, "the UPDATE must still be held"

    # Self-approval and wrong approvers are refused (exit 1, clear messages).
    r = cli(gw, ["approve", aid], gw.keys["reporter"].secret)
    assert r.returncode == 1 and "refused" in r.stderr and "cannot approve" in r.stderr, r.stderr
    r = cli(gw, ["approve", aid], gw.keys["outsider"].secret)
    assert r.returncode == 1 and "group:dba" in r.stderr, r.stderr
    r = cli(gw, ["approve", aid], "wk_000000000000_bogus")
    assert r.returncode == 1 and "WARDEN_TOKEN" in r.stderr, r.stderr

    r = cli(gw, ["approve", aid, "--comment", "ticket 42"], gw.keys["dana"].secret)
    assert r.returncode == 0, r.stderr
    assert f"approved {aid}" in r.stdout
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert "UPDATE 1" in out
    assert aid in err, f"the client is told the approval id: {err!r}"

    r = cli(gw, ["deny", aid], gw.keys["erin"].secret)
    assert r.returncode == 1 and "already decided" in r.stderr, r.stderr

    req = [x for x in gw.audit(kind="approval.requested") if x["approval"]["id"] == aid]
    assert len(req) == 1 and req[0]["principal"]["id"] == "agent:reporter"
    d = decided(gw, aid)
    assert [(x["approval"]["decision"], x["approval"]["approver"]) for x in d] == [
        ("approved", "user:dana")]
    assert d[0]["approval"]["comment"] == "ticket 42"


def test_deny_via_cli_fails_the_statement(gw):
    p = held_psql(gw, "UPDATE appr_items SET price = 2.5 WHERE id = 8")
    aid = pending_for(gw, "price = 2.5")["id"]
    r = cli(gw, ["deny", aid, "--comment", "not now"], gw.keys["dana"].secret)
    assert r.returncode == 0 and f"denied {aid}" in r.stdout, r.stderr
    out, err = p.communicate(timeout=30)
    assert p.returncode != 0
    assert aid in err and "not now" in err, err
    assert gw.psql("SELECT price FROM appr_items WHERE id = 8",
                   gw.keys["reporter"].secret).stdout.strip() == "8.5"
    d = decided(gw, aid)
    assert d[-1]["approval"]["decision"] == "denied"
    assert d[-1]["approval"]["approver"] == "user:dana"


def test_min_approvals_two_distinct(gw):
    p = held_psql(gw, "CREATE TABLE apr_two(id int)")
    aid = pending_for(gw, "CREATE TABLE apr_two")["id"]
    r = cli(gw, ["approve", aid], gw.keys["dana"].secret)
    assert r.returncode == 0 and "1 of 2" in r.stdout, r.stdout + r.stderr
    r = cli(gw, ["approve", aid], gw.keys["dana"].secret)
    assert r.returncode == 1 and "already voted" in r.stderr, r.stderr
    time.sleep(0.5)
    assert p.poll() is None, "one approval of two must not release the statement"
    r = cli(gw, ["approve", aid], gw.keys["erin"].secret)
    assert r.returncode == 0 and "approved" in r.stdout, r.stderr
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    d = decided(gw, aid)
    assert [x["approval"]["decision"] for x in d] == ["approved (1 of 2)", "approved"]
    assert d[-1]["approval"]["approver"] == "user:dana,user:erin"


def test_timeout(gw):
    p = held_psql(gw, "UPDATE appr_items SET price = 3.5 WHERE id = 9")
    aid = pending_for(gw, "price = 3.5")["id"]
    out, err = p.communicate(timeout=60)
    assert p.returncode != 0 and aid in err, err
    assert decided(gw, aid)[-1]["approval"]["decision"] == "timeout"
    r = cli(gw, ["list", "--format", "table"], gw.keys["dana"].secret)
    assert r.returncode == 0 and aid in r.stdout and "timeout" in r.stdout, r.stdout


def test_grant_covers_later_statements(gw):
    p = held_psql(gw, "INSERT INTO appr_items VALUES (5001, 'granted-1', 1)")
    aid = pending_for(gw, "granted-1")["id"]
    assert cli(gw, ["approve", aid], gw.keys["dana"].secret).returncode == 0
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    # Within the grant: no hold.
    r = gw.psql("INSERT INTO appr_items VALUES (5002, 'granted-2', 1)", gw.keys["reporter"].secret,
                timeout=10)
    assert r.returncode == 0 and "INSERT 0 1" in r.stdout, r.stderr


def test_cli_errors(gw):
    r = cli(gw, ["list"], None)
    assert r.returncode == 2 and "WARDEN_TOKEN" in r.stderr, r.stderr
    r = cli(gw, ["approve", "apr_doesnotexist"], gw.keys["dana"].secret)
    assert r.returncode == 1 and "no approval request" in r.stderr, r.stderr
    env = dict(os.environ, WARDEN_TOKEN=gw.keys["dana"].secret)
    r = subprocess.run([str(WARDEN_BIN), "approvals", "list", "--admin-url",
                        f"http://127.0.0.1:{free_port()}"], env=env, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "cannot reach" in r.stderr, r.stderr
    # The admin API itself: health without a credential, 401 with a bad one.
    with urllib.request.urlopen(gw.admin_url + "/healthz", timeout=10) as resp:
        assert resp.read() == b"ok"
    req = urllib.request.Request(gw.admin_url + "/api/v1/approvals",
                                 headers={"Authorization": "Bearer nope"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 401


def test_webhooks_signed(gw):
    # Earlier tests produced requested and decided events.
    def events():
        return [json.loads(b) for _, b in Hooks.received]
    wait_for(lambda: any(e["event"] == "approval.decided" for e in events()), timeout=15,
             what="an approval.decided webhook")
    for headers, body in Hooks.received:
        h = {k.lower(): v for k, v in headers.items()}
        ts = h["warden-timestamp"]
        want = "v1=" + hmac.new(SECRET.encode(), f"{ts}.".encode() + body,
                                hashlib.sha256).hexdigest()
        assert hmac.compare_digest(h["warden-signature"], want)
        assert abs(time.time() - int(ts)) < 300
    ev = events()
    assert {e["event"] for e in ev} == {"approval.requested", "approval.decided"}
    assert all(e["link"].startswith(gw.admin_url + "/api/v1/approvals/apr_") for e in ev)


def _agent_conn(gw):
    import psycopg
    k = gw.keys["reporter"]
    return psycopg.connect(host="127.0.0.1", port=gw.port, dbname="orders_apr", user=k.principal,
                           password=k.secret, connect_timeout=10, autocommit=True)


def test_psycopg_delete_held_while_other_connection_flows_then_approved(gw):
    """The issue's scenario: a psycopg agent's DELETE (extended protocol, with a parameter)
    waits in its live session; SELECTs on another connection flow; an approver approves via
    the CLI; the DELETE completes; the session stays usable; evidence ties it together."""
    result: dict = {}
    notices: list[str] = []

    def agent():
        with _agent_conn(gw) as conn:
            conn.add_notice_handler(lambda d: notices.append(d.message_primary))
            cur = conn.execute("DELETE FROM appr_items WHERE id = %s", (15,))
            result["rowcount"] = cur.rowcount
            result["after"] = conn.execute("select count(*) from appr_items where id = 15").fetchone()[0]

    t = threading.Thread(target=agent)
    t.start()
    a = pending_for(gw, "DELETE FROM appr_items WHERE id = $1")
    with _agent_conn(gw) as other:
        assert other.execute("select count(*) from appr_items").fetchone()[0] >= 1
    assert t.is_alive(), "the DELETE must be held"
    r = cli(gw, ["approve", a["id"], "--comment", "cleanup ok"], gw.keys["dana"].secret)
    assert r.returncode == 0, r.stderr
    t.join(timeout=30)
    assert not t.is_alive()
    assert result == {"rowcount": 1, "after": 0}
    assert any(a["id"] in n for n in notices), notices
    req = [x for x in gw.audit(kind="action.request")
           if x["action"]["text"] == "DELETE FROM appr_items WHERE id = $1"]
    assert len(req) == 1
    assert req[0]["action"]["params"] == ["15"]
    assert req[0]["decision"]["effect"] == "approve"
    assert req[0]["approval"]["id"] == a["id"]
    assert req[0]["approval"]["approver"] == "user:dana"
    assert req[0]["approval"]["comment"] == "cleanup ok"


def test_cancel_while_waiting_withdraws(gw):
    import psycopg
    errors: list = []

    def agent(conn):
        try:
            conn.execute("DELETE FROM appr_items WHERE id = 16")
        except psycopg.Error as e:  # noqa: PERF203
            errors.append(e)

    with _agent_conn(gw) as conn:
        t = threading.Thread(target=agent, args=(conn,))
        t.start()
        a = pending_for(gw, "DELETE FROM appr_items WHERE id = 16")
        conn.cancel()
        t.join(timeout=15)
        assert not t.is_alive()
        assert errors and errors[0].sqlstate == "57014", errors
        # The session is still usable afterwards.
        assert conn.execute("select count(*) from appr_items where id = 16").fetchone()[0] == 1
    got = wait_for(lambda: [d for d in decided(gw, a["id"]) if d["approval"]["decision"] == "withdrawn"],
                   timeout=10, what="a withdrawn record")
    assert "cancel" in (got[0]["approval"].get("comment") or got[0].get("detail") or "")
    r = cli(gw, ["approve", a["id"]], gw.keys["dana"].secret)
    assert r.returncode == 1, "a withdrawn request can no longer be approved"


def test_disconnect_while_waiting_withdraws(gw):
    p = held_psql(gw, "DELETE FROM appr_items WHERE id = 17", db="orders_apr")
    a = pending_for(gw, "DELETE FROM appr_items WHERE id = 17")
    p.kill()
    p.wait(timeout=10)
    wait_for(lambda: [d for d in decided(gw, a["id"]) if d["approval"]["decision"] == "withdrawn"],
             timeout=10, what="a withdrawn record after the client vanished")
    r = gw.psql("select count(*) from appr_items where id = 17", gw.keys["dana"].secret, user="user:dana")
    assert r.stdout.strip() == "1", "the held DELETE never ran"


def test_shutdown_while_waiting_withdraws(pg):
    """SIGTERM while a statement waits for approval: the client gets 57P01, the request is
    withdrawn in the evidence (not left pending), and the statement never ran."""
    tmp = Path(tempfile.mkdtemp(prefix="warden-e2e-apr-stop-"))
    w = approvals_gateway(pg, tmp, free_port())  # no webhook receiver: deliveries just fail
    try:
        p = held_psql(w, "DELETE FROM appr_items WHERE id = 18", db="orders_apr")
        a = pending_for(w, "DELETE FROM appr_items WHERE id = 18")
        stop_process(w.proc)
        assert w.proc.returncode == 0, w.log.read_text()[-2000:]
        _, err = p.communicate(timeout=15)
        assert p.returncode != 0
        assert "57P01" in err or "shutting down" in err, err
        got = [d for d in decided(w, a["id"]) if d["approval"]["decision"] == "withdrawn"]
        assert got, decided(w, a["id"])
        assert "session ended" in (got[0]["approval"].get("comment") or got[0].get("detail") or ""), got
        assert pg.admin_psql("select count(*) from appr_items where id = 18", db="orders").strip() == "1"
    finally:
        if w.proc.poll() is None:
            stop_process(w.proc)
        shutil.rmtree(tmp, ignore_errors=True)
