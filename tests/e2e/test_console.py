"""The web console in a real browser (Debian's chromium, headless, driven by Playwright).

A gateway of its own (module fixture) where an agent's DELETE on `orders_con` needs a DBA.
The scenario of issue 9: sign in, see a held DELETE (sent with psycopg through Warden's
PostgreSQL listener) appear in the inbox without reload, approve it with a comment, watch
the agent's statement complete, find the session, replay it, export an evidence bundle
for that window and verify it with `warden evidence verify`; and the negative cases: the
requester sees no approve button, a forged POST without / with a wrong CSRF token is
refused, agents cannot read evidence. The CLI's `sessions list|replay --admin-url` go
through the same admin API.

Screenshots of the inbox and the replay view are written to the test's temporary
directory, and to docs/img/ when WARDEN_CONSOLE_SCREENSHOTS=docs/img is set.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import (REPO, WARDEN_BIN, Warden, free_port, require_tool, run_warden, start_warden,
                      stop_process, wait_for, write_config)

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")

FIXTURES = REPO / "crates" / "identity" / "tests" / "fixtures"
JWT_MINT = Path(os.environ.get("JWT_MINT_BIN", REPO / "target" / "debug" / "examples" / "jwt_mint"))
ISSUER = "https://idp.console.test"
AUDIENCE = "warden-console"

EXTRA = """
[approvals]
timeout = "5m"

[identity.oidc]
issuer = "{issuer}"
audience = "{audience}"
jwks_file = "{jwks}"
groups_claim = "groups"

[[connections]]
name = "orders_con"
protocol = "postgres"
upstream = "127.0.0.1:{pg_port}"
database = "orders"
user = "orders_app"
password = "${{ORDERS_PW}}"

[[rules]]
id = "agents-read-con"
principals = ["group:agents"]
connections = ["orders_con"]
sql = ["select"]
effect = "allow"

[[rules]]
id = "agent-deletes-need-a-dba"
principals = ["group:agents"]
connections = ["orders_con"]
sql = ["delete"]
effect = "approve"
approvers = ["group:dba"]

[[masking]]
connections = ["orders_con"]
detectors = ["email"]
operator = "partial"
"""


@pytest.fixture(scope="module")
def gw(pg):
    pg.admin_psql(
        "drop table if exists con_items; create table con_items(id int primary key, name text, email text);"
        "insert into con_items select g, 'item-' || g, 'user' || g || '@example.com' from generate_series(1, 10) g;"
        "alter table con_items owner to orders_app;",
        db="orders",
    )
    tmp = Path(tempfile.mkdtemp(prefix="warden-e2e-console-"))
    port, admin_port = free_port(), free_port()
    cfg = write_config(tmp, pg.port, port, free_port(), admin_port=admin_port,
                       extra=EXTRA.format(pg_port=pg.port, issuer=ISSUER, audience=AUDIENCE,
                                         jwks=FIXTURES / "jwks.json"))
    r = run_warden(["config", "check", "--config", str(cfg)])
    assert r.returncode == 0, r.stdout + r.stderr
    w = Warden(config=cfg, port=port, proc=None, log=tmp / "warden.log", tmp=tmp)  # type: ignore[arg-type]
    w.keys["reporter"] = w.create_key("agent:reporter", ["agents"])
    w.keys["dana"] = w.create_key("user:dana", ["dba"])
    w.proc, w.log = start_warden(cfg, port, tmp)
    w.admin_url = f"http://127.0.0.1:{admin_port}"
    try:
        yield w
    finally:
        stop_process(w.proc)
        print(f"\n--- warden log tail ({w.log}) ---\n" + w.log.read_text()[-3000:])
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    require_tool(CHROMIUM)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            yield b
        finally:
            b.close()


def held_delete(gw, sql: str, before: str | None = None) -> dict:
    """Run `sql` (after `before`, when given) with psycopg as agent:reporter in a thread;
    the dict fills in when done."""
    out: dict = {}

    def run():
        try:
            with gw.connect("reporter", dbname="orders_con", autocommit=True) as conn:
                if before:
                    out["before"] = conn.execute(before).fetchall()
                cur = conn.execute(sql)
                out["rowcount"] = cur.rowcount
        except Exception as e:  # noqa: BLE001 - reported by the test
            out["error"] = repr(e)
        out["done"] = time.monotonic()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    out["thread"] = t
    return out


def sign_in(page, gw, key: str):
    page.goto(gw.admin_url + "/")
    page.get_by_label("Warden key or JWT").fill(gw.keys[key].secret)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#who-name").wait_for(state="visible")


def shot(page, tmp: Path, name: str):
    path = tmp / name
    page.evaluate("document.getElementById('toast').textContent = ''")
    page.screenshot(path=str(path), full_page=False)
    dest = os.environ.get("WARDEN_CONSOLE_SCREENSHOTS")
    if dest:
        d = Path(dest) if os.path.isabs(dest) else REPO / dest
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, d / name)


def api(gw, method: str, path: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(gw.admin_url + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_console_approve_replay_export(gw, browser):
    ctx = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # (Requests cut short by the reload or a download are reported as aborted.)
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}: {r.failure}")
            if "ERR_ABORTED" not in (r.failure or "") else None)
    started = time.time()
    # One request decided earlier (denied through the API), for the history.
    early = held_delete(gw, "DELETE FROM con_items WHERE id = 9")
    aid = pending_id(gw, "id = 9")
    st, v = api(gw, "POST", f"/api/v1/approvals/{aid}/deny", gw.keys["dana"].secret,
                {"comment": "use the archive job instead"})
    assert st == 200 and v["state"] == "denied", v
    wait_for(lambda: "done" in early, timeout=20, what="the denied DELETE to fail")
    sign_in(page, gw, "dana")
    assert page.locator("#who-name").inner_text().startswith("user:dana")
    cookie = next(c for c in ctx.cookies() if c["name"] == "warden_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
    page.get_by_role("link", name="Approvals").click()
    page.locator(".hint", has_text="Nothing is waiting").or_(page.locator("article.hold")).first.wait_for()
    # Accessibility basics: every form control has a label, every button and link a
    # name, and keyboard focus starts at the skip link, then the sections.
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
        .filter(e => e.labels.length === 0 && !e.getAttribute('aria-label')).map(e => e.id || e.name)""")
    assert unlabelled == [], unlabelled
    nameless = page.evaluate("""() => [...document.querySelectorAll('button, a[href]')]
        .filter(e => !(e.textContent.trim() || e.getAttribute('aria-label'))).map(e => e.outerHTML)""")
    assert nameless == [], nameless
    page.reload()  # the session survives a reload (server-side, cookie)
    page.locator("#who-name").wait_for(state="visible")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent").startswith("Approvals")

    # The agent's DELETE is held; it appears in the open inbox without a reload.
    job = held_delete(gw, "DELETE FROM con_items WHERE id = 3",
                      before="SELECT id, name, email FROM con_items ORDER BY id LIMIT 4")
    card = page.locator("article.hold", has_text="DELETE FROM con_items WHERE id = 3")
    card.wait_for(timeout=20_000)
    assert page.locator("#live-state").inner_text() == "live"
    text = card.inner_text()
    for expected in ("agent:reporter", "orders_con", "agent-deletes-need-a-dba", "group:dba"):
        assert expected in text, (expected, text)
    assert card.locator(".sql .k", has_text="DELETE").count() == 1, "SQL is highlighted"
    assert card.locator("[data-until]").inner_text() not in ("", "expiring")
    # "Verify now" re-verifies the chain in the background; the bar shows the result.
    page.get_by_role("button", name="Verify now").click()
    wait_for(lambda: re.search(r"verified intact .* \(([1-9]\d*) records",
                               page.locator("#chain").inner_text()),
             timeout=20, what="a fresh verification in the chain bar")
    # The waiting / time-left counters tick in the page.
    first = card.locator("[data-since]").inner_text()
    page.wait_for_function(
        "(t) => document.querySelector('article.hold [data-since]').textContent !== t", arg=first,
        timeout=5000)
    shot(page, gw.tmp, "console-inbox.png")
    assert job["before"][0][2] != "user1@example.com", "the agent sees masked emails"
    assert "done" not in job, "the DELETE must still be held"

    # Approve with a comment; the agent's statement completes.
    card.get_by_label("Comment (recorded as evidence)").fill("ticket OPS-7: remove test row")
    card.get_by_role("button", name="Approve").click()
    wait_for(lambda: "done" in job, timeout=20, what="the held DELETE to complete")
    assert job.get("rowcount") == 1, job
    page.get_by_text("Nothing is waiting for a decision.").wait_for()
    row = page.locator("#history tbody tr", has_text="DELETE FROM con_items WHERE id = 3")
    row.wait_for()
    assert "approved" in row.inner_text() and "user:dana" in row.inner_text()
    assert "ticket OPS-7" in row.inner_text()

    # Find the session: filter by principal and has-approvals, then replay it.
    page.get_by_role("link", name="Sessions").click()
    view = page.locator("#view-sessions")
    view.get_by_label("Principal").fill("agent:reporter")
    view.get_by_label("Has approvals").check()
    view.get_by_role("button", name="Filter").click()
    link = page.locator("#sessions tbody tr").first.get_by_role("link")
    link.wait_for()
    # Newest first: the approved DELETE's session, then the denied one's.
    assert page.locator("#sessions tbody tr").count() == 2
    assert page.locator("#sessions tbody tr").first.locator("td").nth(5).inner_text() == "2"
    link.click()
    timeline = page.locator("#timeline")
    timeline.locator("li.k-action-request", has_text="DELETE FROM con_items").wait_for()
    tl = timeline.inner_text()
    for expected in ("approval.requested", "approval.decided", "approved by user:dana",
                     "ticket OPS-7", "DELETE 1", "session.start", "masked email=4"):
        assert expected in tl, (expected, tl)
    # The masked result is a table; the store never saw the clear emails.
    cells = timeline.locator("table.grid td").all_inner_texts()
    assert cells and "user1@example.com" not in cells and any("@" in c for c in cells), cells
    # Step by step: first step shows one record, next shows two.
    page.get_by_role("button", name="First").click()
    assert page.locator("#timeline li:not([hidden])").count() == 1
    page.get_by_role("button", name="Next step").click()
    assert page.locator("#timeline li:not([hidden])").count() == 2
    page.get_by_role("button", name="Show all").click()
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, gw.tmp, "console-replay.png")

    # Chain status is on every page.
    chain = page.locator("#chain")
    wait_for(lambda: "verified intact" in chain.inner_text() or "not verified" in chain.inner_text(),
             timeout=20, what="chain status")
    assert "head #" in chain.inner_text()

    # Audit search + export of an evidence bundle for the window; verify it offline.
    page.get_by_role("link", name="Audit").click()
    audit = page.locator("#view-audit")
    audit.get_by_label("Since", exact=True).fill(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started - 60)))
    audit.get_by_label("Statement contains").fill("delete from con_items")
    audit.get_by_role("button", name="Search").click()
    page.locator("#records tbody tr", has_text="DELETE FROM con_items").first.wait_for()
    kinds = page.locator("#records tbody tr td:nth-child(3)").all_inner_texts()
    assert "action.request" in kinds and "approval.requested" in kinds, kinds
    audit.get_by_label("Statement contains").fill("")
    with page.expect_download() as dl:
        page.get_by_role("link", name="Download CSV").click()
    csv_path = gw.tmp / "records.csv"
    dl.value.save_as(csv_path)
    csv_text = csv_path.read_text()
    assert csv_text.startswith("seq,id,ts,kind,") and "DELETE FROM con_items WHERE id = 3" in csv_text
    with page.expect_download() as dl:
        page.get_by_role("button", name="Export evidence bundle").click()
    bundle = gw.tmp / "bundle.json"
    dl.value.save_as(bundle)
    page.get_by_text("Verify offline").wait_for()
    shot(page, gw.tmp, "console-audit.png")
    pubs = glob.glob(str(gw.tmp / "**" / "*.pub"), recursive=True)
    assert pubs, "the gateway wrote its signing public key"
    r = run_warden(["evidence", "verify", str(bundle), "--public-key", pubs[0], "--format", "json"])
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    assert rep["ok"] and rep["records"] >= 5, rep
    records = json.loads(bundle.read_text())["records"]
    assert any("DELETE FROM con_items WHERE id = 3" in json.dumps(x) for x in records)

    # Overview: connections, rules, counts per day.
    page.get_by_role("link", name="Overview").click()
    page.locator("#rules tbody tr", has_text="agent-deletes-need-a-dba").wait_for()
    assert page.locator("#days tbody tr").count() >= 1
    shot(page, gw.tmp, "console-overview.png")
    assert "ORDERS_PW" not in page.content() and "orders-app-pw" not in page.content()

    assert not errors, errors
    ctx.close()


def pending_id(gw, text: str) -> str:
    return wait_for(lambda: next((a["id"] for a in api(gw, "GET", "/api/v1/approvals?pending=true",
                                                     gw.keys["dana"].secret)[1]["approvals"]
                                  if text in a["statement"]), None),
                    timeout=20, what=f"a held statement with {text!r}")


def test_console_requester_and_forged_posts_are_refused(gw, browser):
    job = held_delete(gw, "DELETE FROM con_items WHERE id = 4")
    aid = pending_id(gw, "id = 4")

    # The requester (an agent) signs in: sees the hold, no approve button, no evidence pages.
    ctx = browser.new_context()
    page = ctx.new_page()
    sign_in(page, gw, "reporter")
    card = page.locator("article.hold", has_text="id = 4")
    card.wait_for(timeout=20_000)
    assert card.get_by_role("button", name="Approve").count() == 0
    assert card.get_by_role("button", name="Deny").count() == 0
    assert "cannot approve or deny" in card.locator(".why-not").inner_text()
    assert page.get_by_role("link", name="Audit").is_hidden()
    r = page.request.get(gw.admin_url + "/api/v1/records")
    assert r.status == 403 and r.json()["code"] == "not_an_auditor"
    # ...and the server refuses the vote anyway (with a valid CSRF token).
    csrf = page.request.get(gw.admin_url + "/api/v1/me").json()["csrf_token"]
    r = page.request.post(f"{gw.admin_url}/api/v1/approvals/{aid}/approve",
                          headers={"X-CSRF-Token": csrf, "Content-Type": "application/json"}, data="{}")
    assert r.status == 403 and r.json()["code"] == "self_approval", r.text()
    ctx.close()

    # A legitimate approver's session: a POST without, or with a wrong, CSRF token is
    # refused and changes nothing.
    ctx = browser.new_context()
    page = ctx.new_page()
    sign_in(page, gw, "dana")
    url = f"{gw.admin_url}/api/v1/approvals/{aid}/approve"
    r = page.request.post(url, headers={"Content-Type": "application/json"}, data="{}")
    assert r.status == 403 and r.json()["code"] == "csrf", r.text()
    r = page.request.post(url, headers={"X-CSRF-Token": "forged", "Content-Type": "application/json"},
                          data="{}")
    assert r.status == 403 and r.json()["code"] == "csrf", r.text()
    csrf = page.request.get(gw.admin_url + "/api/v1/me").json()["csrf_token"]
    r = page.request.post(url, headers={"X-CSRF-Token": csrf, "Content-Type": "application/json",
                                        "Origin": "http://evil.example"}, data="{}")
    assert r.status == 403 and r.json()["code"] == "csrf", r.text()
    st, v = api(gw, "GET", f"/api/v1/approvals/{aid}", gw.keys["dana"].secret)
    assert st == 200 and v["state"] == "pending" and v["votes"] == []
    # Logging out ends the session server-side, and with it the page's live stream:
    # the open page falls back to the sign-in form by itself.
    page.request.post(gw.admin_url + "/api/v1/logout", headers={"X-CSRF-Token": csrf})
    assert page.request.get(gw.admin_url + "/api/v1/me").status == 401
    page.get_by_label("Warden key or JWT").wait_for(state="visible", timeout=20_000)
    ctx.close()

    # Clean up: deny through the API (bearer); the DELETE fails like a denial.
    st, v = api(gw, "POST", f"/api/v1/approvals/{aid}/deny", gw.keys["dana"].secret,
                {"comment": "not today"})
    assert st == 200 and v["state"] == "denied", v
    wait_for(lambda: "done" in job, timeout=20, what="the denied DELETE to fail")
    assert "error" in job and "not today" in job["error"], job


def test_cli_sessions_through_the_admin_api(gw):
    require_tool(WARDEN_BIN)
    env = dict(os.environ, WARDEN_ADMIN_URL=gw.admin_url, WARDEN_TOKEN=gw.keys["dana"].secret)
    r = subprocess.run([str(WARDEN_BIN), "sessions", "list", "--principal", "agent:reporter",
                        "--format", "json"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    sessions = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    held = [s for s in sessions if s.get("approvals") and s["requests"]]
    assert held, sessions
    sid = held[0]["session_id"]
    r = subprocess.run([str(WARDEN_BIN), "sessions", "replay", sid[:12]], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "DELETE FROM con_items" in r.stdout and "approval.decided" in r.stdout, r.stdout
    # An agent's token is refused by the API, and the CLI says so.
    env["WARDEN_TOKEN"] = gw.keys["reporter"].secret
    r = subprocess.run([str(WARDEN_BIN), "sessions", "list"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and "may not read evidence" in r.stderr, r.stderr


def test_console_sign_in_with_a_jwt(gw, browser):
    require_tool(JWT_MINT)
    token = subprocess.run([str(JWT_MINT), str(FIXTURES / "rsa_private.pem"), "rsa-1", ISSUER,
                            AUDIENCE, "erin", "dba", "", "600"],
                           capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(gw.admin_url + "/")
    page.get_by_label("Warden key or JWT").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#who-name").wait_for(state="visible")
    assert page.locator("#who-name").inner_text() == "user:erin (dba)"
    me = page.request.get(gw.admin_url + "/api/v1/me").json()
    assert me["principal"] == "user:erin" and me["auditor"] is True
    ctx.close()
    # A token for another audience is refused, and the refusal is evidence.
    ctx = browser.new_context()
    page = ctx.new_page()
    bad = subprocess.run([str(JWT_MINT), str(FIXTURES / "rsa_private.pem"), "rsa-1", ISSUER,
                          "someone-else", "erin", "dba", "", "600"],
                         capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    r = page.request.post(gw.admin_url + "/api/v1/login", data=json.dumps({"credential": bad}),
                          headers={"Content-Type": "application/json"})
    assert r.status == 401, r.text()
    assert not [c for c in ctx.cookies() if c["name"] == "warden_console"]
    # A form post (not JSON) cannot sign anyone in.
    r = page.request.post(gw.admin_url + "/api/v1/login", form={"credential": token})
    assert r.status == 415, r.text()
    ctx.close()
    failed = gw.audit(kind="auth.failed")
    assert failed and all(bad not in json.dumps(x) for x in failed), "the token is never recorded"
