"""tokio-postgres client through Warden, via the `pg_probe` example binary.

Interface: `pg_probe "<libpq-style conn string>" <scenario>` prints one JSON object.
"""
import json
import os
import subprocess

import pytest

from conftest import PG_PROBE_BIN


def probe(warden, scenario: str) -> dict:
    assert PG_PROBE_BIN.exists(), (
        f"{PG_PROBE_BIN} is missing: build it with `cargo build --example pg_probe` "
        "(the tokio-postgres probe is part of the suite; nothing is skipped)")
    k = warden.keys["reporter"]
    conn = (f"host=127.0.0.1 port={warden.port} dbname=orders user={k.principal} "
            f"password={k.secret} sslmode=disable")
    env = dict(os.environ)
    env.pop("PGOPTIONS", None)
    r = subprocess.run([str(PG_PROBE_BIN), conn, scenario], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 0, f"pg_probe {scenario} failed ({r.returncode}): {r.stdout}\n{r.stderr}"
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, r.stdout
    return json.loads(lines[0])


def test_probe_simple(warden):
    out = probe(warden, "simple")
    assert out["ok"] is True and out["rows"] == [["1"]], out


def test_probe_extended(warden):
    out = probe(warden, "extended")
    assert out["ok"] is True and out["value"] == 42, out


def test_probe_cancel(warden):
    out = probe(warden, "cancel")
    assert out["ok"] is True and out["cancelled"] is True and out["sqlstate"] == "57014", out


def test_probe_copy_out(warden):
    # COPY is its own kind; agents have no rule for it, so the probe uses the dba key.
    k = warden.keys["dana"]
    conn = (f"host=127.0.0.1 port={warden.port} dbname=orders user={k.principal} "
            f"password={k.secret} sslmode=disable")
    assert PG_PROBE_BIN.exists(), f"{PG_PROBE_BIN} is missing"
    r = subprocess.run([str(PG_PROBE_BIN), conn, "copy_out"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["ok"] is True and out["lines"] == 1000 and out["bytes"] > 0, out
