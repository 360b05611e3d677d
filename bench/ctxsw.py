#!/usr/bin/env python3
"""Context switches per transaction of each Warden thread, for one or more builds.

    bench/ctxsw.py --rounds 2 --seconds 6 before=/tmp/warden-old after=target/release/warden

Starts PostgreSQL like bench/ab.py, then per round and per build: a new Warden on a fresh
store, a warm-up, and `pgbench -S -n -M extended` at 1 and at 8 clients, reading the
voluntary and involuntary context switches of every gateway thread from
/proc/PID/task/TID/status before and after each run. Prints, per run, the evidence
indexer's voluntary switches per second and per transaction and the runtime threads'
(`tokio-rt-worker`) per transaction. Counts, not timings: they show wake-ups that a change
adds or removes even where the tps difference is lost in a shared VM's noise.
Targets are NAME=BINARY[:VAR=VALUE,...] as for bench/ab.py.
"""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ab  # noqa: E402
import harness as h  # noqa: E402


def main() -> int:
    args = ab.arg_parser(__doc__, rounds=2, seconds=6).parse_args()
    targets = [ab.parse_target(t) for t in args.targets]
    for tool in ("psql", "pgbench"):
        h.require(tool)
    e = ab.scratch_env("warden-ctxsw-")
    h.start_postgres(e)
    print("| round | target | clients | tps | indexer voluntary/s | indexer voluntary/tx "
          "| runtime voluntary/tx | runtime involuntary/tx |")
    print("|---|---|---|---|---|---|---|---|")
    for rnd in range(1, args.rounds + 1):
        for name, binary, env in targets:
            g = ab.Gateway(e, name, binary, env, [])
            g.start()
            try:
                g.pgbench(8, tx=200)  # warm-up
                pid = g.w.proc.pid
                for clients in (1, 8):
                    before, t0 = ab.switches(pid), time.monotonic()
                    out = g.pgbench(clients, seconds=args.seconds)
                    after, dt = ab.switches(pid), time.monotonic() - t0
                    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
                    if not m:
                        raise h.BenchError(f"no tps in pgbench's output:\n{out}")
                    tps = float(m.group(1))
                    d = {k: (after[k][0] - before[k][0], after[k][1] - before[k][1])
                         for k in after if k in before}
                    idx = d.get("warden-indexer", (0, 0))
                    rt = [v for k, v in d.items() if k.startswith("tokio-rt")]
                    n = tps * dt
                    print(f"| {rnd} | {name} | {clients} | {tps:.0f} | {idx[0] / dt:.0f} "
                          f"| {idx[0] / n:.3f} | {sum(x[0] for x in rt) / n:.3f} "
                          f"| {sum(x[1] for x in rt) / n:.3f} |", flush=True)
            finally:
                g.stop()
    return 0


if __name__ == "__main__":
    h.run_main(main)
