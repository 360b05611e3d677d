"""OIDC JWT login through the PostgreSQL listener, and TLS from Warden to the database.

A second Warden instance (own data dir) is started with ``[identity.oidc]`` pointing at the
JWKS fixture of the identity crate, and with a connection that reaches the shared
PostgreSQL over TLS verified against a CA file (``tls = "verify-full"``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import (
    IS_ROOT,
    REPO,
    Warden,
    free_port,
    require_tool,
    run_warden,
    start_warden,
    stop_process,
    write_config,
)

FIXTURES = REPO / "crates" / "identity" / "tests" / "fixtures"
JWT_MINT = Path(os.environ.get("JWT_MINT_BIN", REPO / "target" / "debug" / "examples" / "jwt_mint"))
ISSUER = "https://idp.e2e.test"
AUDIENCE = "warden-e2e"


def mint(sub: str, groups: str = "", act: str = "", exp_secs: int = 600, aud: str = AUDIENCE,
         key: str = "rsa_private.pem", kid: str = "rsa-1") -> str:
    require_tool(JWT_MINT)
    r = subprocess.run([str(JWT_MINT), str(FIXTURES / key), kid, ISSUER, aud, sub, groups, act,
                        str(exp_secs)], capture_output=True, text=True, timeout=30, check=True)
    return r.stdout.strip()


def make_ca_and_cert(dirpath: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for localhost/127.0.0.1 signed by it (webpki refuses
    a self-signed certificate used directly as the server's)."""
    require_tool("openssl")
    ca_crt, ca_key = dirpath / f"{name}-ca.crt", dirpath / f"{name}-ca.key"
    crt, key, csr = dirpath / f"{name}.crt", dirpath / f"{name}.key", dirpath / f"{name}.csr"
    ext = dirpath / f"{name}.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    run = lambda *a: subprocess.run(list(a), check=True, capture_output=True, timeout=60)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name} test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", str(ca_key), "-out", str(ca_crt))
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", str(key), "-out", str(csr))
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(crt))
    return ca_crt, crt, key


@pytest.fixture(scope="module")
def tls_pg(pg):
    """Turn on TLS in the shared PostgreSQL (plain connections keep working)."""
    tmp = Path(tempfile.mkdtemp(prefix="warden-e2e-pgtls-"))
    ca, crt, key = make_ca_and_cert(tmp, "server")
    dst_crt, dst_key = pg.datadir / "server.crt", pg.datadir / "server.key"
    shutil.copy(crt, dst_crt)
    shutil.copy(key, dst_key)
    os.chmod(dst_key, 0o600)
    if IS_ROOT:
        for p in (dst_crt, dst_key):
            shutil.chown(p, "postgres", "postgres")
    pg.admin_psql("alter system set ssl = on")
    pg.admin_psql("select pg_reload_conf()")
    other_ca, _, _ = make_ca_and_cert(tmp, "unrelated")
    yield {"ca": ca, "unrelated_ca": other_ca}
    pg.admin_psql("alter system set ssl = off")
    pg.admin_psql("select pg_reload_conf()")
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def oidc_warden(pg, tls_pg):
    tmp = Path(tempfile.mkdtemp(prefix="warden-e2e-oidc-"))
    port = free_port()
    extra = f"""
[identity.oidc]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
jwks_file = "{FIXTURES / 'jwks.json'}"
groups_claim = "groups"

[[connections]]
name = "orders_tls"
protocol = "postgres"
upstream = "127.0.0.1:{pg.port}"
database = "orders"
user = "orders_app"
password = "${{ORDERS_PW}}"
tls = "verify-full"
ca_file = "{tls_pg['ca']}"
server_name = "localhost"

[[connections]]
name = "orders_badca"
protocol = "postgres"
upstream = "127.0.0.1:{pg.port}"
database = "orders"
user = "orders_app"
password = "${{ORDERS_PW}}"
tls = "verify-full"
ca_file = "{tls_pg['unrelated_ca']}"
server_name = "localhost"

[[rules]]
id = "agents-read-tls"
principals = ["group:agents"]
connections = ["orders_tls", "orders_badca"]
sql = ["select"]
effect = "allow"
"""
    cfg = write_config(tmp, pg.port, port, free_port(), extra=extra)
    r = run_warden(["config", "check", "--config", str(cfg)])
    assert r.returncode == 0, r.stdout + r.stderr
    w = Warden(config=cfg, port=port, proc=None, log=tmp / "oidc.log", tmp=tmp)  # type: ignore[arg-type]
    w.keys["reporter"] = w.create_key("agent:reporter", ["agents"])
    w.proc, w.log = start_warden(cfg, port, tmp, name="oidc")
    try:
        yield w
    finally:
        stop_process(w.proc)
        shutil.rmtree(tmp, ignore_errors=True)


def test_jwt_login_records_issuer_subject_and_on_behalf_of(oidc_warden):
    w = oidc_warden
    token = mint("report-bot", groups="agents", act="alice")
    r = w.psql("select 'jwt-login-ok'", key=token, user="agent:report-bot")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "jwt-login-ok"
    starts = [s for s in w.audit(kind="session.start") if s["principal"]["id"] == "agent:report-bot"]
    assert starts, "a session.start for the JWT principal"
    p = starts[-1]["principal"]
    assert p["auth"] == {"method": "jwt", "issuer": ISSUER, "subject": "report-bot"}
    assert p["groups"] == ["agents"]
    assert p["on_behalf_of"] == "user:alice"
    reqs = [x for x in w.audit(kind="action.request") if x["action"]["text"] == "select 'jwt-login-ok'"]
    assert len(reqs) == 1 and reqs[0]["principal"]["on_behalf_of"] == "user:alice"
    # The token itself is never evidence.
    db = (w.tmp / "data" / "evidence.db").read_bytes()
    assert token.encode() not in db


@pytest.mark.parametrize("case", ["expired", "wrong_audience", "other_user", "tampered"])
def test_bad_jwts_are_refused_and_recorded(oidc_warden, case):
    w = oidc_warden
    user = "agent:report-bot"
    if case == "expired":
        token = mint("report-bot", groups="agents", act="alice", exp_secs=-3600)
    elif case == "wrong_audience":
        token = mint("report-bot", groups="agents", act="alice", aud="someone-else")
    elif case == "other_user":
        token = mint("report-bot", groups="agents", act="alice")
        user = "agent:impostor"
    else:
        good = mint("report-bot", groups="agents", act="alice")
        head, body, sig = good.split(".")
        token = f"{head}.{body}.{sig[:-4]}AAAA"
    before = len(w.audit(kind="auth.failed"))
    r = w.psql("select 1", key=token, user=user)
    assert r.returncode != 0
    assert "password authentication failed" in r.stderr
    failed = w.audit(kind="auth.failed")
    assert len(failed) == before + 1
    assert token not in failed[-1].get("detail", "")


def test_warden_key_still_uses_scram_with_oidc_enabled(oidc_warden):
    r = oidc_warden.psql("select 2", key=oidc_warden.keys["reporter"].secret)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "2"


def test_upstream_tls_verified(oidc_warden):
    w = oidc_warden
    key = w.keys["reporter"].secret
    r = w.psql("select 'over-tls'", key=key, db="orders_tls")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "over-tls"
    # The database sees Warden's session encrypted.
    r = w.psql("select ssl from pg_stat_ssl where pid = pg_backend_pid()", key=key, db="orders_tls")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "t"


def test_upstream_tls_with_wrong_ca_is_refused(oidc_warden):
    w = oidc_warden
    r = w.psql("select 1", key=w.keys["reporter"].secret, db="orders_badca")
    assert r.returncode != 0
    assert "could not open connection" in r.stderr
    refused = [x for x in w.audit(kind="session.refused") if x.get("connection") == "orders_badca"]
    assert refused and "TLS" in refused[-1]["detail"]
