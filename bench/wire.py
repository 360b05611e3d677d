#!/usr/bin/env python3
"""What a proxy costs the processes on either side of it: system calls and TCP segments.

    bench/wire.py target/release/warden
    bench/wire.py --rounds 3 --seconds 5 target/release/warden

Starts PostgreSQL and pgbouncer like bench/harness.py and one Warden from BINARY on a fresh
store, then per round, behind pgbouncer and behind Warden in turn: `pgbench -S -n -M
extended -c 8 -j 2` under `strace -c -f`, with `strace -c -f` attached to the postmaster
and every backend, and `nstat` around the run. Prints, per transaction, the system calls
of PostgreSQL's backends and of pgbench, and the TCP segments sent and received on the
machine (only this traffic runs). A proxy that split or delayed messages would show here
as more segments, or more receives and wake-ups on the database's or the client's side.

strace slows every traced process several times: the counts per transaction are what to
read, not the transactions per second. Needs strace and nstat (Debian: strace, iproute2).
"""
from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ab  # noqa: E402
import harness as h  # noqa: E402

TCP_COUNTERS = ("TcpOutSegs", "TcpInSegs", "TcpRetransSegs", "TcpExtDelayedACKs")


def nstat() -> dict[str, int]:
    out = h.run(["nstat", "-az"], timeout=30, what="nstat").stdout
    counters = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            counters[parts[0]] = int(parts[1])
    return counters


def strace_counts(path: Path) -> dict[str, int]:
    """System call -> calls, from an `strace -c` summary."""
    calls = {}
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        # % time, seconds, usecs/call, calls, [errors,] syscall
        if len(parts) >= 5 and re.fullmatch(r"[0-9.]+", parts[0]) and parts[-1] != "total":
            try:
                calls[parts[-1]] = int(parts[3])
            except ValueError:
                continue
    return calls


def per_tx(calls: dict[str, int], tx: int, top: int = 6) -> str:
    ranked = sorted(calls.items(), key=lambda kv: -kv[1])[:top]
    return ", ".join(f"{name} {n / tx:.2f}" for name, n in ranked) or "(none)"


def measure(e: h.Env, port: int, user: str, password: str, seconds: int, tag: str) -> dict:
    postmaster = int((e.tmp / "pg" / "data" / "postmaster.pid").read_text().split()[0])
    backends = h.run(["pgrep", "-P", str(postmaster)], timeout=30, check=False,
                     what="pgrep").stdout.split()
    pg_out, client_out = e.tmp / f"pg-{tag}.strace", e.tmp / f"pgbench-{tag}.strace"
    attach = [a for pid in [str(postmaster), *backends] for a in ("-p", pid)]
    tracer = subprocess.Popen(["strace", "-c", "-f", "-o", str(pg_out), *attach],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    h.PROCS.add(f"strace {tag}", lambda: h.stop_popen(tracer, timeout=60))
    time.sleep(1)  # strace attaches to each process in turn
    before = nstat()
    r = h.run(["strace", "-c", "-f", "-o", str(client_out), "pgbench", "-S", "-n", "-M",
               "extended", "-c", "8", "-j", "2", "-T", str(seconds), "-h", "127.0.0.1", "-p",
               str(port), "-U", user, "bench"], env=h.pg_env(password), timeout=seconds * 10 + 120,
              what="pgbench under strace")
    after = nstat()
    tracer.send_signal(signal.SIGINT)
    tracer.wait(timeout=60)
    done = re.search(r"number of transactions actually processed: (\d+)", r.stdout)
    if not done or int(done.group(1)) == 0:
        raise h.BenchError(f"cannot read pgbench's transactions:\n{r.stdout}\n{r.stderr}")
    tx = int(done.group(1))
    return {"tx": tx, "pg": strace_counts(pg_out), "client": strace_counts(client_out),
            "tcp": {k: (after.get(k, 0) - before.get(k, 0)) / tx for k in TCP_COUNTERS}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary", help="the warden binary")
    ap.add_argument("--rounds", type=int, default=2, help="rounds (default 2)")
    ap.add_argument("--seconds", type=int, default=5, help="seconds per pgbench run (default 5)")
    args = ap.parse_args()
    if args.rounds < 1 or args.seconds < 1:
        raise h.BenchError("--rounds and --seconds must be at least 1")
    binary = Path(args.binary).resolve()
    for tool in ("psql", "pgbench", "pgbouncer", "strace", "nstat", "pgrep"):
        h.require(tool)
    e = ab.scratch_env("warden-wire-")
    h.start_postgres(e)
    h.start_pgbouncer(e)
    g = ab.Gateway(e, "wire", binary, {}, [])
    g.start()
    g.pgbench(8, seconds=2)  # warm-up; Warden's upstream sessions exist from here on
    targets = [("pgbouncer", e.bouncer_port, "postgres", h.PG_PW),
               ("warden", g.w.pg_port, "agent:bench", g.w.key)]
    print(f"\npgbench -S -M extended -c 8, {args.seconds} s per run under strace; per transaction\n")
    for rnd in range(1, args.rounds + 1):
        for name, port, user, password in targets:
            h.log(f"round {rnd}: {name}")
            m = measure(e, port, user, password, args.seconds, f"{name}-{rnd}")
            tcp = ", ".join(f"{k} {v:.2f}" for k, v in m["tcp"].items())
            print(f"round {rnd} behind {name} ({m['tx']} transactions)\n"
                  f"  PostgreSQL backends: {per_tx(m['pg'], m['tx'])}\n"
                  f"  pgbench:             {per_tx(m['client'], m['tx'])}\n"
                  f"  TCP (machine):       {tcp}", flush=True)
    g.stop()
    return 0


if __name__ == "__main__":
    h.run_main(main)
