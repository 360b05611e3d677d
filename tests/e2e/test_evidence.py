"""Verifiable evidence: signed checkpoints, `audit verify`, offline bundles (and the
independent Python verifier), sessions list/replay, and crash safety under SIGKILL.

Every test here runs its own Warden (own data dir) in front of the shared ``pg`` cluster.
"""
from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import (
    REPO,
    Warden,
    free_port,
    run_warden,
    start_warden,
    stop_process,
    wait_for,
    write_config,
)
from helpers import assert_answered_and_verified, pg_msg, pg_startup, raw_login, run_until_held

VERIFY_PY = REPO / "tools" / "verify_bundle.py"


def make_warden(pg, tmp: Path, gateway_extra: str = "", extra: str = "") -> Warden:
    """A Warden with the e2e config, `gateway_extra` added to `[gateway]` and `extra`
    (more sections) at the end."""
    port = free_port()
    cfg = write_config(tmp, pg.port, port, free_port())
    text = cfg.read_text()
    text = text.replace('[gateway]\ndata_dir = "./data"\n',
                        '[gateway]\ndata_dir = "./data"\n' + gateway_extra, 1)
    cfg.write_text(text + extra)
    r = run_warden(["config", "check", "--config", str(cfg)])
    assert r.returncode == 0, r.stdout + r.stderr
    w = Warden(config=cfg, port=port, proc=None, log=tmp / "warden.log", tmp=tmp)  # type: ignore[arg-type]
    w.keys["reporter"] = w.create_key("agent:reporter", ["agents"])
    w.keys["dana"] = w.create_key("user:dana", ["dba"])
    w.proc, w.log = start_warden(cfg, port, tmp)
    return w


def checkpoints(w: Warden) -> list[tuple]:
    with sqlite3.connect(str(w.tmp / "data" / "evidence.db")) as c:
        return c.execute("select tree_size, root, key_fingerprint from checkpoints "
                         "order by tree_size").fetchall()


def head_seq(w: Warden) -> int:
    with sqlite3.connect(str(w.tmp / "data" / "evidence.db")) as c:
        return c.execute("select coalesce(max(seq), 0) from records").fetchone()[0]


def py_verify(bundle: Path, pub: Path) -> tuple[int, str]:
    r = subprocess.run([sys.executable, str(VERIFY_PY), str(bundle), "--public-key", str(pub)],
                       capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


def warden_verify_bundle(bundle: Path, pub: Path) -> tuple[int, str]:
    r = run_warden(["evidence", "verify", str(bundle), "--public-key", str(pub)])
    return r.returncode, r.stdout + r.stderr


@pytest.fixture(scope="module")
def ew(pg):
    tmp = Path(tempfile.mkdtemp(prefix="warden-e2e-evidence-"))
    w = make_warden(pg, tmp, 'checkpoint_interval = "1s"\n')
    try:
        yield w
    finally:
        stop_process(w.proc)
        print(f"\n--- warden log tail ({w.log}) ---\n" + w.log.read_text()[-3000:])
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def activity(ew):
    """A few sessions: reads, a write, a denial, an error, by two principals."""
    t = uuid.uuid4().hex[:8]
    with ew.connect("reporter", autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute(f"select id, name from items where id <= 3 /* {t}-a */")
        assert len(cur.fetchall()) == 3
        cur.execute(f"insert into big values (1, '{t}-b')")
        with pytest.raises(Exception):
            cur.execute(f"delete from big where payload = '{t}-c'")
        with pytest.raises(Exception):
            cur.execute(f"select no_such_column from items /* {t}-d */")
    with ew.connect("dana", autocommit=True) as conn:
        conn.execute(f"select count(*) from items /* {t}-e */").fetchone()
    wait_for(lambda: any(t in ((r.get("action") or {}).get("text") or "")
                         for r in ew.audit(principal="user:dana")),
             what="dana's statement recorded")
    return t


def test_gateway_signs_checkpoints_with_its_key(ew, activity):
    pub = ew.tmp / "data" / "signing.pub"
    assert pub.exists() and (ew.tmp / "data" / "signing.key").exists(), \
        "serve generates a signing key pair when none exists"
    assert oct((ew.tmp / "data" / "signing.key").stat().st_mode & 0o777) == "0o600"
    n = head_seq(ew)
    cps = wait_for(lambda: [c for c in checkpoints(ew) if c[0] >= n], timeout=15,
                   what="a periodic checkpoint covering the activity")
    assert cps[0][2] == __import__("hashlib").sha256(bytes.fromhex(pub.read_text().strip())).hexdigest()
    code, out = ew.verify()
    assert code == 0, out
    assert re.search(r"checkpoints: \d+ verified \(roots and signatures", out), out


def test_export_verify_round_trip_and_independent_verifier(ew, activity, tmp_path):
    pub = ew.tmp / "data" / "signing.pub"
    out = tmp_path / "reporter.json"
    r = run_warden(["evidence", "export", "--config", str(ew.config), "--since", "1h",
                    "--until", "2099-01-01T00:00:00Z", "--principal", "agent:reporter",
                    "--out", str(out)])
    assert r.returncode == 0, r.stdout + r.stderr
    bundle = json.loads(out.read_text())
    assert bundle["format"] == "warden-evidence-bundle/v1"
    recs = bundle["records"]
    assert recs and all(x["principal"]["id"] == "agent:reporter" for x in recs)
    texts = " ".join((x.get("action") or {}).get("text", "") for x in recs)
    for suffix in ("a", "b", "c", "d"):
        assert f"{activity}-{suffix}" in texts, suffix
    assert len(bundle["proofs"]) == len(recs)
    assert bundle["manifest"]["record_count"] == len(recs)
    assert bundle["checkpoint"]["tree_size"] >= recs[-1]["seq"]

    code, text = warden_verify_bundle(out, pub)
    assert code == 0 and text.startswith("OK:"), text
    pcode, ptext = py_verify(out, pub)
    assert pcode == 0 and ptext.startswith("OK:"), ptext
    # Both name the same count and checkpoint.
    assert re.search(r"OK: (\d+) record", text).group(1) == re.search(r"OK: (\d+) record", ptext).group(1)

    # The whole chain, unfiltered: a contiguous run.
    full = tmp_path / "all.json"
    run_warden(["evidence", "export", "--config", str(ew.config), "--out", str(full)], check=True)
    code, text = warden_verify_bundle(full, pub)
    assert code == 0 and "contiguous" in text, text
    assert py_verify(full, pub)[0] == 0

    # Another key: both refuse.
    other = tmp_path / "other.pub"
    other.write_text("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a\n")
    assert warden_verify_bundle(out, other)[0] == 1
    assert py_verify(out, other)[0] == 1


def edits(data: bytes, bundle: dict) -> dict[str, bytes]:
    text = data.decode()
    rec = bundle["records"][0]
    out = {}
    arec = next(r for r in bundle["records"] if r.get("action"))
    atext = arec["action"]["text"]
    if atext:
        out["statement text"] = text.replace(json.dumps(atext, ensure_ascii=False)[1:-1],
                                             json.dumps(atext + " ", ensure_ascii=False)[1:-1], 1).encode()
    out["record ts"] = text.replace(rec["ts"], rec["ts"].replace("Z", "Z "), 1).encode()
    out["readme"] = text.replace("This is a Warden", "This is a warden", 1).encode()
    out["created_at"] = text.replace('"created_at":"2', '"created_at":"1', 1).encode()
    path0 = next(p["path"][0] for p in bundle["proofs"] if p["path"])
    flipped = ("0" if path0[0] != "0" else "1") + path0[1:]
    out["proof hash"] = text.replace(path0, flipped, 1).encode()
    sig = bundle["checkpoint"]["signature"]
    out["checkpoint signature"] = text.replace(sig, sig[:-1] + ("0" if sig[-1] != "0" else "1"), 1).encode()
    out["record count"] = text.replace(f'"record_count":{len(bundle["records"])}',
                                       f'"record_count":{len(bundle["records"]) + 1}', 1).encode()
    out["whitespace"] = text.replace('{"bundle_signature"', '{ "bundle_signature"', 1).encode()
    out["trailing newline"] = data[:-1]
    # Drop the first record and its proof, keep everything else as is.
    b2 = json.loads(text)
    b2["records"].pop(0)
    b2["proofs"].pop(0)
    out["record removed"] = (json.dumps(b2, sort_keys=True, separators=(",", ":"),
                                        ensure_ascii=False) + "\n").encode()
    return out


def test_any_edit_of_a_bundle_fails_in_both_verifiers(ew, activity, tmp_path):
    pub = ew.tmp / "data" / "signing.pub"
    out = tmp_path / "b.json"
    run_warden(["evidence", "export", "--config", str(ew.config), "--principal", "agent:reporter",
                "--out", str(out)], check=True)
    data = out.read_bytes()
    bundle = json.loads(data)
    cases = edits(data, bundle)
    assert len(cases) >= 10
    for name, bad in cases.items():
        assert bad != data, name
        f = tmp_path / f"edited-{name.replace(' ', '_')}.json"
        f.write_bytes(bad)
        wc, wt = warden_verify_bundle(f, pub)
        pc, pt = py_verify(f, pub)
        assert wc == 1 and wt.startswith("FAILED"), f"{name}: warden said {wt}"
        assert pc == 1 and pt.startswith("FAILED"), f"{name}: verify_bundle.py said {pt}"
    # Named problems for the statement edit.
    f = tmp_path / "edited-statement_text.json"
    if f.exists():
        seq = next(r for r in bundle["records"] if r.get("action"))["seq"]
        assert f"record {seq} was edited" in warden_verify_bundle(f, pub)[1]
        assert f"record {seq} was edited" in py_verify(f, pub)[1]
    # Random single-byte edits (deterministic sample).
    import random
    rnd = random.Random(6)
    for _ in range(40):
        i = rnd.randrange(len(data))
        b = bytearray(data)
        b[i] = ord("x") if b[i] != ord("x") else ord("y")
        f = tmp_path / "random.json"
        f.write_bytes(bytes(b))
        assert warden_verify_bundle(f, pub)[0] == 1, f"byte {i}"
        assert py_verify(f, pub)[0] == 1, f"byte {i}"


def copy_store(w: Warden, dst: Path) -> Path:
    (dst / "data").mkdir(parents=True)
    with sqlite3.connect(str(w.tmp / "data" / "evidence.db")) as s, \
            sqlite3.connect(str(dst / "data" / "evidence.db")) as d:
        s.backup(d)
    for f in ("signing.key", "signing.pub"):
        shutil.copy(w.tmp / "data" / f, dst / "data" / f)
    cfg = dst / "warden.toml"
    shutil.copy(w.config, cfg)
    return cfg


def test_audit_verify_names_tampering(ew, activity, tmp_path):
    cases = {
        "edited": ("update records set body = replace(body, 'items', 'itemz') where seq = "
                   "(select min(seq) from records where body like '%items%')", r"\(edited\)"),
        "deleted": ("delete from records where seq = 3", r"FAILED at seq 3 \(missing\)"),
        "truncated": ("delete from records where seq > (select max(tree_size) - 2 from checkpoints)",
                      r"\(truncated\): records after seq \d+ were removed"),
        "reordered": ("update records set seq = -1 where seq = 2; update records set seq = 2 where seq = 3;"
                      "update records set seq = 3 where seq = -1", r"FAILED at seq 2 \(reordered\)"),
    }
    for name, (sql, pattern) in cases.items():
        cfg = copy_store(ew, tmp_path / name)
        r = run_warden(["audit", "checkpoint", "--config", str(cfg)])
        assert r.returncode == 0, r.stderr
        assert ew.verify(cfg)[0] == 0
        with sqlite3.connect(str(tmp_path / name / "data" / "evidence.db")) as d:
            d.executescript(sql)
        code, out = ew.verify(cfg)
        assert code == 1, f"{name}: {out}"
        assert re.search(pattern, out), f"{name}: {out}"

    # A checkpoint forged with another key.
    cfg = copy_store(ew, tmp_path / "forged")
    mallory = tmp_path / "mallory.key"
    mallory.write_text("11" * 32 + "\n")
    with sqlite3.connect(str(tmp_path / "forged" / "data" / "evidence.db")) as d:
        d.execute("delete from checkpoints")
    r = run_warden(["audit", "checkpoint", "--config", str(cfg), "--signing-key", str(mallory)])
    assert r.returncode == 0, r.stderr
    code, out = ew.verify(cfg)
    assert code == 1 and "(forged_checkpoint)" in out, out
    # Usage errors exit 2.
    r = run_warden(["audit", "verify", "--config", str(cfg), "--public-key", str(tmp_path / "nope.pub")])
    assert r.returncode == 2, r.stdout + r.stderr


def test_sessions_list_and_replay(ew, activity):
    r = run_warden(["sessions", "list", "--config", str(ew.config), "--principal", "agent:reporter",
                    "--format", "json"], check=True)
    sessions = [json.loads(line) for line in r.stdout.splitlines()]
    mine = None
    for s in sessions:
        rep = run_warden(["sessions", "replay", "--config", str(ew.config), s["session_id"],
                          "--format", "json"], check=True)
        doc = json.loads(rep.stdout)
        if any(activity in ((x.get("action") or {}).get("text") or "") for x in doc["records"]):
            mine = s
            break
    assert mine, sessions
    assert mine["principal"] == "agent:reporter" and mine["connection"] == "orders"
    assert mine["requests"] >= 3 and mine["denied"] >= 1 and mine["errors"] >= 1, mine
    assert mine["ended_at"], mine
    table = run_warden(["sessions", "list", "--config", str(ew.config)], check=True).stdout
    assert mine["session_id"] in table and "agent:reporter" in table
    text = run_warden(["sessions", "replay", "--config", str(ew.config), mine["session_id"][:20]],
                      check=True).stdout
    assert f"select id, name from items where id <= 3 /* {activity}-a */" in text, text
    assert "DENIED" in text and "no-deletes" in text, text
    assert "SELECT 3" in text and "3 row(s)" in text, text
    assert "ERROR" in text and "42703" in text, text
    assert "session.end" in text, text
    # In order: the request line comes before its response line.
    assert text.index(f"{activity}-a") < text.index("SELECT 3")


def test_a_schema_4_store_is_reindexed_by_block_and_answers_the_same(pg):
    """Schema 5 indexes principal / connection / kind / session id by block of 64 records.
    A store written by the schema-4 layout (per-record indexes, no postings) is upgraded
    when opened — not while an older gateway holds its append log — and every query
    answers as before."""
    tmp = Path(tempfile.mkdtemp(prefix="warden-e2e-schema4-"))
    w = make_warden(pg, tmp)
    try:
        # Three sessions of two principals, interleaved: several blocks of 64 records.
        conns = [w.connect("reporter", autocommit=True), w.connect("dana", autocommit=True),
                 w.connect("reporter", autocommit=True)]
        for i in range(60):
            for c in conns:
                c.execute(f"select id from items where id = {i % 5 + 1}").fetchall()
        for c in conns:
            c.close()
    finally:
        stop_process(w.proc)
    try:
        def answers() -> dict:
            sessions = [json.loads(line) for line in run_warden(
                ["sessions", "list", "--config", str(w.config), "--format", "json"],
                check=True).stdout.splitlines()]
            return {
                "sessions": sessions,
                "reporter": [r["seq"] for r in w.audit(principal="agent:reporter")],
                "responses": [r["seq"] for r in w.audit(kind="action.response")],
                "per_session": {s["session_id"]: [r["seq"] for r in w.audit(session=s["session_id"])]
                                for s in sessions},
            }

        before = answers()
        assert len(before["sessions"]) == 3, before["sessions"]
        assert len(before["responses"]) == 180
        assert sum(len(v) for v in before["per_session"].values()) > 3 * 64

        db = tmp / "data" / "evidence.db"
        with sqlite3.connect(str(db)) as c:
            c.executescript(
                "DROP TABLE record_postings; "
                "CREATE INDEX records_principal ON records(principal); "
                "CREATE INDEX records_connection ON records(connection); "
                "CREATE INDEX records_kind ON records(kind); "
                "CREATE INDEX records_session_id ON records(session_id); "
                "PRAGMA user_version = 4;")

        def version() -> int:
            with sqlite3.connect(str(db)) as c:
                return c.execute("PRAGMA user_version").fetchone()[0]

        # An older gateway running on it holds the append log's lock (flock).
        import fcntl
        log = open(str(db) + ".appendlog", "a")
        try:
            fcntl.flock(log, fcntl.LOCK_EX | fcntl.LOCK_NB)
            r = run_warden(["sessions", "list", "--config", str(w.config)])
            assert r.returncode != 0, r.stdout
            assert "stop that gateway" in r.stderr, r.stderr
            assert version() == 4, "nothing changed while the log was held"
        finally:
            log.close()

        after = answers()
        assert version() == 5
        assert after == before
        with sqlite3.connect(str(db)) as c:
            names = {n for (n,) in c.execute(
                "select name from sqlite_master where type = 'index' and sql is not null")}
            postings = c.execute("select count(*) from record_postings").fetchone()[0]
        assert not names & {"records_principal", "records_connection", "records_kind",
                            "records_session_id"}, names
        assert postings > 0
        code, out = w.verify()
        assert code == 0, out
    finally:
        print(f"\n--- warden log tail ({w.log}) ---\n" + w.log.read_text()[-3000:])
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- crash safety


@pytest.mark.parametrize("durability", ["process", "fsync"])
def test_reads_writes_and_mixed_batches_each_get_their_records(pg, durability):
    """Under `fsync` a batch of pure reads is forwarded once its records are written, the
    sync overlapping the query; anything else waits for the sync first. Through psycopg
    (extended protocol, pipelines) and psql (several statements in one query string):
    every statement answers correctly and has its request and response records, in a
    chain that verifies."""
    tmp = Path(tempfile.mkdtemp(prefix=f"warden-e2e-reads-{durability}-"))
    w = make_warden(pg, tmp, f'durability = "{durability}"\n')
    run_id = uuid.uuid4().hex[:8]
    try:
        with w.connect("dana", autocommit=True) as conn:
            texts = []
            q = f"select %s::int as v /* {run_id} pure */"
            assert conn.execute(q, (7,)).fetchone()[0] == 7
            texts.append(q.replace("%s", "$1"))
            q = f"select upper(%s) /* {run_id} function */"
            assert conn.execute(q, ("x",)).fetchone()[0] == "X"
            texts.append(q.replace("%s", "$1"))
            conn.execute(f"create temp table t_{run_id}(a int)")
            texts.append(f"create temp table t_{run_id}(a int)")
            with conn.pipeline():
                # One batch: a write and reads behind it.
                conn.execute(f"insert into t_{run_id} values (1), (2)")
                c1 = conn.execute(f"select count(*) from t_{run_id}")
                c2 = conn.execute(f"select a from t_{run_id} order by a /* {run_id} */")
            assert c1.fetchone()[0] == 2 and [r[0] for r in c2.fetchall()] == [1, 2]
            texts += [f"insert into t_{run_id} values (1), (2)", f"select count(*) from t_{run_id}",
                      f"select a from t_{run_id} order by a /* {run_id} */"]
            with conn.pipeline():
                # One batch of pure reads only.
                r1 = conn.execute(f"select 1 /* {run_id} a */")
                r2 = conn.execute(f"select 2 /* {run_id} b */")
            assert r1.fetchone()[0] == 1 and r2.fetchone()[0] == 2
            texts += [f"select 1 /* {run_id} a */", f"select 2 /* {run_id} b */"]
        r = w.psql(f"select 'x{run_id}'; select 'y{run_id}'", w.keys["dana"].secret, user="user:dana")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [f"x{run_id}", f"y{run_id}"], r.stdout
        texts += [f"select 'x{run_id}'", f"select 'y{run_id}'"]

        assert_answered_and_verified(w, texts)
    finally:
        stop_process(w.proc)
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_read_forwarded_before_its_sync_returns_nothing_when_the_sync_fails(pg):
    """Under `fsync` a pure read is forwarded before its records are synced; its results
    must wait for the sync — also when another session is running it — and a failed sync
    must withhold them. The debug build's hook (`<log>.fail-sync` exists: every sync takes
    800 ms, then fails) lets session B start a failing sync while the reads of sessions A
    come back from the database: each A must get the 58000 error and not one row."""
    tmp = Path(tempfile.mkdtemp(prefix="warden-e2e-withheld-"))
    w = make_warden(pg, tmp, 'durability = "fsync"\n')
    marker = f"leak-{uuid.uuid4().hex[:8]}"
    flag = tmp / "data" / "evidence.db.appendlog.fail-sync"
    try:
        readers = [raw_login(w, w.keys["reporter"].secret) for _ in range(4)]
        b = w.connect("dana", autocommit=True)
        b_error: list[str] = []

        def b_statement():
            try:
                b.execute("select now()")  # a function call: not a pure read, waits for the sync
                b_error.append("answered")
            except Exception as e:  # noqa: BLE001
                b_error.append(str(e))

        flag.touch()
        tb = threading.Thread(target=b_statement)
        tb.start()
        time.sleep(0.2)  # B's sync (800 ms) is running now
        q = pg_msg(b"Q", f"select '{marker}'\0".encode())
        for a in readers:
            a.sendall(q)
        # The sync blocks only those waiting for it: a new connection is answered (asked
        # for its password) while B's sync is still running, not after it.
        with socket.create_connection(("127.0.0.1", w.port), timeout=10) as probe:
            probe.sendall(pg_startup("agent:reporter"))
            assert probe.recv(1) == b"R"
            assert tb.is_alive(), "the new connection was answered only after the sync"
        answers = []
        for a in readers:
            a.settimeout(10)
            data = b""
            while True:
                try:
                    chunk = a.recv(65536)
                except OSError:
                    break
                if not chunk:
                    break
                data += chunk
            a.close()
            answers.append(data)
        tb.join(timeout=10)
        assert b_error and "injected by a test" in b_error[0], (
            f"session B was not refused by the fail-sync hook (a debug build is needed): {b_error}")
        for data in answers:
            assert marker.encode() not in data, f"a row of the read reached the client: {data!r}"
            assert data[:1] == b"E" and b"58000" in data and b"withheld" in data, data
        b.close()
    finally:
        flag.unlink(missing_ok=True)
        stop_process(w.proc)
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_lagging_index_holds_statements_back_until_it_catches_up(pg):
    """Under `process` durability too, the relay awaits the ledger before forwarding: while
    the evidence index is more than half its backlog (`[evidence] index_backlog`) behind,
    a statement is held (at most the store's 5 s busy timeout) instead of running on to
    the hard limit, where new evidence is refused and the session ends. The debug build's
    hook (`<database>.stall-index` exists: the indexer takes no batch) makes the index lag.
    With a backlog of 8, statements (two records each) reach the soft limit (4) within a
    few statements and would reach the hard limit within six."""
    tmp = Path(tempfile.mkdtemp(prefix="warden-e2e-pacing-"))
    w = make_warden(pg, tmp, extra="\n[evidence]\nindex_backlog = 8\n")
    flag = tmp / "data" / "evidence.db.stall-index"
    run_id = uuid.uuid4().hex[:8]
    try:
        conn = w.connect("reporter", autocommit=True)
        assert conn.execute("select 1").fetchone()[0] == 1
        flag.touch()

        def statement(i: int) -> None:
            assert conn.execute(f"select {i} /* {run_id} */").fetchone()[0] == i

        held_at, steps = run_until_held(statement, 6)
        # Held before it was forwarded: the session's backend shows the statement before
        # it as its last one, and PostgreSQL has not seen the held one.
        seen = pg.admin_psql("select query from pg_stat_activity where pid <> pg_backend_pid()")
        assert f"select {held_at} /* {run_id} */" not in seen, seen
        prev = f"select {held_at - 1} /* {run_id} */" if held_at else "select 1"
        assert prev in seen, seen
        flag.unlink()  # the index catches up; the held statement goes on
        steps.join(6)
        conn.close()
        assert_answered_and_verified(w, [f"select {i} /* {run_id} */" for i in range(6)])
    finally:
        flag.unlink(missing_ok=True)
        stop_process(w.proc)
        shutil.rmtree(tmp, ignore_errors=True)


def thread_nices(pid: int) -> dict[str, set[int]]:
    """Thread name -> the nice values of the threads of that name (`/proc/PID/task`)."""
    out: dict[str, set[int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        # Field 19, counted after the command, which is in parentheses and may hold spaces.
        out.setdefault(name, set()).add(int(stat[stat.rindex(")") + 2:].split()[16]))
    return out


def test_indexer_nice_lowers_only_the_indexer_and_everything_is_still_recorded(pg):
    """`[evidence] indexer_nice = 19`: the evidence indexer thread runs at nice 19 (so
    statements preempt it on a shared core), every other thread at the gateway's own
    priority, and what it indexes is complete and verifies."""
    tmp = Path(tempfile.mkdtemp(prefix="warden-e2e-nice-"))
    w = make_warden(pg, tmp, extra="\n[evidence]\nindexer_nice = 19\n")
    run_id = uuid.uuid4().hex[:8]
    try:
        conn = w.connect("reporter", autocommit=True)
        for i in range(3):
            assert conn.execute(f"select {i} /* {run_id} */").fetchone()[0] == i
        conn.close()
        nices = thread_nices(w.proc.pid)
        assert nices.get("warden-indexer") == {19}, nices
        others = {n for name, v in nices.items() if name != "warden-indexer" for n in v}
        assert others == {0}, nices
        assert_answered_and_verified(w, [f"select {i} /* {run_id} */" for i in range(3)])
    finally:
        stop_process(w.proc)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("durability", ["process", "fsync"])
def test_sigkill_keeps_every_answered_statement(pg, durability):
    tmp = Path(tempfile.mkdtemp(prefix=f"warden-e2e-crash-{durability}-"))
    w = make_warden(pg, tmp, f'durability = "{durability}"\ncheckpoint_interval = "1s"\n')
    run_id = uuid.uuid4().hex[:8]
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[str] = []

    def client(n: int):
        import psycopg
        try:
            conn = w.connect("reporter", autocommit=True)
        except Exception as e:  # noqa: BLE001
            errors.append(f"connect {n}: {e}")
            return
        i = 0
        try:
            while not stop.is_set() and i < 100000:
                tag = f"crash-{run_id}-{n}-{i}"
                if i % 5 == 4:
                    conn.execute(f"insert into big values ({n}, '{tag}')")
                else:
                    row = conn.execute(f"select '{tag}'").fetchone()
                    assert row[0] == tag
                with lock:
                    answered.append(tag)
                i += 1
        except (psycopg.Error, OSError):
            pass  # the gateway was killed under us
        finally:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(6)]
    try:
        for t in threads:
            t.start()
        wait_for(lambda: len(answered) >= 300, timeout=60, interval=0.05, what="300 answered statements")
        w.proc.send_signal(signal.SIGKILL)
        w.proc.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert not errors, errors
        with lock:
            got = list(answered)
        assert len(got) >= 300

        # What the killed gateway left in its append log: under fsync the lines, then zeros
        # up to a 256 KiB boundary (zero-filled ahead so that a sync has no metadata to
        # write); under process the lines only. (Empty only if killed just after the log
        # was emptied once indexed.)
        data = (tmp / "data" / "evidence.db.appendlog").read_bytes()
        end = data.find(b"\0")
        if durability == "fsync" and data:
            assert len(data) % (256 * 1024) == 0, len(data)
            assert end > 0 and data[end - 1] == ord("\n"), data[max(0, end - 80):end + 8]
            assert data[end:] == bytes(len(data) - end), "only zeros after the lines"
        if durability == "process":
            assert end == -1, "no zeros in a process-durability log"

        # Restart on the same store: recovery, then the chain and checkpoints verify.
        w.proc, w.log = start_warden(w.config, w.port, tmp, name="warden-restarted")
        code, out = w.verify()
        assert code == 0, out
        texts = "\n".join((r.get("action") or {}).get("text") or ""
                          for r in w.audit(kind="action.request"))
        missing = [t for t in got if f"'{t}'" not in texts]
        assert not missing, f"{len(missing)} answered statement(s) without evidence, e.g. {missing[:5]}"

        # The gateway still works after the crash and a clean stop signs the final checkpoint.
        with w.connect("reporter", autocommit=True) as conn:
            assert conn.execute("select 42").fetchone()[0] == 42
        stop_process(w.proc)
        assert w.proc.returncode == 0, w.log.read_text()[-2000:]
        assert checkpoints(w)[-1][0] == head_seq(w), "shutdown checkpoint covers the head"
        code, out = w.verify()
        assert code == 0 and "0 record(s) after it not yet checkpointed" in out, out
    finally:
        stop.set()
        if w.proc.poll() is None:
            stop_process(w.proc)
        shutil.rmtree(tmp, ignore_errors=True)


def test_shutdown_ends_open_sessions_with_57p01_and_records_them(pg):
    """SIGTERM with two PostgreSQL sessions open, one idle and one inside a 30 s statement:
    both clients get FATAL 57P01 at once (as from PostgreSQL's own fast shutdown), the
    running statement is cancelled upstream and recorded `interrupted`, both sessions get
    their `session.end`, and the final signed checkpoint covers every record."""
    import psycopg
    tmp = Path(tempfile.mkdtemp(prefix="warden-e2e-shutdown-"))
    w = make_warden(pg, tmp)
    tag = uuid.uuid4().hex[:8]
    idle = busy = None
    try:
        idle = w.connect("reporter", autocommit=True)
        assert idle.execute(f"select 'idle-{tag}'").fetchone()[0] == f"idle-{tag}"
        busy = w.connect("reporter", autocommit=True)
        outcome: dict = {}

        def sleeper():
            try:
                busy.execute(f"select pg_sleep(30) /* {tag} */")
                outcome["finished"] = True
            except psycopg.Error as e:
                outcome["error"] = e

        t = threading.Thread(target=sleeper, daemon=True)
        t.start()
        wait_for(lambda: tag in pg.admin_psql(
            "select query from pg_stat_activity where state = 'active'"),
            timeout=20, what="the sleep running upstream")
        w.proc.send_signal(signal.SIGTERM)
        w.proc.wait(timeout=15)
        t.join(timeout=15)
        assert w.proc.returncode == 0, w.log.read_text()[-2000:]
        # Still running (joined before its 30 s were up) or finished would both fail here.
        assert not t.is_alive(), "the statement outlived the gateway's stop"
        err = outcome.get("error")
        assert err is not None, outcome
        assert err.sqlstate == "57P01", (err.sqlstate, str(err))
        assert "shutting down" in str(err), str(err)
        # The idle client learns it on its next use (the FATAL is already in its socket).
        with pytest.raises(psycopg.OperationalError) as idle_err:
            idle.execute("select 1")
        assert "shutting down" in str(idle_err.value) or idle_err.value.sqlstate == "57P01", \
            str(idle_err.value)
        # Cancelled upstream, not left running there.
        wait_for(lambda: tag not in pg.admin_psql(
            "select query from pg_stat_activity where state = 'active'"),
            timeout=10, what="the sleep gone from PostgreSQL")

        reqs = [r for r in w.audit(kind="action.request")
                if tag in ((r.get("action") or {}).get("text") or "")]
        assert len(reqs) == 2, reqs
        sleep_req = next(r for r in reqs if "pg_sleep" in r["action"]["text"])
        resps = [r for r in w.audit(kind="action.response")
                 if r.get("request_id") == sleep_req["id"]]
        assert [r["response"]["status"] for r in resps] == ["interrupted"], resps
        ends = [r for r in w.audit(kind="session.end")
                if r.get("session_id") in {q["session_id"] for q in reqs}]
        assert len(ends) == 2, ends
        assert all("gateway shutting down" in (e.get("detail") or "") for e in ends), ends
        assert checkpoints(w)[-1][0] == head_seq(w), "shutdown checkpoint covers the head"
    finally:
        for c in (idle, busy):
            if c is not None:
                try:
                    c.close()
                except Exception:  # noqa: BLE001
                    pass
        if w.proc.poll() is None:
            stop_process(w.proc)
        shutil.rmtree(tmp, ignore_errors=True)
