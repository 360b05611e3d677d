#!/usr/bin/env python3
"""A/B two or more Warden builds on the PostgreSQL path, interleaved, each on a fresh store.

    bench/ab.py before=/tmp/warden-old after=target/release/warden
    bench/ab.py --rounds 4 --seconds 15 a=/tmp/w1 b=/tmp/w2:WARDEN_LOG=info
    bench/ab.py --callgrind 1500 before=/tmp/warden-old after=target/release/warden

Starts PostgreSQL (and pgbouncer for reference) like bench/harness.py, then for every round
and every target in turn: a new Warden from that binary on a fresh store, a 3 s warm-up,
then `pgbench -S -n -M extended` (`--protocol simple`: `-M simple`) at 8 clients and at 1 client (and the same against
pgbouncer and PostgreSQL directly, once per round). Reports tps and the
gateway's CPU per transaction (utime + stime of all its threads from /proc, the evidence
indexer included, with the indexer's own share) and, at 8 clients, the whole machine's
(busy time of every CPU from /proc/stat: proxy, PostgreSQL and pgbench — work a proxy
adds on the database side shows only here), per round and as medians.

On a shared 2-core VM the same binary moves by a few µs/tx from run to run; a difference
smaller than that needs more rounds, or `--callgrind TX`: each target then runs once
under `valgrind --tool=callgrind`; its counters are zeroed after a warm-up and the
instructions of 8 x TX transactions of `pgbench -S -M extended -c 8` are reported (a run
of 2 TX per client minus a run of TX, so connection set-up cancels out). Repeatable
whatever else the machine does; but under valgrind SHA-256 runs without the CPU's SHA
extensions and SQLite's batches differ with the speed, so compare builds with it, not
the shares of their parts.

With --pin, the gateway under test gets a core of its own: this script and everything it
starts (PostgreSQL, pgbench) run on CPU 0, the proxy (each Warden, and pgbouncer) on CPU 1,
as when a gateway runs on its own host. Without it all share both cores, as in
bench/run.sh, so every µs of the proxy's CPU is taken from PostgreSQL and the client.

A target is NAME=BINARY, optionally followed by :VAR=VALUE[,VAR=VALUE...] for the
gateway's environment; `evidence.KEY=VALUE` instead adds `KEY = VALUE` to that gateway's
`[evidence]` table (e.g. `low=target/release/warden:evidence.indexer_nice=19`). Everything started is stopped on exit, error or Ctrl-C; the temp
dir (servers' logs, callgrind dumps for callgrind_annotate) is removed unless BENCH_KEEP=1.

With --http the same comparison runs on the HTTP path instead: nginx serves the harness's
small JSON document, and each round runs `wrk -t2 -c32` through every Warden (after a 2 s
warm-up) and through nginx `proxy_pass`, reporting requests/s, the gateway's CPU per
request and its runtime threads' context switches per request (`--http-connections N`:
N connections instead of 32; 1 is a sequential client, as an agent). `--http --callgrind N` counts the instructions of N x 8 keep-alive GETs (8
connections; a run of 2N per connection minus a run of N, as for pgbench). `--http
--download MIB` adds, per round, a download of a MIB-sized binary file through each
Warden, through nginx `proxy_pass` and from nginx directly (`sendfile`), in MiB/s.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402


def parse_target(spec: str) -> tuple[str, Path, dict]:
    """NAME=BINARY[:VAR=VALUE,...]; a VAR of the form `evidence.KEY` is not an environment
    variable but a setting added to that gateway's `[evidence]` table (KEY = VALUE)."""
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise h.BenchError(f"target {spec!r}: expected NAME=BINARY[:VAR=VALUE,...]")
    binary, _, envs = rest.partition(":")
    env = {}
    for kv in filter(None, envs.split(",")):
        k, sep, v = kv.partition("=")
        if not sep:
            raise h.BenchError(f"target {spec!r}: {kv!r} is not VAR=VALUE")
        if k.startswith("evidence.") and not re.fullmatch(r"evidence\.[a-z_]+", k):
            raise h.BenchError(f"target {spec!r}: {k!r} is not evidence.KEY")
        env[k] = v
    path = Path(binary).resolve()
    if not os.access(path, os.X_OK):
        raise h.BenchError(f"target {spec!r}: {path} is not an executable")
    return name, path, env


# pgbench's query mode (--protocol): `extended` (the main target) or `simple`.
PROTOCOL = "extended"
# The gateways' evidence durability (--durability).
DURABILITY = "process"


def thread_ticks(pid: int) -> dict[str, int]:
    """CPU ticks per thread name (threads of the same name summed)."""
    out: dict[str, int] = {}
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (t / "comm").read_text().strip()
            f = (t / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[comm] = out.get(comm, 0) + int(f[11]) + int(f[12])
    return out


def switches(pid: int) -> dict[str, tuple[int, int]]:
    """(voluntary, involuntary) context switches per thread name (same names summed)."""
    out: dict[str, tuple[int, int]] = {}
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (t / "comm").read_text().strip()
            status = (t / "status").read_text()
        except OSError:
            continue  # the thread ended between listing and reading
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        v = int(fields["voluntary_ctxt_switches"])
        nv = int(fields["nonvoluntary_ctxt_switches"])
        a, b = out.get(comm, (0, 0))
        out[comm] = (a + v, b + nv)
    return out


class Gateway:
    """One Warden from `binary` on a fresh store, with `env` added to its environment (its
    `evidence.KEY` entries go to the config's `[evidence]` table instead)."""

    def __init__(self, e: h.Env, name: str, binary: Path, env: dict, wrapper: list[str]):
        saved = h.WARDEN
        h.WARDEN = binary
        try:
            self.w = h.Warden(e, f"ab-{name}-{time.monotonic_ns()}", DURABILITY)
        finally:
            h.WARDEN = saved
        settings = {k.split(".", 1)[1]: v for k, v in env.items() if k.startswith("evidence.")}
        env = {k: v for k, v in env.items() if not k.startswith("evidence.")}
        if settings:
            with self.w.config.open("a") as f:
                f.write("\n[evidence]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
        self.binary, self.env, self.wrapper = binary, env, wrapper
        if wrapper[:1] == ["valgrind"]:
            # Under valgrind a run lasts minutes: keep the periodic checkpoint (every 60 s by
            # default) out of the counted windows, or one build's count includes it.
            cfg = self.w.config.read_text()
            self.w.config.write_text(cfg.replace("[gateway]\n",
                                                 '[gateway]\ncheckpoint_interval = "24h"\n', 1))

    def start(self) -> int:
        w = self.w
        logf = w.dir / "serve.log"
        env = dict(w.env(), **self.env)
        w.proc = subprocess.Popen(self.wrapper + [str(self.binary), "serve", "--config",
                                                  str(w.config)],
                                  cwd=w.dir, env=env, stdout=subprocess.DEVNULL,
                                  stderr=open(logf, "ab"), start_new_session=True)
        p = w.proc
        h.PROCS.add(f"warden {w.name}", lambda: h.stop_popen(p, timeout=60))
        for port in (w.pg_port, w.http_port):
            h.wait_port(port, f"warden {w.name}", proc=p, logfile=logf, timeout=120)
        r = h.run(["psql", f"host=127.0.0.1 port={w.pg_port} dbname=bench user=agent:bench",
                   "-X", "-qAt", "-c", "select count(*) from pgbench_branches"],
                  env=h.pg_env(w.key), timeout=120, what=f"psql through {w.name}")
        if r.stdout.strip() != "5":
            raise h.BenchError(f"{w.name}: unexpected answer {r.stdout!r}")
        return p.pid

    def stop(self) -> None:
        if self.w.proc is not None:
            h.stop_popen(self.w.proc, timeout=60)
            self.w.proc = None
        shutil.rmtree(self.w.dir, ignore_errors=True)

    def pgbench(self, clients: int, seconds: float | None = None, tx: int | None = None) -> str:
        w = self.w
        cmd = ["pgbench", "-S", "-n", "-M", PROTOCOL, "-c", str(clients), "-j",
               "2" if clients > 1 else "1", "-h", "127.0.0.1", "-p", str(w.pg_port),
               "-U", "agent:bench", "bench"]
        cmd += ["-t", str(tx)] if tx else ["-T", str(max(1, round(seconds or 1)))]
        r = h.run(cmd, env=h.pg_env(w.key), timeout=3600, what="pgbench")
        if re.search(r"number of failed transactions: [1-9]", r.stdout):
            raise h.BenchError(f"pgbench reported failed transactions:\n{r.stdout}")
        return r.stdout


    def http_get(self, per_conn: int, conns: int = 8) -> None:
        """`per_conn` keep-alive GETs of the JSON document on each of `conns` connections."""
        import http.client
        import threading

        errors: list[str] = []

        def one() -> None:
            c = http.client.HTTPConnection("127.0.0.1", self.w.http_port, timeout=600)
            try:
                for _ in range(per_conn):
                    c.request("GET", "/api/invoices/7",
                              headers={"Authorization": f"Bearer {self.w.key}"})
                    r = c.getresponse()
                    r.read()
                    if r.status != 200:
                        errors.append(f"HTTP {r.status}")
                        return
            except OSError as ex:  # a thread's exception would otherwise only be printed
                errors.append(repr(ex))
            finally:
                c.close()

        ts = [threading.Thread(target=one) for _ in range(conns)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        if errors:
            raise h.BenchError(f"{self.w.name}: {errors[0]} from the JSON API")


def machine_busy() -> float:
    """CPU seconds spent by the whole machine so far (every CPU, all but idle and iowait)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")


def timed(port: int, user: str, password: str, pid: int | None, clients: int) -> dict:
    """harness.pgbench (tps, the process's CPU per transaction), plus the indexer's share
    and the whole machine's CPU per transaction (`machine`: the proxy, PostgreSQL and
    pgbench together — what a proxy costs the database side shows here)."""
    t0 = thread_ticks(pid) if pid else {}
    m0 = machine_busy()
    r = h.pgbench(port, user, "bench", password, clients, PROTOCOL, pid)
    m1 = machine_busy()
    t1 = thread_ticks(pid) if pid else {}
    total = sum(t1.values()) - sum(t0.values())
    indexer = t1.get("warden-indexer", 0) - t0.get("warden-indexer", 0)
    out = {"tps": r["tps"]}
    if "cpu_us_per_tx" in r:
        out["cpu"] = r["cpu_us_per_tx"]
    if r.get("tx"):
        out["machine"] = (m1 - m0) * 1e6 / r["tx"]
    if "warden-indexer" in t1:
        out["indexer"] = out["cpu"] * indexer / max(total, 1)
    return out


def timed_http(g: Gateway, pid: int) -> dict:
    """harness.wrk through the gateway (requests/s, its CPU per request) + the indexer's share."""
    t0, s0 = thread_ticks(pid), switches(pid)
    r = h.wrk(f"http://127.0.0.1:{g.w.http_port}/api/invoices/7",
              [f"Authorization: Bearer {g.w.key}"], pid)
    t1, s1 = thread_ticks(pid), switches(pid)
    if r["non2xx"] or r["socket_errors"]:
        raise h.BenchError(f"{g.w.name}: {r['non2xx']} non-2xx, {r['socket_errors']} socket errors")
    total = sum(t1.values()) - sum(t0.values())
    indexer = t1.get("warden-indexer", 0) - t0.get("warden-indexer", 0)
    cpu = r.get("cpu_us_per_req", 0.0)
    n = max(r["requests"], 1)
    rt0, rt1 = s0.get("tokio-rt-worker", (0, 0)), s1.get("tokio-rt-worker", (0, 0))
    return {"tps": r["rps"], "cpu": cpu, "indexer": cpu * indexer / max(total, 1),
            "vol": (rt1[0] - rt0[0]) / n, "invol": (rt1[1] - rt0[1]) / n}


def callgrind(g: Gateway, tmp: Path, tx: int, http: bool = False) -> int:
    """Instructions of `tx` x 8 transactions (or HTTP requests): a run of 2*tx per client
    minus a run of tx (each run opens its 8 connections, so their set-up — SCRAM
    included — cancels out)."""
    work = (lambda n: g.http_get(n)) if http else (lambda n: g.pgbench(8, tx=n))
    work(100)  # warm-up: caches, prepared plans, the upstream connection pool
    pid = g.w.proc.pid

    def counted(n: int) -> int:
        h.run(["callgrind_control", "-z", str(pid)], timeout=120, what="callgrind_control -z")
        work(n)
        before = set(tmp.glob(f"callgrind.{pid}.out*"))
        h.run(["callgrind_control", "-d", str(pid)], timeout=300, what="callgrind_control -d")
        new = sorted(set(tmp.glob(f"callgrind.{pid}.out*")) - before)
        if not new:
            raise h.BenchError(f"no new callgrind dump for {pid} in {tmp}")
        for line in new[-1].read_text(errors="replace").splitlines():
            if line.startswith("summary:"):
                return int(line.split()[1])
        raise h.BenchError(f"no instruction summary in {new[-1]}")

    one, two = counted(tx), counted(2 * tx)
    return two - one


def arg_parser(doc: str, rounds: int, seconds: float) -> argparse.ArgumentParser:
    """The options every build-comparing script takes: targets, --rounds, --seconds."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                 epilog=doc.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="+", metavar="NAME=BINARY[:VAR=VALUE,...]")
    ap.add_argument("--rounds", type=int, default=rounds,
                    help=f"interleaved rounds (default {rounds})")
    ap.add_argument("--seconds", type=float, default=seconds,
                    help=f"seconds per pgbench run ({seconds:g})")
    return ap


def scratch_env(prefix: str) -> h.Env:
    """A temp dir (removed on exit unless BENCH_KEEP=1) and the harness's Env in it."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(tmp, 0o755)
    h.PROCS.add("temp dir", lambda: None if h.KEEP else shutil.rmtree(tmp, ignore_errors=True))
    e = h.Env(tmp)
    e.origin_port = h.free_port()  # the gateways' HTTP connection is configured, not used
    return e


def main() -> int:
    ap = arg_parser(__doc__, rounds=4, seconds=15)
    ap.add_argument("--pin", action="store_true",
                    help="PostgreSQL and pgbench on CPU 0, the proxy under test on CPU 1")
    ap.add_argument("--callgrind", type=int, metavar="TX",
                    help="count instructions for TX transactions per client instead")
    ap.add_argument("--protocol", choices=("extended", "simple"), default="extended",
                    help="pgbench -M mode (default extended)")
    ap.add_argument("--durability", choices=("process", "fsync"), default="process",
                    help="the gateways' [evidence] durability (default process)")
    ap.add_argument("--http", action="store_true",
                    help="the HTTP path (wrk on a small JSON API) instead of pgbench")
    ap.add_argument("--http-connections", type=int, default=32, metavar="N",
                   help="wrk connections for --http (default 32, as bench/run.sh)")
    ap.add_argument("--download", type=int, metavar="MIB", default=0,
                    help="with --http: also download a MIB-sized file through each target")
    args = ap.parse_args()
    if args.download and not args.http:
        raise h.BenchError("--download goes with --http")
    if args.http_connections < 1:
        raise h.BenchError("--http-connections must be at least 1")
    h.WRK_CONNECTIONS = args.http_connections
    global PROTOCOL, DURABILITY
    PROTOCOL = args.protocol
    DURABILITY = args.durability
    targets = [parse_target(t) for t in args.targets]
    if len({n for n, _, _ in targets}) != len(targets):
        raise h.BenchError("target names must differ")
    for tool in ("psql", "pgbench", "pgbouncer") + (("valgrind", "callgrind_control")
                                                     if args.callgrind else ()):
        h.require(tool)

    pin: list[str] = []
    if args.pin:
        if args.callgrind:
            raise h.BenchError("--pin and --callgrind do not go together (counts do not depend on it)")
        if len(os.sched_getaffinity(0)) < 2 or not {0, 1} <= os.sched_getaffinity(0):
            raise h.BenchError("--pin needs CPUs 0 and 1")
        h.require("taskset")
        os.sched_setaffinity(0, {0})  # inherited by PostgreSQL, pgbench and psql
        pin = ["taskset", "-c", "1"]
    e = scratch_env("warden-ab-")
    tmp = e.tmp
    h.start_postgres(e)
    h.start_pgbouncer(e)
    if args.http:
        h.require("nginx")
        h.require("wrk")
        h.HTTP_MIB = max(1, args.download)  # the large-body file
        h.start_nginx(e)
    unit = "HTTP requests (GET, keep-alive)" if args.http else \
        f"transactions of pgbench -S -M {PROTOCOL} -c 8"

    if args.callgrind:
        wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/callgrind.%p.out"]
        counts = {}
        for name, binary, env in targets:
            h.log(f"{name}: under callgrind, {args.callgrind} transactions x 8 clients")
            g = Gateway(e, name, binary, env, wrapper)
            g.start()
            counts[name] = callgrind(g, tmp, args.callgrind, args.http)
            g.stop()
            h.log(f"  {name}: {counts[name]:,} instructions for {8 * args.callgrind} {unit}")
        first = next(iter(counts.values()))
        print(f"\ninstructions of the gateway (all threads) for {8 * args.callgrind} "
              f"{unit}, 8 connections (connection set-up excluded)\n")
        for name, n in counts.items():
            print(f"  {name:<16} {n:>16,}  {n / (8 * args.callgrind):>10,.0f} per {'req' if args.http else 'tx'}  "
                  f"{n / first:6.3f}x")
        return 0

    h.SECONDS = args.seconds
    if args.http:
        return http_rounds(args, e, targets, pin)
    bouncer_pid = int(h.tail(tmp / "pgbouncer" / "pgbouncer.pid").strip())
    if pin:
        h.run(["taskset", "-a", "-p", "-c", "1", str(bouncer_pid)], timeout=30, what="taskset")
    rows: dict[str, list] = {n: [] for n, _, _ in targets}
    rows["pgbouncer"] = []
    rows["direct"] = []
    for rnd in range(1, args.rounds + 1):
        for name, binary, env in targets:
            g = Gateway(e, name, binary, env, pin)
            pid = g.start()
            g.pgbench(8, seconds=3)
            w = (g.w.pg_port, "agent:bench", g.w.key, pid)
            r8, r1 = timed(*w, 8), timed(*w, 1)
            g.stop()
            rows[name].append((r8, r1))
            h.log(f"round {rnd} {name}: c=8 {r8['tps']:.0f} tps {r8['cpu']:.1f} µs/tx "
                  f"(indexer {r8['indexer']:.1f}); c=1 {r1['tps']:.0f} tps {r1['cpu']:.1f} µs/tx")
        b = (e.bouncer_port, "postgres", h.PG_PW, bouncer_pid)
        rb8, rb1 = timed(*b, 8), timed(*b, 1)
        rows["pgbouncer"].append((rb8, rb1))
        h.log(f"round {rnd} pgbouncer: c=8 {rb8['tps']:.0f} tps {rb8['cpu']:.1f} µs/tx; "
              f"c=1 {rb1['tps']:.0f} tps {rb1['cpu']:.1f} µs/tx")
        rd8, rd1 = (timed(e.pg_port, "postgres", h.PG_PW, None, c) for c in (8, 1))
        rows["direct"].append((rd8, rd1))
        h.log(f"round {rnd} direct: c=8 {rd8['tps']:.0f} tps; c=1 {rd1['tps']:.0f} tps")

    print(f"\npgbench -S -n -M {PROTOCOL}, {args.seconds:g} s per run, {args.rounds} "
          f"interleaved rounds, Warden's durability `{DURABILITY}`; CPU = the proxy's µs per transaction (all threads), machine = every process's "
          f"(proxy, PostgreSQL, pgbench); "
          + ("proxy on CPU 1, PostgreSQL and pgbench on CPU 0\n" if pin
             else "everything shares both CPUs\n"))
    print("| target | c=8 tps | c=8 CPU µs/tx | of which indexer | c=8 machine µs/tx "
          "| c=1 tps | c=1 CPU µs/tx |")
    print("|---|---|---|---|---|---|---|")
    for name, rs in rows.items():
        def col(i: int, k: str, fmt: str = "{:.1f}") -> str:
            xs = [r[i][k] for r in rs if r[i] is not None and k in r[i]]
            if not xs:
                return "–"
            return f"{fmt.format(statistics.median(xs))} ({' / '.join(fmt.format(x) for x in xs)})"
        print(f"| {name} | {col(0, 'tps', '{:.0f}')} | {col(0, 'cpu')} | {col(0, 'indexer')} "
              f"| {col(0, 'machine')} | {col(1, 'tps', '{:.0f}')} | {col(1, 'cpu')} |")

    def median_tps(name: str, i: int) -> float:
        return statistics.median(r[i]["tps"] for r in rows[name])

    print("\nratios of median tps (c=8 / c=1)\n")
    for name, _, _ in targets:
        print(f"  {name:<16} / pgbouncer {median_tps(name, 0) / median_tps('pgbouncer', 0):.2f} / "
              f"{median_tps(name, 1) / median_tps('pgbouncer', 1):.2f}   "
              f"/ direct {median_tps(name, 0) / median_tps('direct', 0):.2f} / "
              f"{median_tps(name, 1) / median_tps('direct', 1):.2f}")
    return 0


def http_rounds(args, e: h.Env, targets: list, pin: list[str]) -> int:
    """--http: wrk through each Warden and through nginx proxy_pass, interleaved."""
    nginx_pid = int(h.tail(e.tmp / "nginx" / "nginx.pid").strip())
    if pin:  # the master and its worker
        for pid in [nginx_pid] + [int(x) for x in h.run(
                ["pgrep", "-P", str(nginx_pid)], timeout=30, what="pgrep").stdout.split()]:
            h.run(["taskset", "-a", "-p", "-c", "1", str(pid)], timeout=30, what="taskset")
    rows: dict[str, list] = {n: [] for n, _, _ in targets}
    rows["nginx"] = []
    for rnd in range(1, args.rounds + 1):
        for name, binary, env in targets:
            g = Gateway(e, name, binary, env, pin)
            pid = g.start()
            saved, h.SECONDS = h.SECONDS, 2
            timed_http(g, pid)  # warm-up: the upstream connection pool, caches
            h.SECONDS = saved
            r = timed_http(g, pid)
            if args.download:
                r["mib_s"] = h.download(f"http://127.0.0.1:{g.w.http_port}/api/big.bin",
                                        [f"Authorization: Bearer {g.w.key}"])["mib_per_s"]
                r["rss"] = h.hwm_kib(pid) / 1024
            g.stop()
            rows[name].append(r)
            h.log(f"round {rnd} {name}: {r['tps']:.0f} req/s {r['cpu']:.1f} µs/req "
                  f"(indexer {r['indexer']:.1f}; runtime switches {r['vol']:.2f} + "
                  f"{r['invol']:.2f}/req)"
                  + (f"; download {r['mib_s']:.0f} MiB/s" if args.download else ""))
        rn = h.wrk(f"http://127.0.0.1:{e.proxy_port}/invoices/7")
        rows["nginx"].append({"tps": rn["rps"]})
        if args.download:
            rows["nginx"][-1]["mib_s"] = h.download(
                f"http://127.0.0.1:{e.proxy_port}/big.bin")["mib_per_s"]
            rows.setdefault("direct", []).append({"mib_s": h.download(
                f"http://127.0.0.1:{e.origin_port}/big.bin")["mib_per_s"]})
        h.log(f"round {rnd} nginx proxy_pass: {rn['rps']:.0f} req/s")

    print(f"\nwrk -c{h.WRK_CONNECTIONS} on a small JSON API, {args.seconds:g} s per run, {args.rounds} "
          f"interleaved rounds; CPU = the gateway's µs per request (all threads); "
          + ("proxy on CPU 1, the rest on CPU 0\n" if pin else "everything shares both CPUs\n"))
    dl = f" | {args.download} MiB download, MiB/s | peak RSS MiB" if args.download else ""
    print("| target | req/s | CPU µs/req | of which indexer | runtime threads' voluntary "
          "switches/req | involuntary/req" + dl + " |")
    print("|---|---|---|---|---|---|" + ("---|---|" if args.download else ""))
    for name, rs in rows.items():
        def col(k: str, fmt: str = "{:.1f}") -> str:
            xs = [r[k] for r in rs if k in r]
            if not xs:
                return "–"
            return f"{fmt.format(statistics.median(xs))} ({' / '.join(fmt.format(x) for x in xs)})"
        print(f"| {name} | {col('tps', '{:.0f}')} | {col('cpu')} | {col('indexer')} |"
              f" {col('vol', '{:.2f}')} | {col('invol', '{:.2f}')} |"
              + (f" {col('mib_s', '{:.0f}')} | {col('rss')} |" if args.download else ""))
    nginx = statistics.median(r["tps"] for r in rows["nginx"])
    print("\nratios of median req/s\n")
    for name, _, _ in targets:
        print(f"  {name:<16} / nginx proxy_pass "
              f"{statistics.median(r['tps'] for r in rows[name]) / nginx:.2f}")
    return 0


if __name__ == "__main__":
    h.run_main(main)
