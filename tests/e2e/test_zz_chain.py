"""13. The hash chain: intact after the whole session; tampering is detected.

The file name sorts last so this runs after every other test of the session.
"""
import re
import shutil
import sqlite3


def test_chain_intact_then_tampering_detected(warden, tmp_path):
    code, out = warden.verify()
    assert code == 0, out
    assert "OK" in out, out
    m = re.search(r"OK: (\d+) record", out)
    assert m and int(m.group(1)) > 50, out

    # copy the store and tamper with one action.request body
    src = warden.tmp / "data" / "evidence.db"
    assert src.exists(), list((warden.tmp / "data").iterdir())
    dst_dir = tmp_path / "copy"
    (dst_dir / "data").mkdir(parents=True)
    # a consistent copy even while the gateway runs (WAL mode)
    with sqlite3.connect(str(src)) as s, sqlite3.connect(str(dst_dir / "data" / "evidence.db")) as d:
        s.backup(d)
    cfg = dst_dir / "warden.toml"
    shutil.copy(warden.config, cfg)

    code, out = warden.verify(cfg)
    assert code == 0, f"the untouched copy verifies: {out}"

    with sqlite3.connect(str(dst_dir / "data" / "evidence.db")) as d:
        seq = d.execute("select min(seq) from records where kind='action.request' "
                        "and body like '%items%'").fetchone()[0]
        assert seq is not None
        d.execute("update records set body = replace(body, 'items', 'itemz') where seq = ?", (seq,))
        assert d.total_changes == 1
    code, out = warden.verify(cfg)
    assert code == 1, out
    assert re.search(rf"\bseq {seq}\b", out), f"verify must name seq {seq}: {out}"
