"""The MCP server at /mcp (issue 8) and the OpenAI Agents SDK examples.

A gateway of its own (module fixture) with the HTTP listener on (MCP rides on it), a
PostgreSQL connection `mcp_orders` whose SELECTs need a purpose and whose DELETEs need a
DBA's approval, an HTTP connection `mcp_api` (a tiny local JSON API), and masking of
e-mails and card numbers on both.

- Protocol conformance with the official `mcp` Python client (initialize, list tools,
  call tools, errors) and raw malformed JSON-RPC over httpx.
- Both examples in examples/openai-agents run end to end with a scripted model
  (agents.testing.ScriptedModel): SELECT (masked values in the tool result), DELETE (held;
  approved with `warden approvals approve ID`; the retry or the wait then succeeds), and
  the evidence shows identity, purpose, exact SQL, masked result and approval.
"""
from __future__ import annotations

import asyncio
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import httpx
import pytest

from conftest import (REPO, WARDEN_BIN, Warden, free_port, require_tool, run_warden,
                      start_warden, stop_process, wait_for, write_config)
from helpers import assert_answered_and_verified, run_until_held

PURPOSE = "support ticket 4711: remove a duplicate customer"

EXTRA = """http = "127.0.0.1:{http_port}"

[approvals]
timeout = "2m"

[mcp]
max_rows = 50

[[connections]]
name = "mcp_orders"
protocol = "postgres"
upstream = "127.0.0.1:{pg_port}"
database = "orders"
user = "orders_app"
password = "${{ORDERS_PW}}"
description = "Orders database: customers and items"

[[connections]]
name = "mcp_api"
protocol = "http"
upstream = "http://127.0.0.1:{api_port}"
headers = {{ Authorization = "Bearer upstream-secret-9d1" }}

[[connections]]
name = "mcp_hidden"
protocol = "postgres"
upstream = "127.0.0.1:{pg_port}"
database = "orders"
user = "orders_app"
password = "${{ORDERS_PW}}"

[[rules]]
id = "mcp-agents-read"
principals = ["group:agents"]
connections = ["mcp_orders"]
sql = ["select"]
effect = "allow"
require_purpose = true

[[rules]]
id = "mcp-agents-delete-needs-dba"
principals = ["group:agents"]
connections = ["mcp_orders"]
sql = ["delete"]
effect = "approve"
approvers = ["group:dba"]

[[rules]]
id = "mcp-agents-no-ddl"
principals = ["group:agents"]
connections = ["mcp_orders"]
sql = ["ddl"]
effect = "deny"

[[rules]]
id = "mcp-agents-api-read"
principals = ["group:agents"]
connections = ["mcp_api"]
http = ["GET /customers/**"]
effect = "allow"

[[masking]]
connections = ["mcp_orders", "mcp_api"]
detectors = ["email", "credit_card"]
operator = "partial"
"""

CUSTOMERS = [
    (1, "Ada", "ada@example.com", "4111111111111111"),
    (2, "Grace", "grace@example.com", "5555555555554444"),
    (3, "Alan", "alan@example.com", "4012888888881881"),
    (4, "Edsger", "edsger@example.com", "378282246310005"),
    (5, "Barbara", "barbara@example.com", "6011111111111117"),
    (6, "Ken", "ken@example.com", "3530111333300000"),
]


class Api(http.server.BaseHTTPRequestHandler):
    seen_auth: list = []
    seen_paths: list = []

    def do_GET(self):  # noqa: N802
        Api.seen_auth.append(self.headers.get("Authorization"))
        Api.seen_paths.append(self.path)
        body = json.dumps({"id": 1, "name": "Ada", "email": "ada@example.com",
                           "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture(scope="module")
def gw(pg):
    values = ", ".join(f"({i}, '{n}', '{e}', '{c}')" for i, n, e, c in CUSTOMERS)
    pg.admin_psql(
        "drop table if exists mcp_customers; create table mcp_customers(id int primary key, "
        "name text, email text, card_number text);"
        f"insert into mcp_customers values {values};"
        "alter table mcp_customers owner to orders_app;",
        db="orders",
    )
    api_port = free_port()
    api = http.server.ThreadingHTTPServer(("127.0.0.1", api_port), Api)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    tmp = Path(tempfile.mkdtemp(prefix="warden-e2e-mcp-"))
    port, admin_port, http_port = free_port(), free_port(), free_port()
    cfg = write_config(tmp, pg.port, port, free_port(), admin_port=admin_port,
                       extra=EXTRA.format(http_port=http_port, pg_port=pg.port, api_port=api_port))
    r = run_warden(["config", "check", "--config", str(cfg)])
    assert r.returncode == 0, r.stdout + r.stderr
    w = Warden(config=cfg, port=port, proc=None, log=tmp / "warden.log", tmp=tmp)  # type: ignore[arg-type]
    w.keys["reporter"] = w.create_key("agent:reporter", ["agents"])
    w.keys["dana"] = w.create_key("user:dana", ["dba"])
    w.keys["outsider"] = w.create_key("agent:outsider")
    w.proc, w.log = start_warden(cfg, port, tmp)
    wait_for(lambda: _port_open(http_port), timeout=15, what="the HTTP listener")
    w.admin_url = f"http://127.0.0.1:{admin_port}"
    w.mcp_url = f"http://127.0.0.1:{http_port}/mcp"
    w.http_port = http_port
    try:
        yield w
    finally:
        stop_process(w.proc)
        api.shutdown()
        print(f"\n--- warden log tail ({w.log}) ---\n" + w.log.read_text()[-3000:])
        shutil.rmtree(tmp, ignore_errors=True)


def _port_open(port: int) -> bool:
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def approvals_cli(gw, args: list[str]) -> subprocess.CompletedProcess:
    require_tool(WARDEN_BIN)
    env = dict(os.environ, WARDEN_ADMIN_URL=gw.admin_url, WARDEN_TOKEN=gw.keys["dana"].secret)
    return subprocess.run([str(WARDEN_BIN), "approvals"] + args, env=env, capture_output=True,
                          text=True, timeout=60)


def pending_for(gw, text: str) -> dict:
    def find():
        r = approvals_cli(gw, ["list", "--pending", "--format", "json"])
        assert r.returncode == 0, r.stderr
        for line in r.stdout.splitlines():
            a = json.loads(line)
            if text in a["statement"]:
                return a
        return None
    return wait_for(find, timeout=60, interval=0.3, what=f"a pending approval for {text!r}")


# --------------------------------------------------------------------------- raw JSON-RPC


def rpc(gw, body, key: str | None = "reporter", session: str | None = None,
        headers: dict | None = None) -> httpx.Response:
    h = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if key:
        h["Authorization"] = f"Bearer {gw.keys[key].secret}"
    if session:
        h["Mcp-Session-Id"] = session
    h.update(headers or {})
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(gw.mcp_url, content=content, headers=h, timeout=30)


def init_session(gw, key: str = "reporter") -> str:
    r = rpc(gw, {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                 "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                            "clientInfo": {"name": "raw", "version": "0"}}}, key=key)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["protocolVersion"] == "2025-06-18"
    sid = r.headers["mcp-session-id"]
    r = rpc(gw, {"jsonrpc": "2.0", "method": "notifications/initialized"}, key=key, session=sid)
    assert r.status_code == 202, r.text
    return sid


def call(gw, sid: str, name: str, args: dict, key: str = "reporter", rid: int = 7) -> dict:
    r = rpc(gw, {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                 "params": {"name": name, "arguments": args}}, key=key, session=sid)
    assert r.status_code == 200, r.text
    body = r.json()
    assert "result" in body, body
    return body["result"]


def test_unauthenticated_gets_401_with_resource_metadata(gw):
    r = rpc(gw, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, key=None)
    assert r.status_code == 401
    challenge = r.headers["www-authenticate"]
    assert "Bearer" in challenge and "resource_metadata=" in challenge, challenge
    meta_url = challenge.split('resource_metadata="')[1].split('"')[0]
    assert meta_url.endswith("/.well-known/oauth-protected-resource/mcp"), meta_url
    m = httpx.get(meta_url, timeout=10)
    assert m.status_code == 200
    doc = m.json()
    assert doc["resource"] == gw.mcp_url and doc["bearer_methods_supported"] == ["header"]
    assert httpx.get(f"http://127.0.0.1:{gw.http_port}/.well-known/oauth-protected-resource",
                     timeout=10).json()["resource"] == gw.mcp_url
    r = rpc(gw, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, key=None,
            headers={"Authorization": "Bearer wk_000000000000_bogus"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    failed = [x for x in gw.audit(kind="auth.failed") if x.get("protocol") == "mcp"]
    assert failed, "MCP auth failures are evidence"
    assert all("wk_000000000000_bogus" not in json.dumps(x) for x in failed)


def test_malformed_jsonrpc_gets_jsonrpc_errors(gw):
    sid = init_session(gw)
    cases = [
        (b"{not json", -32700),
        (b"", -32700),
        (b"[]", -32600),
        (b"42", -32600),
        (json.dumps({"jsonrpc": "1.0", "id": 1, "method": "ping"}), -32600),
        (json.dumps({"jsonrpc": "2.0", "id": 1}), -32600),
        (json.dumps({"jsonrpc": "2.0", "id": 1, "method": 5}), -32600),
        (json.dumps({"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}), -32600),
        (json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": 3}), -32600),
        (b"[" * 200 + b"]" * 200, -32700),  # beyond the parser's nesting limit
        (b"[" * 100 + b"]" * 100, -32600),  # parses, but nested too deep
        (b"\xff\xfe\x00garbage", -32700),
    ]
    for body, code in cases:
        r = rpc(gw, body, session=sid)
        assert r.headers["content-type"].startswith("application/json"), (body, r.text)
        err = r.json()["error"]
        assert err["code"] == code, (body, r.text)
        assert r.json()["jsonrpc"] == "2.0"
    # Unknown method, bad tool params, unknown tool: errors with the request's id.
    r = rpc(gw, {"jsonrpc": "2.0", "id": "x1", "method": "resources/list"}, session=sid)
    assert r.json() == {"jsonrpc": "2.0", "id": "x1",
                        "error": {"code": -32601, "message": r.json()["error"]["message"]}}
    r = rpc(gw, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"arguments": {}}},
            session=sid)
    assert r.json()["error"]["code"] == -32602
    r = rpc(gw, {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                 "params": {"name": "drop_everything", "arguments": {}}}, session=sid)
    assert r.json()["error"]["code"] == -32602 and "drop_everything" in r.json()["error"]["message"]
    # A batch: one answer per request, none for the notification.
    r = rpc(gw, [{"jsonrpc": "2.0", "id": 10, "method": "ping"},
                 {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {}},
                 {"jsonrpc": "2.0", "id": 11, "method": "nope"}], session=sid)
    out = r.json()
    assert [x["id"] for x in out] == [10, 11]
    assert out[0]["result"] == {} and out[1]["error"]["code"] == -32601
    # Sessions: missing, unknown, someone else's.
    r = rpc(gw, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert r.status_code == 400 and r.json()["error"]["code"] == -32600
    r = rpc(gw, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, session="nope")
    assert r.status_code == 404
    r = rpc(gw, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, session=sid, key="dana")
    assert r.status_code == 404, "a session belongs to the principal that opened it"
    # No SSE stream is offered; other methods are refused cleanly.
    g = httpx.get(gw.mcp_url, headers={"Authorization": f"Bearer {gw.keys['reporter'].secret}",
                                       "Accept": "text/event-stream"}, timeout=10)
    assert g.status_code == 405
    # Cross-origin browser requests are refused.
    r = rpc(gw, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, session=sid,
            headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    # The gateway survived all of it.
    assert rpc(gw, {"jsonrpc": "2.0", "id": 99, "method": "ping"}, session=sid).json()["result"] == {}
    # DELETE ends the session.
    d = httpx.delete(gw.mcp_url, headers={"Authorization": f"Bearer {gw.keys['reporter'].secret}",
                                          "Mcp-Session-Id": sid}, timeout=10)
    assert d.status_code in (200, 204)
    assert rpc(gw, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, session=sid).status_code == 404


def test_tools_decide_mask_and_record(gw):
    sid = init_session(gw)
    # list_connections: only what the caller may use.
    res = call(gw, sid, "list_connections", {})
    names = [c["name"] for c in res["structuredContent"]["connections"]]
    assert "mcp_orders" in names and "mcp_api" in names and "mcp_hidden" not in names, names
    orders = next(c for c in res["structuredContent"]["connections"] if c["name"] == "mcp_orders")
    assert orders["description"] == "Orders database: customers and items"
    assert "approve: delete" in orders["allowed"] and "allow: select" in orders["allowed"], orders

    # purpose required by the rule: a denial naming the rule.
    res = call(gw, sid, "query", {"connection": "mcp_orders", "sql": "SELECT 1"})
    assert res["isError"] is True and "mcp-agents-read" in res["content"][0]["text"]
    assert "purpose" in res["content"][0]["text"]

    # SELECT with a purpose: masked, with columns; row cap + truncated flag.
    res = call(gw, sid, "query", {"connection": "mcp_orders", "purpose": "t-1",
                                  "sql": "SELECT id, email, card_number FROM mcp_customers WHERE id = $1",
                                  "params": [1]})
    sc = res["structuredContent"]
    assert res["isError"] is False, res
    assert sc["columns"] == ["id", "email", "card_number"]
    assert sc["rows"][0][0] == 1
    assert sc["rows"][0][1] != "ada@example.com" and "@example.com" in sc["rows"][0][1], sc
    assert sc["rows"][0][2] != "4111111111111111" and sc["rows"][0][2].endswith("1111"), sc
    assert "ada@example.com" not in json.dumps(res)
    res = call(gw, sid, "query", {"connection": "mcp_orders", "purpose": "t-1",
                                  "sql": "SELECT id FROM items ORDER BY id"})
    sc = res["structuredContent"]
    assert sc["row_count"] == 50 and sc["total_rows"] == 1000 and sc["truncated"] is True

    # Multi-statement text is refused whole; DDL is denied by its rule.
    res = call(gw, sid, "query", {"connection": "mcp_orders", "purpose": "t-1",
                                  "sql": "SELECT 1; DELETE FROM mcp_customers"})
    assert res["isError"] is True and "exactly one statement" in res["content"][0]["text"]
    res = call(gw, sid, "query", {"connection": "mcp_orders", "purpose": "t-1",
                                  "sql": "DROP TABLE mcp_customers"})
    assert res["isError"] is True and "mcp-agents-no-ddl" in res["content"][0]["text"]
    # A database error is a tool error with the SQLSTATE.
    res = call(gw, sid, "query", {"connection": "mcp_orders", "purpose": "t-1",
                                  "sql": "SELECT nope FROM mcp_customers"})
    assert res["isError"] is True and res["structuredContent"]["sqlstate"] == "42703"
    # No access / unknown connection.
    res = call(gw, sid, "query", {"connection": "mcp_hidden", "purpose": "t", "sql": "SELECT 1"})
    assert res["isError"] is True and "no rule gives" in res["content"][0]["text"]
    res = call(gw, sid, "describe_connection", {"connection": "nowhere"})
    assert res["isError"] is True

    # describe_connection: tables and columns.
    res = call(gw, sid, "describe_connection", {"connection": "mcp_orders", "purpose": "plan"})
    tables = {t["table"]: t for t in res["structuredContent"]["tables"]}
    assert [c["name"] for c in tables["mcp_customers"]["columns"]] == ["id", "name", "email",
                                                                       "card_number"]

    # http_request: credential swapped in, body masked, denied paths name the rule.
    res = call(gw, sid, "http_request", {"connection": "mcp_api", "method": "GET",
                                         "path": "/customers/1?x=1", "purpose": "t-2"})
    sc = res["structuredContent"]
    assert res["isError"] is False and sc["status"] == 200, res
    assert sc["body"]["name"] == "Ada" and sc["body"]["email"] != "ada@example.com"
    assert Api.seen_auth[-1] == "Bearer upstream-secret-9d1"
    assert "upstream-secret" not in json.dumps(res)
    res = call(gw, sid, "http_request", {"connection": "mcp_api", "method": "DELETE",
                                         "path": "/customers/1", "purpose": "t-2"})
    assert res["isError"] is True and "default deny" in res["content"][0]["text"]

    # Evidence: the MCP session id is the evidence session; exact SQL, params, purpose, masked.
    recs = gw.audit(session=sid)
    starts = [r for r in recs if r["kind"] == "session.start"]
    assert {r["connection"] for r in starts} == {"mcp_orders", "mcp_api"}
    assert all(r["protocol"] == "mcp" for r in recs)
    req = next(r for r in recs if r["kind"] == "action.request"
               and r["action"]["text"] == "SELECT id, email, card_number FROM mcp_customers WHERE id = $1")
    assert req["principal"]["id"] == "agent:reporter" and req["purpose"] == "t-1"
    assert req["action"]["params"] == ["1"] and req["decision"]["effect"] == "allow"
    resp = next(r for r in recs if r["kind"] == "action.response" and r["request_id"] == req["id"])
    assert resp["response"]["masked"]["columns"] == ["id", "email", "card_number"]
    assert "ada@example.com" not in json.dumps(recs) and "4111111111111111" not in json.dumps(recs)
    assert resp["response"]["masked_values"], resp
    denied = [r for r in recs if r["kind"] == "policy.denied"]
    assert any(r["decision"]["rules"] == ["mcp-agents-no-ddl"] for r in denied)


def test_official_mcp_client(gw):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import MCPError
    import httpx2

    async def run():
        headers = {"Authorization": f"Bearer {gw.keys['reporter'].secret}"}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as client:
            async with streamable_http_client(gw.mcp_url, http_client=client) as (read, write):
                async with ClientSession(read, write) as s:
                    init = await s.initialize()
                    assert init.server_info.name == "warden"
                    assert init.capabilities.tools is not None
                    tools = await s.list_tools()
                    names = {t.name for t in tools.tools}
                    assert names == {"list_connections", "describe_connection", "query",
                                     "http_request", "approval_status"}
                    q = next(t for t in tools.tools if t.name == "query")
                    assert set(q.input_schema["required"]) == {"connection", "sql"}
                    r = await s.call_tool("query", {"connection": "mcp_orders", "purpose": "mcp-sdk",
                                                    "sql": "SELECT name, email FROM mcp_customers WHERE id = 2"})
                    assert not r.is_error, r
                    assert r.structured_content["rows"][0][0] == "Grace"
                    assert r.structured_content["rows"][0][1] != "grace@example.com"
                    r = await s.call_tool("query", {"connection": "mcp_orders", "purpose": "x",
                                                    "sql": "DROP TABLE items"})
                    assert r.is_error and "mcp-agents-no-ddl" in r.content[0].text
                    r = await s.call_tool("approval_status", {"id": "apr_nonexistent"})
                    assert r.is_error
                    try:
                        await s.call_tool("no_such_tool", {})
                    except MCPError as e:
                        assert e.error.code == -32602
                    else:
                        raise AssertionError("an unknown tool must be a JSON-RPC error")
                    assert (await s.send_ping()) is not None
    asyncio.run(run())


# --------------------------------------------------------------------------- the examples


def example_env(gw, **extra) -> dict:
    env = dict(os.environ)
    env.pop("OPENAI_API_KEY", None)
    env.pop("PGOPTIONS", None)
    env.update({
        "WARDEN_KEY": gw.keys["reporter"].secret,
        "WARDEN_PRINCIPAL": "agent:reporter",
        "WARDEN_PG_HOST": "127.0.0.1",
        "WARDEN_PG_PORT": str(gw.port),
        "WARDEN_MCP_URL": gw.mcp_url,
        "WARDEN_CONNECTION": "mcp_orders",
        "WARDEN_EXAMPLE_TABLE": "mcp_customers",
        "WARDEN_EXAMPLE_PURPOSE": PURPOSE,
    })
    env.update(extra)
    return env


def run_example(gw, name: str, delete_id: int) -> tuple[str, str, dict]:
    """Run one example; approve its held DELETE through the CLI; return output and approval."""
    script = REPO / "examples" / "openai-agents" / name
    p = subprocess.Popen([sys.executable, str(script), "--scripted"],
                         env=example_env(gw, WARDEN_EXAMPLE_DELETE_ID=str(delete_id)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        text = f"DELETE FROM mcp_customers WHERE id = "
        a = pending_for(gw, text)
        assert a["requester"] == "agent:reporter" and a["approvers"] == ["group:dba"]
        assert a["purpose"] == PURPOSE
        r = approvals_cli(gw, ["approve", a["id"], "--comment", "duplicate confirmed"])
        assert r.returncode == 0, r.stderr
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, f"{name} failed:\n{out}\n{err}"
    return out, err, a


def assert_evidence(gw, approval: dict, select_sql: str, delete_sql: str, params: list) -> None:
    reqs = gw.audit(kind="action.request")
    sel = [r for r in reqs if r["action"]["text"] == select_sql and r["purpose"] == PURPOSE]
    assert sel, f"no action.request for {select_sql!r}"
    sel = sel[-1]
    assert sel["principal"]["id"] == "agent:reporter"
    assert sel["principal"]["auth"]["method"]
    resp = wait_for(lambda: [r for r in gw.audit(kind="action.response", session=sel["session_id"])
                             if r.get("request_id") == sel["id"]], what="SELECT response")[0]
    masked = json.dumps(resp["response"]["masked"])
    assert "ada@example.com" not in masked and "4111111111111111" not in masked, masked
    assert "Ada" in masked and "@example.com" in masked, masked
    dels = [r for r in reqs if r["action"]["text"] == delete_sql and r["purpose"] == PURPOSE
            and (r["action"].get("params") or []) == params]
    assert len(dels) == 1, dels
    d = dels[0]
    assert d["approval"]["id"] == approval["id"]
    assert d["approval"]["decision"] == "approved" and d["approval"]["approver"] == "user:dana"
    assert d["decision"]["effect"] == "approve" and d["decision"]["rules"] == ["mcp-agents-delete-needs-dba"]
    dresp = wait_for(lambda: [r for r in gw.audit(kind="action.response", session=d["session_id"])
                              if r.get("request_id") == d["id"]], what="DELETE response")[0]
    assert dresp["response"]["status"] == "ok" and dresp["response"]["tag"] == "DELETE 1"
    decided = [r for r in gw.audit(kind="approval.decided") if r["approval"]["id"] == approval["id"]]
    assert [x["approval"]["decision"] for x in decided] == ["approved"]
    assert decided[0]["approval"]["comment"] == "duplicate confirmed"


def test_example_mcp_agent(gw):
    out, err, a = run_example(gw, "mcp_agent.py", delete_id=3)
    tool_lines = [line for line in out.splitlines() if line.startswith("tool> ")]
    assert len(tool_lines) >= 6, out
    assert "mcp_orders" in tool_lines[0]                      # list_connections
    assert "mcp_customers" in tool_lines[1]                   # describe_connection
    assert "Ada" in tool_lines[2] and "ada@example.com" not in out  # masked SELECT
    assert "4111111111111111" not in out
    assert "pending_approval" in tool_lines[3] and a["id"] in tool_lines[3]
    assert "DELETE 1" in tool_lines[-1], out
    assert "agent> Done" in out, out
    # The row is gone.
    rows = gw.psql("SELECT count(*) FROM mcp_customers WHERE id = 3", gw.keys["dana"].secret, user="user:dana")
    assert rows.stdout.strip() == "0", rows.stderr
    assert_evidence(gw, a, "SELECT id, name, email, card_number FROM mcp_customers ORDER BY id LIMIT 5",
                    "DELETE FROM mcp_customers WHERE id = $1", ["3"])
    recs = [r for r in gw.audit(kind="action.request") if r["action"]["text"].startswith("DELETE")
            and r.get("approval", {}).get("id") == a["id"]]
    assert recs[0]["protocol"] == "mcp"


def test_example_pg_agent(gw):
    out, err, a = run_example(gw, "pg_agent.py", delete_id=4)
    tool_lines = [line for line in out.splitlines() if line.startswith("tool> ")]
    assert len(tool_lines) == 3, out
    assert "mcp_customers" in tool_lines[0]
    assert "Ada" in tool_lines[1] and "ada@example.com" not in out and "4111111111111111" not in out
    assert "DELETE 1" in tool_lines[2] and a["id"] in tool_lines[2], tool_lines[2]
    rows = gw.psql("SELECT count(*) FROM mcp_customers WHERE id = 4", gw.keys["dana"].secret, user="user:dana")
    assert rows.stdout.strip() == "0", rows.stderr
    assert_evidence(gw, a, "SELECT id, name, email, card_number FROM mcp_customers ORDER BY id LIMIT 5",
                    "DELETE FROM mcp_customers WHERE id = 4", [])
    code, text = gw.verify()
    assert code == 0, text


def test_approval_id_is_bound_and_spent_once(gw):
    aid = next(r["approval"]["id"] for r in gw.audit(kind="action.request")
               if r["action"]["text"] == "DELETE FROM mcp_customers WHERE id = $1"
               and r.get("approval"))
    sid = init_session(gw)
    same = {"connection": "mcp_orders", "sql": "DELETE FROM mcp_customers WHERE id = $1",
            "params": [3], "purpose": PURPOSE, "approval_id": aid}
    res = call(gw, sid, "query", same)
    assert res["isError"] is True and "already used" in res["content"][0]["text"], res
    res = call(gw, sid, "query", same | {"params": [6]})
    assert res["isError"] is True and "another statement" in res["content"][0]["text"], res
    st = call(gw, sid, "approval_status", {"id": aid})["structuredContent"]
    assert st["state"] == "approved" and st["used"] is True
    # Someone else cannot even read it.
    other = init_session(gw, key="outsider")
    assert call(gw, other, "approval_status", {"id": aid}, key="outsider")["isError"] is True


def second_gateway(pg, prefix: str, mcp_extra: str = "", head: str = "") -> Warden:
    """Another gateway with the same connections and rules (and `mcp_extra` in `[mcp]`)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    port, admin_port, http_port = free_port(), free_port(), free_port()
    extra = EXTRA.replace("max_rows = 50", "max_rows = 50\n" + mcp_extra).format(
        http_port=http_port, pg_port=pg.port, api_port=free_port())
    # `head` (e.g. [identity.oidc]) goes after the [listeners] keys, before [approvals].
    extra = extra.replace("\n[approvals]", "\n" + head + "\n[approvals]", 1)
    cfg = write_config(tmp, pg.port, port, free_port(), admin_port=admin_port, extra=extra)
    r = run_warden(["config", "check", "--config", str(cfg)])
    assert r.returncode == 0, r.stdout + r.stderr
    w = Warden(config=cfg, port=port, proc=None, log=tmp / "warden.log", tmp=tmp)  # type: ignore[arg-type]
    w.keys["reporter"] = w.create_key("agent:reporter", ["agents"])
    w.keys["dana"] = w.create_key("user:dana", ["dba"])
    w.proc, w.log = start_warden(cfg, port, tmp)
    w.admin_url = f"http://127.0.0.1:{admin_port}"
    w.mcp_url = f"http://127.0.0.1:{http_port}/mcp"
    wait_for(lambda: _port_open(http_port), timeout=15, what="the HTTP listener")
    return w


def test_approval_wait_runs_the_call_once_approved(pg, gw):
    """With `[mcp] approval_wait`, a held call waits for the decision and then runs."""
    w = second_gateway(pg, "warden-e2e-mcpwait-", 'approval_wait = "60s"')
    tmp = w.tmp
    try:
        sid = init_session(w)
        out: dict = {}

        def run(key: str, sql: str):
            out[key] = call(w, sid, "query", {"connection": "mcp_orders", "sql": sql,
                                              "purpose": "cleanup"})
        t = threading.Thread(target=run, args=("ok", "DELETE FROM mcp_customers WHERE id = 5"))
        t.start()
        a = pending_for(w, "DELETE FROM mcp_customers WHERE id = 5")
        assert t.is_alive(), "the call waits for the decision"
        assert approvals_cli(w, ["approve", a["id"]]).returncode == 0
        t.join(timeout=30)
        res = out["ok"]
        assert res["isError"] is False and res["structuredContent"]["command"] == "DELETE 1", res
        rec = [r for r in w.audit(kind="action.request")
               if r["action"]["text"] == "DELETE FROM mcp_customers WHERE id = 5"]
        assert len(rec) == 1 and rec[0]["approval"]["id"] == a["id"]
        # Denied while waiting: a tool error, nothing runs.
        t = threading.Thread(target=run, args=("no", "DELETE FROM mcp_customers WHERE id = 6"))
        t.start()
        a = pending_for(w, "DELETE FROM mcp_customers WHERE id = 6")
        assert approvals_cli(w, ["deny", a["id"], "--comment", "not this one"]).returncode == 0
        t.join(timeout=30)
        res = out["no"]
        assert res["isError"] is True and "denied" in res["content"][0]["text"], res
        assert "not this one" in res["content"][0]["text"]
        assert not [r for r in w.audit(kind="action.request")
                    if r["action"]["text"] == "DELETE FROM mcp_customers WHERE id = 6"]
    finally:
        stop_process(w.proc)
        shutil.rmtree(tmp, ignore_errors=True)


def test_jwt_bearer_and_metadata_name_the_issuer(pg, gw):
    from test_identity_tls import AUDIENCE, FIXTURES, ISSUER, mint
    head = (f'[identity.oidc]\nissuer = "{ISSUER}"\naudience = "{AUDIENCE}"\n'
            f'jwks_file = "{FIXTURES / "jwks.json"}"\ngroups_claim = "groups"\n')
    w = second_gateway(pg, "warden-e2e-mcpjwt-", head=head)
    try:
        token = mint("mcp-bot", groups="agents", act="alice")
        meta = httpx.get(w.mcp_url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp"),
                         timeout=10).json()
        assert meta["authorization_servers"] == [ISSUER]
        h = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        r = httpx.post(w.mcp_url, headers=h, timeout=30, json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-03-26", "capabilities": {},
                       "clientInfo": {"name": "jwt", "version": "0"}}})
        assert r.status_code == 200 and r.json()["result"]["protocolVersion"] == "2025-03-26"
        sid = r.headers["mcp-session-id"]
        r = httpx.post(w.mcp_url, headers=h | {"Mcp-Session-Id": sid}, timeout=30, json={
            "jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "query", "arguments": {
                "connection": "mcp_orders", "purpose": "jwt check",
                "sql": "SELECT 'jwt-mcp-ok' AS x"}}})
        res = r.json()["result"]
        assert res["isError"] is False and res["structuredContent"]["rows"] == [["jwt-mcp-ok"]], res
        req = [x for x in w.audit(kind="action.request")
               if x["action"]["text"] == "SELECT 'jwt-mcp-ok' AS x"]
        assert len(req) == 1
        p = req[0]["principal"]
        assert p["auth"] == {"method": "jwt", "issuer": ISSUER, "subject": "mcp-bot"}
        assert p["on_behalf_of"] == "user:alice" and req[0]["session_id"] == sid
        assert token.encode() not in (w.tmp / "data" / "evidence.db").read_bytes()
    finally:
        stop_process(w.proc)
        shutil.rmtree(w.tmp, ignore_errors=True)


def test_a_lagging_index_holds_tool_calls_back_until_it_catches_up(pg):
    """MCP tool calls, like the PostgreSQL relay and the HTTP path, await the ledger before
    anything reaches the target, under `process` durability too: while the evidence index
    is more than half its backlog (`[evidence] index_backlog`) behind, a call is held (at
    most the store's 5 s busy timeout) rather than run or refused, and runs once the
    index catches up. The debug build's hook (`<database>.stall-index` exists: the
    indexer takes no batch) makes the index lag; with a backlog of 8 a few calls (two
    records each) reach the soft limit (4), six would reach the hard limit."""
    api_port = free_port()
    api = http.server.ThreadingHTTPServer(("127.0.0.1", api_port), Api)
    api.daemon_threads = True
    threading.Thread(target=api.serve_forever, daemon=True).start()
    tmp = Path(tempfile.mkdtemp(prefix="warden-e2e-mcp-pacing-"))
    flag = tmp / "data" / "evidence.db.stall-index"
    w = None
    tag = "pace-" + uuid.uuid4().hex[:6]
    try:
        port, admin_port, http_port = free_port(), free_port(), free_port()
        extra = EXTRA.format(http_port=http_port, pg_port=pg.port, api_port=api_port)
        cfg = write_config(tmp, pg.port, port, free_port(), admin_port=admin_port,
                           extra=extra + "\n[evidence]\nindex_backlog = 8\n")
        w = Warden(config=cfg, port=port, proc=None, log=tmp / "warden.log", tmp=tmp)  # type: ignore[arg-type]
        w.keys["reporter"] = w.create_key("agent:reporter", ["agents"])
        w.proc, w.log = start_warden(cfg, port, tmp)
        wait_for(lambda: _port_open(http_port), timeout=15, what="the HTTP listener")
        w.mcp_url = f"http://127.0.0.1:{http_port}/mcp"
        sid = init_session(w)

        def get(i) -> dict:
            return call(w, sid, "http_request", {"connection": "mcp_api", "method": "GET",
                                                 "path": f"/customers/{tag}-{i}",
                                                 "purpose": "pacing"})

        assert get("first")["isError"] is False
        flag.touch()

        def tool_call(i: int) -> None:
            res = get(i)
            assert res["isError"] is False, res

        held_at, steps = run_until_held(tool_call, 6)
        # Held before it ran: the API has not seen it, but the call before it.
        assert f"/customers/{tag}-{held_at}" not in Api.seen_paths
        assert (f"/customers/{tag}-{held_at - 1}" if held_at else f"/customers/{tag}-first") \
            in Api.seen_paths
        flag.unlink()  # the index catches up; the held call runs
        steps.join(6)
        assert_answered_and_verified(w, [f"GET /customers/{tag}-{i}" for i in range(6)])
    finally:
        flag.unlink(missing_ok=True)
        if w is not None and w.proc is not None:
            stop_process(w.proc)
        api.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
