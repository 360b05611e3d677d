"""1. Authentication and session admission."""
from conftest import run_warden, wait_for


def test_good_key_works(warden):
    r = warden.psql("select 1", warden.keys["reporter"].secret)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"


def test_wrong_key_fails_and_is_recorded(warden):
    before = len(warden.audit(kind="auth.failed"))
    bad = "wk_" + "0" * 40
    r = warden.psql("select 1", bad)
    assert r.returncode != 0
    assert "password authentication failed" in r.stderr, r.stderr
    recs = wait_for(lambda: (lambda a: a[before:] if len(a) > before else None)(
        warden.audit(kind="auth.failed")), what="auth.failed record")
    rec = recs[-1]
    assert rec["kind"] == "auth.failed"
    assert rec.get("protocol") == "postgres"
    # the presented secret never lands in evidence
    assert bad not in str(rec)


def test_wrong_secret_for_existing_key_id_fails(warden):
    # Same key id, altered secret part: must be refused too.
    k = warden.keys["reporter"].secret
    tampered = k[:-4] + ("aaaa" if not k.endswith("aaaa") else "bbbb")
    r = warden.psql("select 1", tampered)
    assert r.returncode != 0
    assert "password authentication failed" in r.stderr, r.stderr


def test_key_of_other_principal_fails(warden):
    # dana's key presented as agent:reporter must not authenticate.
    r = warden.psql("select 1", warden.keys["dana"].secret, user="agent:reporter")
    assert r.returncode != 0
    assert "password authentication failed" in r.stderr, r.stderr


def test_revoked_key_fails(warden):
    k = warden.create_key("agent:shortlived", ["agents"])
    r = warden.psql("select 1", k.secret, user="agent:shortlived")
    assert r.returncode == 0, r.stderr
    rv = run_warden(["keys", "revoke", "--config", str(warden.config), k.id])
    assert rv.returncode == 0, rv.stderr
    r = warden.psql("select 1", k.secret, user="agent:shortlived")
    assert r.returncode != 0
    assert "password authentication failed" in r.stderr, r.stderr


def test_unknown_user_fails(warden):
    r = warden.psql("select 1", warden.keys["reporter"].secret, user="agent:nobody")
    assert r.returncode != 0
    assert "password authentication failed" in r.stderr, r.stderr


def test_principal_without_rule_is_refused(warden):
    r = warden.psql("select 1", warden.keys["outsider"].secret, user="agent:outsider")
    assert r.returncode != 0
    assert "no access" in r.stderr, r.stderr
    recs = wait_for(lambda: [x for x in warden.audit(kind="session.refused")
                             if (x.get("principal") or {}).get("id") == "agent:outsider"],
                    what="session.refused for agent:outsider")
    assert recs[-1]["connection"] == "orders"
    # no session was opened for it
    starts = [x for x in warden.audit(kind="session.start")
              if (x.get("principal") or {}).get("id") == "agent:outsider"]
    assert starts == []


def test_unknown_database_refused(warden):
    r = warden.psql("select 1", warden.keys["reporter"].secret, db="nope")
    assert r.returncode != 0
    assert "nope" in r.stderr and "not configured" in r.stderr, r.stderr
    wait_for(lambda: [x for x in warden.audit(kind="session.refused") if x.get("connection") == "nope"],
             what="session.refused for database nope")
