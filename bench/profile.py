#!/usr/bin/env python3
"""Where a Warden build spends its CPU under load: `perf record` samples, grouped.

    bench/profile.py target/release/warden
    bench/profile.py --http --seconds 8 target/release/warden
    bench/profile.py --keep /tmp/w.perf.data target/release/warden   # then `perf report -i`
    bench/profile.py --pgbouncer                                     # the peer, same load

Starts PostgreSQL (and, with --http, nginx) like bench/ab.py, one Warden from BINARY on a
fresh store (`process` durability), warms it up, then samples all its threads with `perf
record -F 2999 -g` while `pgbench -S -n -M extended -c 8` (or, with --http, `wrk -t2 -c32`
on the harness's small JSON API; `--clients N` for another concurrency) runs through it.
Each sample is put in one group by its thread and call stack: the evidence indexer
thread; in the runtime threads, the kernel's side of each system call (a send includes
waking the receiver, and the switch away when the woken peer preempts the sender — on a
shared VM often the largest group), then user space by component (ledger placement and
hashing, SQL classification, masking, hyper, tokio, the allocator; "user: other" is
mostly leaf functions whose callers perf could not walk, as release builds keep no frame
pointers). Prints the groups' shares of all samples and µs per transaction or request
(share x the gateway's measured CPU per unit), and the largest leaf functions.

With --pgbouncer the harness's pgbouncer (session pooling) is sampled instead, under the
same pgbench load, so the kernel's share of each hop can be compared with the peer's.

Shares, not timings: they move less from run to run than tps on a shared VM, and show
which part a change must shrink. Needs perf (Debian: linux-perf), allowed to sample the
gateway (root, or kernel.perf_event_paranoid <= 1); perf itself costs a few per cent.
"""
from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ab  # noqa: E402
import harness as h  # noqa: E402

# (group, pattern searched in the whole stack), first match wins; every thread but the
# indexer (which is one group of its own). User-space samples go to the first component
# found anywhere in their stack, so an allocation made by the ledger counts as the ledger's.
KERNEL_GROUPS = [
    ("kernel: send (incl. waking the receiver)", r"\b(__GI___writev|__libc_send|__send|sendto|__x64_sys_sendto|do_writev)\b"),
    ("kernel: append-log / file write", r"\b(__libc_pwrite|pwrite64|__x64_sys_pwrite64)\b"),
    ("kernel: receive", r"\b(__libc_recv|recvfrom|__x64_sys_recvfrom|__libc_read)\b"),
    ("kernel: epoll_wait (idle wake-ups)", r"epoll_wait"),
    ("kernel: futex (thread wake-ups)", r"futex"),
    ("kernel: stat (key-revocation stamp)", r"\bstatx\b"),
]
USER_GROUPS = [
    ("user: SHA-256", r"^sha2::"),
    ("user: ledger (record JSON, ids, chain, place)",
     r"warden_store::(ledger|record_json|chain)|warden_core::(evidence|time_fmt)"),
    ("user: masking / response capture", r"warden_masking|ResponseTap|mask_json|rows::mask"),
    ("user: SQL classification, policy", r"warden_(sql|policy)|sql_cache|classif"),
    ("user: hyper client", r"hyper_util::client|h1::role::Client"),
    ("user: hyper server", r"hyper::"),
    ("user: Warden handlers (pg relay, http proxy, pipeline)", r"warden_(pg|http|pipeline|mcp)::"),
    ("user: allocator", r"_rjem_|malloc|sdallocx|\bfree\b"),
    ("user: tokio", r"tokio::"),
]


def samples(script: str):
    """(thread name, [frames leaf first]) per sample of `perf script` output."""
    for block in script.split("\n\n"):
        lines = block.strip("\n").split("\n")
        if not lines or not lines[0].strip():
            continue
        comm = lines[0].split()[0]
        frames = []
        for ln in lines[1:]:
            parts = ln.split(None, 1)
            if len(parts) == 2:
                frames.append(parts[1])
        yield comm, frames


def group(comm: str, frames: list[str]) -> str:
    if comm.startswith("warden-indexer"):
        return "evidence indexer thread (SQLite)"
    if not frames:
        return "no call stack"
    stack = "\n".join(frames)
    leaf = frames[0]
    if "[kernel" in leaf:
        for name, pat in KERNEL_GROUPS:
            if re.search(pat, stack):
                return name
        return "kernel: other (interrupts, scheduling)"
    syms = [f.split("+", 1)[0] for f in frames]
    for name, pat in USER_GROUPS:
        if re.search(pat, syms[0] if name == "user: SHA-256" else "\n".join(syms), re.M):
            return name
    return "user: other"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary", nargs="?", help="the warden binary to profile")
    ap.add_argument("--pgbouncer", action="store_true",
                    help="profile the harness's pgbouncer instead of a Warden (pgbench only)")
    ap.add_argument("--http", action="store_true", help="wrk on the HTTP path instead of pgbench")
    ap.add_argument("--seconds", type=float, default=8, help="seconds sampled (default 8)")
    ap.add_argument("--clients", type=int, default=0, metavar="N",
                    help="pgbench clients (default 8) or, with --http, wrk connections (default 32)")
    ap.add_argument("--keep", metavar="FILE", help="keep perf's data file here")
    args = ap.parse_args()
    if bool(args.binary) == args.pgbouncer:
        raise h.BenchError("name a warden binary, or --pgbouncer (not both)")
    if args.pgbouncer and args.http:
        raise h.BenchError("--pgbouncer profiles the PostgreSQL path; drop --http")
    binary = Path(args.binary).resolve() if args.binary else None
    if args.clients < 0:
        raise h.BenchError("--clients must be positive (0: the default)")
    clients = args.clients or (32 if args.http else 8)
    h.WRK_CONNECTIONS = clients
    if not shutil.which("perf"):
        raise h.BenchError("perf is missing: apt-get install -y linux-perf")
    for tool in ("psql", "pgbench", "pgbouncer") + (("nginx", "wrk") if args.http else ()):
        h.require(tool)
    e = ab.scratch_env("warden-profile-")
    h.start_postgres(e)
    h.start_pgbouncer(e)  # Gateway's config names it; measured only with --pgbouncer
    if args.http:
        h.start_nginx(e)
    if binary:
        g = ab.Gateway(e, "profile", binary, {}, [])
        pid = g.start()
        target = (g.w.pg_port, "agent:bench", g.w.key, pid)
    else:
        g = None
        pid = int(h.tail(e.tmp / "pgbouncer" / "pgbouncer.pid").strip())
        target = (e.bouncer_port, "postgres", h.PG_PW, pid)
    data = Path(args.keep).resolve() if args.keep else e.tmp / "perf.data"

    def load(seconds: float) -> dict:
        saved, h.SECONDS = h.SECONDS, seconds
        try:
            if args.http:
                return ab.timed_http(g, pid)
            return ab.timed(*target, clients)
        finally:
            h.SECONDS = saved

    h.log("warm-up")
    load(3)
    h.log(f"perf record -F 2999 -g on {pid} for {args.seconds:g} s of load")
    perf = subprocess.Popen(["perf", "record", "-q", "-F", "2999", "-g", "-o", str(data),
                             "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    h.PROCS.add("perf record", lambda: h.stop_popen(perf, timeout=60))
    time.sleep(0.5)
    r = load(args.seconds)
    perf.send_signal(2)
    perf.wait(timeout=120)
    if not data.exists():
        raise h.BenchError(f"perf wrote no samples: {perf.stderr.read().decode()[-500:]}")
    if g:
        g.stop()
    script = h.run(["perf", "script", "-i", str(data)], timeout=600, what="perf script").stdout

    groups: collections.Counter = collections.Counter()
    leaves: collections.Counter = collections.Counter()
    n = 0
    for comm, frames in samples(script):
        n += 1
        groups[group(comm, frames)] += 1
        leaves[(frames[0].split("+", 1)[0] if frames else "?")] += 1
    if n == 0:
        raise h.BenchError("no samples (is perf allowed to sample other processes?)")
    unit = "request" if args.http else "transaction"
    cpu = r.get("cpu", 0.0)
    load_name = (f"wrk -t{min(2, clients)} -c{clients}" if args.http
                 else f"pgbench -S -M extended -c {clients}")
    print(f"\n{load_name} through "
          f"{binary or 'pgbouncer'}: {r['tps']:.0f} {unit}s/s, {cpu:.1f} µs of proxy CPU per {unit}; "
          f"{n} samples\n")
    print(f"| group | share of samples | µs per {unit} |")
    print("|---|---:|---:|")
    for name, k in groups.most_common():
        print(f"| {name} | {100 * k / n:.1f} % | {cpu * k / n:.1f} |")
    print("\nlargest leaf functions:\n")
    for name, k in leaves.most_common(15):
        print(f"  {100 * k / n:5.1f} %  {name}")
    if args.keep:
        print(f"\nperf data kept in {data} (perf report -i {data})")
    return 0


if __name__ == "__main__":
    h.run_main(main)
