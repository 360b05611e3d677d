"""CLI contract pieces exercised against the live store: policy check, audit filters, keys."""
import json

from conftest import run_warden


def test_policy_check_exit_codes(warden):
    base = ["policy", "check", "--config", str(warden.config), "--principal", "agent:reporter",
            "--group", "agents", "--connection", "orders"]
    r = run_warden(base + ["--sql", "select * from items"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ALLOW" in r.stdout and "agents-read" in r.stdout
    r = run_warden(base + ["--sql", "delete from items"])
    assert r.returncode == 4, r.stdout + r.stderr
    assert "DENY" in r.stdout and "no-deletes" in r.stdout
    r = run_warden(base + ["--sql", "copy items to stdout"])
    assert r.returncode == 4, r.stdout + r.stderr


def test_audit_filters(warden):
    assert warden.psql("select 'filters'", warden.keys["dana"].secret, user="user:dana").returncode == 0
    recs = warden.audit(principal="user:dana")
    assert recs and all(r["principal"]["id"] == "user:dana" for r in recs)
    recs = warden.audit(kind="session.start")
    assert recs and all(r["kind"] == "session.start" for r in recs)
    seqs = [r["seq"] for r in warden.audit()]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "oldest first, unique seq"
    r = run_warden(["audit", "query", "--config", str(warden.config), "--kind", "no.such.kind"])
    assert r.returncode != 0


def test_keys_list_never_shows_secrets(warden):
    r = run_warden(["keys", "list", "--config", str(warden.config), "--format", "json"], check=True)
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    by_id = {row["id"]: row for row in rows}
    for k in warden.keys.values():
        assert k.id in by_id
        assert by_id[k.id]["principal"] == k.principal
        assert k.secret not in r.stdout
