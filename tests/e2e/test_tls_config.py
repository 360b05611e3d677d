"""12. TLS on the PostgreSQL listener (second Warden instance); 14. `warden config check`."""
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from conftest import (free_port, require_tool, run_warden, start_warden, stop_process,
                      write_config, Warden)


@pytest.fixture(scope="module")
def tls_warden(pg):
    require_tool("openssl")
    tmp = Path(tempfile.mkdtemp(prefix="warden-e2e-tls-"))
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-subj", "/CN=localhost", "-days", "1",
                        "-keyout", str(tmp / "key.pem"), "-out", str(tmp / "cert.pem")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    port = free_port()
    cfg = write_config(tmp, pg.port, port, free_port(),
                       extra='\n[tls]\ncert_file = "cert.pem"\nkey_file = "key.pem"\n')
    w = Warden(config=cfg, port=port, proc=None, log=tmp / "warden.log", tmp=tmp)  # type: ignore[arg-type]
    w.keys["reporter"] = w.create_key("agent:reporter", ["agents"])
    w.proc, w.log = start_warden(cfg, port, tmp, name="warden-tls")
    try:
        yield w
    finally:
        stop_process(w.proc)
        shutil.rmtree(tmp, ignore_errors=True)


def test_tls_psql_sslmode_require(tls_warden):
    w = tls_warden
    r = w.psql(None, w.keys["reporter"].secret, extra_conn="sslmode=require",
               extra_args=["-c", r"\conninfo", "-c", "select 'over-tls'"])
    assert r.returncode == 0, r.stderr
    assert "SSL connection" in r.stdout, r.stdout
    assert "over-tls" in r.stdout


def test_tls_psycopg(tls_warden):
    w = tls_warden
    with w.connect("reporter", sslmode="require", autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use is True
        assert conn.execute("select 7").fetchone()[0] == 7


def test_tls_verify_full_with_cert(tls_warden):
    w = tls_warden
    r = w.psql("select 'verified'", w.keys["reporter"].secret,
               extra_conn=f"sslmode=verify-ca sslrootcert={w.tmp / 'cert.pem'}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "verified"


def test_tls_plain_still_allowed_on_loopback(tls_warden):
    w = tls_warden
    r = w.psql("select 'plain'", w.keys["reporter"].secret, extra_conn="sslmode=disable")
    assert r.returncode == 0, r.stderr


def test_tls_instance_has_its_own_evidence(tls_warden):
    w = tls_warden
    recs = w.audit(kind="session.start")
    assert recs, "the TLS instance records its sessions"
    code, out = w.verify()
    assert code == 0, out


def test_config_check_valid(warden):
    r = run_warden(["config", "check", "--config", str(warden.config)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout


def test_config_check_three_mistakes(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        "[gateway]\n"                        # 1
        'data_dir = "./data"\n'              # 2
        "\n"                                 # 3
        "[[connections]]\n"                  # 4
        'name = "orders"\n'                  # 5
        'protocol = "postgress"\n'           # 6  mistake 1: unknown protocol
        'upstream = "127.0.0.1:5432"\n'      # 7
        "\n"                                 # 8
        "[[rules]]\n"                        # 9
        'id = "r1"\n'                        # 10
        'principals = ["group:agents"]\n'    # 11
        'connections = ["ordrs"]\n'          # 12 mistake 2: unknown connection
        'sql = ["select"]\n'                 # 13
        'effect = "maybe"\n'                 # 14 mistake 3: unknown effect
    )
    r = run_warden(["config", "check", "--config", str(cfg)])
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "3 problem" in out, out
    problems = [line.strip() for line in out.splitlines() if line.strip().startswith("line ")]
    assert len(problems) == 3, out
    assert any(p.startswith("line 6:") and "protocol" in p for p in problems), problems
    assert any(p.startswith("line 12:") and "ordrs" in p for p in problems), problems
    assert any(p.startswith("line 14:") and "maybe" in p for p in problems), problems
