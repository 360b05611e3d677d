"""Retention: `warden audit prune` seals old records into a signed bundle (verified before
anything is removed), deletes them, and `warden audit verify` still passes on what
remains; the sealed bundle verifies with `warden evidence verify` and the independent
`tools/verify_bundle.py`; a record deleted without a seal is still caught. `serve` with
`[gateway] retention` does the same on its own.

Runs its own Warden (own data dir) in front of the shared ``pg`` cluster.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
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

VERIFY_PY = REPO / "tools" / "verify_bundle.py"


def set_gateway(cfg: Path, extra: str) -> None:
    text = cfg.read_text()
    text = re.sub(r'\[gateway\]\ndata_dir = "./data"\n(?:[^\[\n][^\n]*\n)*',
                  '[gateway]\ndata_dir = "./data"\n' + extra, text, count=1)
    cfg.write_text(text)


def db(w: Warden) -> sqlite3.Connection:
    return sqlite3.connect(str(w.tmp / "data" / "evidence.db"))


def seq_range(w: Warden) -> tuple[int, int]:
    with db(w) as c:
        return c.execute("select min(seq), max(seq) from records").fetchone()


def py_verify(bundle: Path, pub: Path) -> tuple[int, str]:
    r = subprocess.run([sys.executable, str(VERIFY_PY), str(bundle), "--public-key", str(pub)],
                       capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


def warden_verify_bundle(bundle: Path, pub: Path) -> tuple[int, str]:
    r = run_warden(["evidence", "verify", str(bundle), "--public-key", str(pub)])
    return r.returncode, r.stdout + r.stderr


def statements(w: Warden, tag: str, n: int) -> None:
    with w.connect("reporter", autocommit=True) as conn:
        for i in range(n):
            conn.execute(f"select id from items where id <= 2 /* {tag}-{i} */").fetchall()
    wait_for(lambda: any(f"{tag}-{n - 1}" in ((r.get("action") or {}).get("text") or "")
                         for r in w.audit(kind="action.request")),
             what=f"{tag} recorded")


@pytest.fixture(scope="module")
def rw(pg):
    tmp = Path(tempfile.mkdtemp(prefix="warden-e2e-retention-"))
    port = free_port()
    cfg = write_config(tmp, pg.port, port, free_port())
    set_gateway(cfg, 'checkpoint_interval = "1s"\nretention = "365d"\n')
    r = run_warden(["config", "check", "--config", str(cfg)])
    assert r.returncode == 0, r.stdout + r.stderr
    w = Warden(config=cfg, port=port, proc=None, log=tmp / "warden.log", tmp=tmp)  # type: ignore[arg-type]
    w.keys["reporter"] = w.create_key("agent:reporter", ["agents"])
    w.proc, w.log = start_warden(cfg, port, tmp)
    try:
        yield w
    finally:
        stop_process(w.proc)
        print(f"\n--- warden log tail ({w.log}) ---\n" + w.log.read_text()[-3000:])
        shutil.rmtree(tmp, ignore_errors=True)


def test_bad_retention_is_a_config_error(tmp_path):
    cfg = write_config(tmp_path, 1, free_port(), free_port())
    set_gateway(cfg, 'retention = "forever"\n')
    r = run_warden(["config", "check", "--config", str(cfg)])
    assert r.returncode != 0 and "gateway.retention" in (r.stdout + r.stderr), r.stdout + r.stderr


def test_prune_seals_then_verify_passes(rw, tmp_path):
    pub = rw.tmp / "data" / "signing.pub"
    tag = uuid.uuid4().hex[:8]
    statements(rw, f"{tag}-old", 6)
    time.sleep(1.1)
    cutoff = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    time.sleep(0.2)
    statements(rw, f"{tag}-new", 4)
    lo, hi = seq_range(rw)
    assert lo == 1

    # While the gateway runs it owns the chain: the CLI refuses (the gateway applies
    # `[gateway] retention` itself) and changes nothing.
    bundle = tmp_path / "sealed.json"
    r = run_warden(["audit", "prune", "--config", str(rw.config), "--before", cutoff,
                    "--out", str(bundle)])
    assert r.returncode != 0 and "running gateway" in r.stderr, r.stdout + r.stderr
    assert not bundle.exists()
    assert seq_range(rw)[0] == 1
    stop_process(rw.proc)

    # Nothing is 90 days old.
    r = run_warden(["audit", "prune", "--config", str(rw.config), "--before", "90d",
                    "--out", str(tmp_path / "none.json")])
    assert r.returncode == 0 and "nothing to prune" in r.stdout, r.stdout + r.stderr
    assert not (tmp_path / "none.json").exists()

    r = run_warden(["audit", "prune", "--config", str(rw.config), "--before", cutoff,
                    "--out", str(bundle)])
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"sealed records 1\.\.(\d+) \((\d+) record", r.stdout)
    assert m, r.stdout
    up_to = int(m.group(1))
    assert int(m.group(2)) == up_to

    # The store: records after the seal, the first linked to the seal's last hash.
    with db(rw) as c:
        seal = c.execute("select up_to_seq, last_hash, bundle_sha256, record_seq from seals").fetchall()
        assert len(seal) == 1 and seal[0][0] == up_to
        first = c.execute("select seq, prev_hash from records order by seq limit 1").fetchone()
        old_left = c.execute("select count(*) from records where body like ?",
                             (f"%{tag}-old%",)).fetchone()[0]
        new_left = c.execute("select count(*) from records where body like ?",
                             (f"%{tag}-new%",)).fetchone()[0]
    assert first == (up_to + 1, seal[0][1])
    assert old_left == 0, "every old statement was sealed"
    assert new_left >= 4, "newer statements stay"
    assert seal[0][2] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    sealed_recs = rw.audit(kind="retention.sealed")
    assert len(sealed_recs) == 1 and sealed_recs[0]["seq"] == seal[0][3]
    assert f"records 1..{up_to}" in sealed_recs[0]["detail"]
    assert seal[0][2] in sealed_recs[0]["detail"]

    code, out = rw.verify()
    assert code == 0, out
    assert f"records 1..{up_to} sealed" in out, out

    # The bundle: the sealed records, contiguous, verified by both verifiers alike.
    b = json.loads(bundle.read_text())
    seqs = [x["seq"] for x in b["records"]]
    assert seqs == list(range(1, up_to + 1))
    assert any(f"{tag}-old-0" in ((x.get("action") or {}).get("text") or "") for x in b["records"])
    code, text = warden_verify_bundle(bundle, pub)
    assert code == 0 and "contiguous" in text, text
    pcode, ptext = py_verify(bundle, pub)
    assert pcode == 0 and ptext.startswith("OK:"), ptext
    assert re.search(r"OK: (\d+) record", text).group(1) == re.search(r"OK: (\d+) record", ptext).group(1) == str(up_to)

    # The gateway goes on recording, checkpointing and exporting after the prune.
    rw.proc, rw.log = start_warden(rw.config, rw.port, rw.tmp)
    statements(rw, f"{tag}-later", 3)
    _, head = seq_range(rw)
    wait_for(lambda: db(rw).execute("select max(tree_size) from checkpoints").fetchone()[0] >= head,
             timeout=15, what="a checkpoint after the prune")
    code, out = rw.verify()
    assert code == 0, out
    rest = tmp_path / "rest.json"
    run_warden(["evidence", "export", "--config", str(rw.config), "--out", str(rest)], check=True)
    code, text = warden_verify_bundle(rest, pub)
    assert code == 0 and "contiguous" in text, text
    assert py_verify(rest, pub)[0] == 0
    assert json.loads(rest.read_text())["records"][0]["seq"] == up_to + 1


def test_serve_retention_seals_on_its_own_and_deletion_without_seal_fails(rw, tmp_path):
    pub = rw.tmp / "data" / "signing.pub"
    statements(rw, uuid.uuid4().hex[:8], 3)
    stop_process(rw.proc)
    lo, hi = seq_range(rw)
    # Restart with a retention of 1 s: the job runs at start and seals everything older.
    time.sleep(1.2)
    set_gateway(rw.config, 'checkpoint_interval = "1s"\nretention = "1s"\n')
    rw.proc, rw.log = start_warden(rw.config, rw.port, rw.tmp, name="warden-retention")
    sealed_dir = rw.tmp / "data" / "sealed"
    files = wait_for(lambda: sorted(sealed_dir.glob("sealed-*.json")), timeout=20,
                     what="a bundle sealed by serve")
    m = re.fullmatch(r"sealed-(\d+)-(\d+)\.json", files[0].name)
    assert m and int(m.group(1)) == lo and int(m.group(2)) >= hi, files
    assert warden_verify_bundle(files[0], pub)[0] == 0
    assert py_verify(files[0], pub)[0] == 0
    code, out = rw.verify()
    assert code == 0, out
    assert "2 seal(s)" in out, out

    # A record removed WITHOUT a seal is still named (here: the first remaining one, which
    # is the retention.sealed record of the serve prune).
    statements(rw, uuid.uuid4().hex[:8], 2)
    stop_process(rw.proc)
    first, _ = seq_range(rw)
    with db(rw) as c:
        c.execute("delete from records where seq = ?", (first,))
    code, out = rw.verify()
    assert code == 1, out
    assert f"FAILED at seq {first} (missing)" in out, out
    # And a forged seal signature is caught.
    with db(rw) as c:
        c.execute("update seals set signature = ? where up_to_seq = (select max(up_to_seq) from seals)",
                  ("ab" * 64,))
    code, out = rw.verify()
    assert code == 1 and "forged_seal" in out, out
