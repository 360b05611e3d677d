"""2-5. Simple queries, multi-statement strings, denials, purpose."""
import psycopg
import pytest

from conftest import wait_for
from helpers import one_request, records_with_text, response_for, session_records, tag


def test_simple_query_and_evidence(warden):
    t = tag()
    q = f"select count(*) from items where '{t}' <> ''"
    r = warden.psql(q, warden.keys["reporter"].secret)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1000"

    req = one_request(warden, q)
    assert req["action"]["text"] == q
    assert req["action"]["kind"] == "sql"
    assert req["principal"]["id"] == "agent:reporter"
    assert req["principal"]["groups"] == ["agents"]
    assert req["connection"] == "orders"
    assert req["protocol"] == "postgres"
    assert req["decision"]["effect"] == "allow"
    assert req["decision"]["rules"] == ["agents-read"]

    resp = response_for(warden, req)
    assert resp["response"]["status"] == "ok"
    assert resp["response"]["rows"] == 1  # count(*) returns one row
    assert resp["request_id"] == req["id"]
    assert resp["seq"] > req["seq"]

    sid = req["session_id"]
    recs = wait_for(lambda: (lambda s: s if any(x["kind"] == "session.end" for x in s) else None)(
        session_records(warden, sid)), what="session.end")
    kinds = [x["kind"] for x in recs]
    assert kinds[0] == "session.start", kinds
    assert kinds[-1] == "session.end", kinds
    assert kinds.index("action.request") < kinds.index("action.response")
    assert all(x["session_id"] == sid for x in recs)


def test_thousand_rows_counted(warden):
    t = tag()
    q = f"select id from items where '{t}' <> '' order by id"
    r = warden.psql(q, warden.keys["reporter"].secret)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1000 and lines[0] == "1" and lines[-1] == "1000"
    resp = response_for(warden, one_request(warden, q))
    assert resp["response"]["status"] == "ok"
    assert resp["response"]["rows"] == 1000
    assert resp["response"]["bytes"] > 0


def test_multi_statement_string(warden):
    t = tag()
    a, b = f"select 1 as a_{t}", f"select 2 as b_{t}"
    r = warden.psql(f"{a}; {b}", warden.keys["reporter"].secret)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "2"]
    ra, rb = one_request(warden, a), one_request(warden, b)
    assert ra["session_id"] == rb["session_id"]
    assert ra["seq"] < rb["seq"]


def test_multi_statement_exact_texts(warden):
    # The brief's literal case: `select 1; select 2` -> texts `select 1` and `select 2`.
    before = warden.audit(kind="action.request")
    r = warden.psql("select 1; select 2", warden.keys["reporter"].secret)
    assert r.returncode == 0, r.stderr
    after = wait_for(lambda: (lambda a: a if len(a) >= len(before) + 2 else None)(
        warden.audit(kind="action.request")), what="two new action.request records")
    seen = {x["seq"] for x in before}
    new = [x for x in after if x["seq"] not in seen and x["principal"]["id"] == "agent:reporter"]
    sessions = {}
    for x in new:
        sessions.setdefault(x["session_id"], []).append(x["action"]["text"])
    assert ["select 1", "select 2"] in sessions.values(), sessions


def test_delete_is_denied(warden):
    with warden.connect("reporter", autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as ei:
            conn.execute("delete from items where id = 1")
        assert ei.value.sqlstate == "42501", ei.value
        assert "denied" in str(ei.value)
        # the session keeps working after a denial
        assert conn.execute("select 41 + 1").fetchone()[0] == 42

    # psql shows the same
    r = warden.psql("delete from items where id = 1", warden.keys["reporter"].secret)
    assert r.returncode != 0 and "denied" in r.stderr, r.stderr

    # the row is still there (checked with the dba key)
    r = warden.psql("select count(*) from items where id = 1", warden.keys["dana"].secret,
                    user="user:dana")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"

    denied = [x for x in warden.audit(kind="policy.denied")
              if x["action"]["text"] == "delete from items where id = 1"]
    assert len(denied) >= 2, denied
    d = denied[0]
    assert d["decision"]["effect"] == "deny"
    assert "no-deletes" in d["decision"]["rules"]
    assert d["principal"]["id"] == "agent:reporter"
    # never forwarded: no action.request for it
    assert records_with_text(warden, "delete from items where id = 1") == []


def test_denied_in_transaction_rolls_back(warden):
    t = tag()
    new_id = 100000 + int(t[:5], 16) % 100000
    with warden.connect("reporter") as conn:  # psycopg: implicit transaction (autocommit off)
        cur = conn.cursor()
        cur.execute(f"insert into items (id, name, price) values ({new_id}, 'tx-{t}', 1)")
        with pytest.raises(psycopg.Error) as ei:
            cur.execute("delete from items where id = 2")
        assert ei.value.sqlstate == "42501", ei.value
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            cur.execute("select 1")
        conn.rollback()
    r = warden.psql(f"select count(*) from items where id = {new_id}", warden.keys["dana"].secret,
                    user="user:dana")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0", "the insert before the denied statement must not persist"


def test_denied_in_explicit_transaction_commit_rolls_back(warden):
    t = tag()
    new_id = 200000 + int(t[:5], 16) % 100000
    with warden.connect("reporter", autocommit=True) as conn:
        conn.execute("begin")
        conn.execute(f"insert into items (id, name, price) values ({new_id}, 'tx2-{t}', 1)")
        with pytest.raises(psycopg.Error) as ei:
            conn.execute("delete from items where id = 3")
        assert ei.value.sqlstate == "42501"
        # COMMIT of a failed transaction block is a ROLLBACK
        cur = conn.execute("commit")
        assert cur.statusmessage == "ROLLBACK", cur.statusmessage
    r = warden.psql(f"select count(*) from items where id = {new_id}", warden.keys["dana"].secret,
                    user="user:dana")
    assert r.stdout.strip() == "0", r.stdout + r.stderr


def test_denied_in_multi_statement_string_runs_nothing(warden):
    t = tag()
    new_id = 300000 + int(t[:5], 16) % 100000
    q = f"insert into items (id, name, price) values ({new_id}, 'ms-{t}', 1); delete from items where id = 4"
    r = warden.psql(q, warden.keys["reporter"].secret)
    assert r.returncode != 0 and "denied" in r.stderr, r.stderr
    r = warden.psql(f"select count(*) from items where id in ({new_id}, 4)", warden.keys["dana"].secret,
                    user="user:dana")
    assert r.stdout.strip() == "1", r.stdout + r.stderr


@pytest.mark.parametrize("sql", ["selec 1", "DO $$ BEGIN END $$"])
def test_unparseable_sql_is_refused_not_forwarded(warden, sql):
    # Even the dba (sql = ["*"]) cannot run what Warden cannot classify.
    with warden.connect("dana", autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as ei:
            conn.execute(sql)
        assert ei.value.sqlstate == "42501", (ei.value.sqlstate, str(ei.value))
        assert "parse" in str(ei.value).lower()
    assert records_with_text(warden, sql) == []
    denied = [x for x in warden.audit(kind="policy.denied") if x["action"]["text"] == sql]
    assert denied and denied[-1]["decision"]["effect"] == "deny"
    assert denied[-1]["action"].get("sql_kinds") == ["unparsed"]


def test_purpose_from_startup_options(warden):
    t = tag()
    q = f"select 'purpose-{t}'"
    r = warden.psql(q, warden.keys["reporter"].secret, pgoptions="-c warden.purpose=ticket-42")
    assert r.returncode == 0, r.stderr
    req = one_request(warden, q)
    assert req["purpose"] == "ticket-42"
    recs = wait_for(lambda: (lambda s: s if any(x["kind"] == "session.end" for x in s) else None)(
        session_records(warden, req["session_id"])), what="session.end")
    for x in recs:
        assert x.get("purpose") == "ticket-42", x


def test_purpose_from_set(warden):
    t = tag()
    q = f"select 'purpose-set-{t}'"
    r = warden.psql(f"SET warden.purpose = 'ticket-43'; {q}", warden.keys["reporter"].secret,
                    pgoptions="-c warden.purpose=ticket-42")
    assert r.returncode == 0, r.stderr
    req = one_request(warden, q)
    assert req["purpose"] == "ticket-43"
    start = [x for x in session_records(warden, req["session_id"]) if x["kind"] == "session.start"]
    assert start[0]["purpose"] == "ticket-42"


def test_purpose_set_in_separate_statement(warden):
    t = tag()
    q = f"select 'purpose-sep-{t}'"
    with warden.connect("reporter", autocommit=True) as conn:
        conn.execute("SET warden.purpose = 'ticket-44'")
        conn.execute(q)
    assert one_request(warden, q)["purpose"] == "ticket-44"


def test_denied_with_params_extended_protocol(warden):
    with warden.connect("reporter", autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as ei:
            conn.execute("delete from items where id = %s", (1,))
        assert ei.value.sqlstate == "42501", ei.value
        assert "denied" in str(ei.value)
        assert conn.execute("select %s::text", ("after",)).fetchone()[0] == "after"
    d = [x for x in warden.audit(kind="policy.denied")
         if x["action"]["text"] == "delete from items where id = $1"]
    assert d and d[-1]["decision"]["rules"] == ["no-deletes"]
    assert records_with_text(warden, "delete from items where id = $1") == []


def test_denied_in_pipeline_mode_aborts_the_batch(warden):
    t = tag()
    new_id = 400000 + int(t[:5], 16) % 100000
    with warden.connect("reporter") as conn:
        with pytest.raises(psycopg.Error) as ei:
            with conn.pipeline():
                conn.execute("insert into items (id, name, price) values (%s, %s, 1)",
                             (new_id, f"pipe-{t}"))
                conn.execute("delete from items where id = %s", (5,))
                conn.execute("select 1")
        assert ei.value.sqlstate == "42501", (ei.value.sqlstate, str(ei.value))
        conn.rollback()
        assert conn.execute("select count(*) from items where id = %s", (new_id,)).fetchone()[0] == 0
    r = warden.psql(f"select count(*) from items where id in ({new_id}, 5)", warden.keys["dana"].secret,
                    user="user:dana")
    assert r.stdout.strip() == "1", r.stdout + r.stderr


def test_session_end_detail_on_clean_exit(warden):
    t = tag()
    q = f"select 'bye-{t}'"
    assert warden.psql(q, warden.keys["reporter"].secret).returncode == 0
    sid = one_request(warden, q)["session_id"]
    ends = wait_for(lambda: warden.audit(kind="session.end", session=sid), what="session.end")
    assert "terminated" in ends[0]["detail"], ends[0]
    assert "1 action(s) forwarded" in ends[0]["detail"], ends[0]
