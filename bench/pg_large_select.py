#!/usr/bin/env python3
"""End-to-end cost of Warden on a large SELECT: direct vs Warden (evidence on, masking off)
vs Warden (evidence on, masking on), interleaved in one run.

    cargo build --release -p warden
    python3 bench/pg_large_select.py [--rows 1000000] [--rounds 3]

Starts its own PostgreSQL (initdb on a temp dir, free port; via runuser when root) and two
Warden instances; reads the result with psql (text protocol) into /dev/null and reports
rows/s, MB/s, the ratios, and each Warden's peak RSS (VmHWM). Loopback only.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WARDEN = Path(os.environ.get("WARDEN_BIN", REPO / "target" / "release" / "warden"))
IS_ROOT = os.geteuid() == 0
PW = "bench-pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_pg(cmd):
    return (["runuser", "-u", "postgres", "--"] + cmd) if IS_ROOT else cmd


def wait_port(port, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing on port {port}")


def hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if not WARDEN.exists():
        raise SystemExit(f"{WARDEN} missing: cargo build --release -p warden")
    bindir = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name))[-1])
    tmp = Path(tempfile.mkdtemp(prefix="warden-bench-"))
    procs = []
    try:
        (tmp / "pw").write_text(PW + "\n")
        if IS_ROOT:
            shutil.chown(tmp, "postgres", "postgres")
            shutil.chown(tmp / "pw", "postgres", "postgres")
        subprocess.run(as_pg([str(bindir / "initdb"), "-D", str(tmp / "pg"), "-U", "postgres",
                              "--auth=scram-sha-256", f"--pwfile={tmp / 'pw'}", "--no-sync"]),
                       check=True, capture_output=True)
        pg_port = free_port()
        log = tmp / "pg.log"
        log.touch()
        if IS_ROOT:
            shutil.chown(log, "postgres", "postgres")
        subprocess.run(as_pg([str(bindir / "pg_ctl"), "-D", str(tmp / "pg"), "-l", str(log), "-w", "-o",
                              f"-c listen_addresses=127.0.0.1 -p {pg_port} -k {tmp} -c fsync=off", "start"]),
                       check=True, capture_output=True)
        env = dict(os.environ, PGPASSWORD=PW)
        env.pop("PGOPTIONS", None)
        sql = (f"select g as id, 'customer ' || g as name, 'user' || g || '@example.com' as email, "
               f"md5(g::text) as note from generate_series(1, {a.rows}) g")
        wardens = {}
        for name, masking in (("warden", ""), ("warden+masking", """
[[masking]]
connections = ["db"]
detectors = ["credit_card", "email", "us_ssn", "iban", "phone", "secret"]
operator = "partial"
""")):
            d = tmp / name
            d.mkdir()
            port = free_port()
            (d / "w.toml").write_text(f"""
[gateway]
data_dir = "./data"
[listeners]
postgres = "127.0.0.1:{port}"
admin = "off"
[[connections]]
name = "db"
protocol = "postgres"
upstream = "127.0.0.1:{pg_port}"
database = "postgres"
user = "postgres"
password = "{PW}"
[[rules]]
id = "bench"
principals = ["group:bench"]
connections = ["db"]
sql = ["select"]
effect = "allow"
{masking}""")
            key = subprocess.run([str(WARDEN), "keys", "create", "--config", str(d / "w.toml"),
                                  "--principal", "agent:bench", "--group", "bench"],
                                 check=True, capture_output=True, text=True).stdout.strip()
            p = subprocess.Popen([str(WARDEN), "serve", "--config", str(d / "w.toml")], cwd=d,
                                 stdout=subprocess.DEVNULL, stderr=open(d / "log", "wb"))
            procs.append(p)
            wait_port(port)
            wardens[name] = (port, key, p)

        targets = [("direct", f"host=127.0.0.1 port={pg_port} dbname=postgres user=postgres", PW, None)]
        for name, (port, key, p) in wardens.items():
            targets.append((name, f"host=127.0.0.1 port={port} dbname=db user=agent:bench", key, p))
        results = {t[0]: [] for t in targets}
        nbytes = {}
        for _ in range(a.rounds):
            for name, conn, pw, _p in targets:  # interleaved
                e = dict(env, PGPASSWORD=pw)
                t0 = time.perf_counter()
                r = subprocess.run(["psql", conn, "-X", "-At", "-c", sql], env=e, capture_output=True)
                dt = time.perf_counter() - t0
                if r.returncode != 0:
                    raise SystemExit(f"{name}: {r.stderr.decode()}")
                nbytes[name] = len(r.stdout)
                results[name].append(dt)
        best = {k: min(v) for k, v in results.items()}
        print(f"rows={a.rows} rounds={a.rounds} (best of rounds, psql text protocol to memory)")
        print(f"{'target':<16} {'seconds':>8} {'rows/s':>12} {'MB/s':>8} {'vs direct':>10} {'peak RSS':>10}")
        for name, conn, pw, p in targets:
            rss = f"{hwm_kb(p.pid) / 1024:.1f} MiB" if p else "-"
            print(f"{name:<16} {best[name]:>8.2f} {a.rows / best[name]:>12,.0f} "
                  f"{nbytes[name] / best[name] / 1e6:>8.1f} {best['direct'] / best[name]:>9.2f}x {rss:>10}")
        if "warden" in best and "warden+masking" in best:
            print(f"masking cost vs warden without masking: "
                  f"{(best['warden+masking'] / best['warden'] - 1) * 100:.1f}% more time")
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        subprocess.run(as_pg([str(bindir / "pg_ctl"), "-D", str(tmp / "pg"), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
