#!/usr/bin/env python3
"""Warden end-to-end benchmark harness (issue 7). Run it through bench/run.sh, which builds
the release binaries first; this file only needs python3's standard library.

Starts, on loopback, on free ports, in one temp dir: PostgreSQL (fsync=off), pgbouncer
(session pooling), nginx (a small JSON API + a 1 GiB file = "direct"; a second server block
proxy_passing to it with an upstream keepalive pool = the peer) and Warden (evidence on,
masking on). Then runs, interleaved round by round (A, B, C, A, B, C, ...), the cases below
and reports medians and ratios:

  pgbench   -S -n, scale 5, -M simple|extended, -c 1 | -c 8 -j 2: direct / pgbouncer / Warden
            (durability "process"; the 1-client cases also through a Warden at "fsync")
  wrk       -t2 -c32 on the JSON API: direct nginx / nginx proxy_pass / Warden
  select    a 1M-row SELECT through psql: direct / Warden (a fresh Warden per run: peak RSS)
  download  a 1 GiB body with curl: direct / nginx proxy_pass / Warden (fresh Warden per run)
  ledger    crates/store/examples/ledger_bench: records/s at 1, 8, 64 writers x process|fsync

Environment (all optional):
  BENCH_SECONDS=10      seconds per pgbench / wrk run
  BENCH_ROUNDS=3        interleaved rounds (the tables show the median)
  BENCH_LEDGER_SECONDS=5  seconds per ledger case
  BENCH_ROWS=1000000    rows of the large SELECT
  BENCH_HTTP_MIB=1024   size of the large HTTP body
  BENCH_BIG_RECORDS=2000000  evidence records in the store of the restart case
  BENCH_ONLY=pgbench,wrk,select,download,ledger,restart   subset of cases
  BENCH_OUT=bench/results  where latest.md / latest.json go
  BENCH_KEEP=1          keep the temp dir (logs) after the run

Progress goes to stderr; the final table to stdout and BENCH_OUT/latest.md (+ latest.json
with every raw measurement). Any server that fails to start, any run that fails or exceeds
its timeout aborts the harness with a non-zero exit status; everything it started is
stopped on exit, on error and on Ctrl-C / SIGTERM.
"""
from __future__ import annotations

import datetime as dt
import glob
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
WARDEN = Path(os.environ.get("WARDEN_BIN", TARGET / "release" / "warden"))
LEDGER_BENCH = Path(os.environ.get(
    "LEDGER_BENCH_BIN", TARGET / "release" / "examples" / "ledger_bench"))
IS_ROOT = os.geteuid() == 0
PG_PW = "bench-pg-pw"
UPSTREAM_TOKEN = "bench-upstream-token"
JSON_BODY = '{"id":7,"status":"paid","amount":12.5,"customer":"ann@example.com"}'

SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
LEDGER_SECONDS = float(os.environ.get("BENCH_LEDGER_SECONDS", "5"))
ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
HTTP_MIB = int(os.environ.get("BENCH_HTTP_MIB", "1024"))
BIG_RECORDS = int(os.environ.get("BENCH_BIG_RECORDS", "2000000"))
ONLY = set(filter(None, os.environ.get("BENCH_ONLY", "pgbench,wrk,select,download,ledger,restart").split(",")))
OUT = Path(os.environ.get("BENCH_OUT", REPO / "bench" / "results"))
KEEP = os.environ.get("BENCH_KEEP") == "1"
ALL_CASES = {"pgbench", "wrk", "select", "download", "ledger", "restart"}

LARGE_SQL = ("select g as id, 'customer ' || g as name, 'user' || g || '@example.com' as email, "
             "md5(g::text) as note from generate_series(1, {rows}) g")


class BenchError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ processes


class Procs:
    """Everything started; stopped in reverse order by `stop_all` (idempotent)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, object]] = []

    def add(self, name: str, stopper) -> None:
        self.items.append((name, stopper))

    def stop_all(self) -> None:
        while self.items:
            name, stopper = self.items.pop()
            try:
                stopper()
            except Exception as e:  # keep stopping the rest
                log(f"stopping {name}: {e}")


PROCS = Procs()


def stop_popen(p: subprocess.Popen, timeout: float = 10) -> None:
    if p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)


def run(cmd: list[str], timeout: float, env: dict | None = None, check: bool = True,
        what: str | None = None, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(cmd, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what or cmd[0]} timed out after {timeout:.0f}s: {' '.join(cmd)}")
    if check and r.returncode != 0:
        out = r.stdout if isinstance(r.stdout, str) else ""
        raise BenchError(f"{what or cmd[0]} failed ({r.returncode}): {' '.join(cmd)}\n"
                         f"{out[-2000:]}\n{r.stderr[-2000:]}")
    return r


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, what: str, timeout: float = 30, proc: subprocess.Popen | None = None,
              logfile: Path | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode} before listening on {port}"
                             f"\n{tail(logfile)}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"{what}: nothing listens on 127.0.0.1:{port} after {timeout}s\n{tail(logfile)}")


def tail(p: Path | None, n: int = 3000) -> str:
    try:
        return p.read_text(errors="replace")[-n:] if p else ""
    except OSError:
        return ""


def require(tool: str) -> str:
    p = shutil.which(tool)
    if not p:
        raise BenchError(f"{tool} is missing: apt-get install -y pgbouncer nginx-light wrk "
                         f"postgresql postgresql-contrib curl")
    return p


def as_pg(cmd: list[str]) -> list[str]:
    return (["runuser", "-u", "postgres", "--"] + cmd) if IS_ROOT else cmd


def chown_pg(*paths: Path) -> None:
    if IS_ROOT:
        for p in paths:
            shutil.chown(p, "postgres", "postgres")


def pg_bindir() -> Path:
    dirs = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if Path(d).parent.name.isdigit()]
    if not dirs:
        raise BenchError("no /usr/lib/postgresql/*/bin: apt-get install -y postgresql")
    return Path(sorted(dirs, key=lambda d: int(Path(d).parent.name))[-1])


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of process `pid` so far (all its threads); nan if unknown."""
    if not pid:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    # After "pid (comm)": state is fields[0], utime fields[11], stime fields[12].
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


# ------------------------------------------------------------------------------ servers


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.pg_port = 0
        self.bouncer_port = 0
        self.origin_port = 0
        self.proxy_port = 0
        self.bindir = pg_bindir()
        self.wardens: dict[str, Warden] = {}


def start_postgres(e: Env) -> None:
    d = e.tmp / "pg"
    d.mkdir()
    chown_pg(d)
    pw = d / "pw"
    pw.write_text(PG_PW + "\n")
    chown_pg(pw)
    log(f"initdb ({e.bindir})")
    run(as_pg([str(e.bindir / "initdb"), "-D", str(d / "data"), "-U", "postgres",
               "--auth=scram-sha-256", f"--pwfile={pw}", "-E", "UTF8", "--no-sync"]),
        timeout=180, what="initdb")
    e.pg_port = free_port()
    logf = d / "postgres.log"
    logf.touch()
    chown_pg(logf)
    # fsync=off: the database's own durability is not what is compared here (the same
    # server serves every target); max_connections leaves room for pgbouncer + Warden.
    opts = (f"-c listen_addresses=127.0.0.1 -p {e.pg_port} -k {d} -c fsync=off "
            f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
    run(as_pg([str(e.bindir / "pg_ctl"), "-D", str(d / "data"), "-l", str(logf), "-o", opts,
               "-w", "-t", "60", "start"]), timeout=90, what="pg_ctl start")
    PROCS.add("postgres", lambda: run(as_pg([str(e.bindir / "pg_ctl"), "-D", str(d / "data"),
                                             "-m", "immediate", "stop"]), timeout=60,
                                      check=False, what="pg_ctl stop"))
    wait_port(e.pg_port, "postgres", logfile=logf)
    env = pg_env(PG_PW)
    run(["psql", f"host=127.0.0.1 port={e.pg_port} dbname=postgres user=postgres", "-X",
         "-v", "ON_ERROR_STOP=1", "-qAt", "-c", "create database bench"], env=env, timeout=60,
        what="create database")
    log("pgbench -i -s 5")
    run(["pgbench", "-i", "-s", "5", "-q", "-h", "127.0.0.1", "-p", str(e.pg_port), "-U",
         "postgres", "bench"], env=env, timeout=300, what="pgbench -i")
    log(f"postgres ready on {e.pg_port} (fsync=off)")


def pg_env(password: str) -> dict:
    env = dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT="10")
    for k in ("PGOPTIONS", "PGSSLMODE", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE"):
        env.pop(k, None)
    return env


def start_pgbouncer(e: Env) -> None:
    d = e.tmp / "pgbouncer"
    d.mkdir()
    e.bouncer_port = free_port()
    (d / "userlist.txt").write_text(f'"postgres" "{PG_PW}"\n')
    (d / "pgbouncer.ini").write_text(f"""[databases]
bench = host=127.0.0.1 port={e.pg_port} dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {e.bouncer_port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {d}/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 20
ignore_startup_parameters = extra_float_digits
logfile = {d}/pgbouncer.log
pidfile = {d}/pgbouncer.pid
log_connections = 0
log_disconnections = 0
""")
    for p in (d, d / "userlist.txt", d / "pgbouncer.ini"):
        chown_pg(p)
    logf = d / "stderr.log"
    p = subprocess.Popen(as_pg([require("pgbouncer"), str(d / "pgbouncer.ini")]),
                         stdout=subprocess.DEVNULL, stderr=open(logf, "wb"),
                         start_new_session=True)

    def stop():
        # Signal pgbouncer itself (runuser would leave it to be reaped late), then runuser.
        pid = tail(d / "pgbouncer.pid").strip()
        if pid.isdigit():
            try:
                os.kill(int(pid), signal.SIGTERM)
            except ProcessLookupError:
                pass
        stop_popen(p)
    PROCS.add("pgbouncer", stop)
    wait_port(e.bouncer_port, "pgbouncer", proc=p, logfile=logf)
    # One real query through it, so a broken auth setup fails here, not mid-benchmark.
    run(["psql", f"host=127.0.0.1 port={e.bouncer_port} dbname=bench user=postgres", "-X",
         "-qAt", "-c", "select count(*) from pgbench_branches"], env=pg_env(PG_PW), timeout=30,
        what="psql through pgbouncer")
    log(f"pgbouncer ready on {e.bouncer_port} (session pooling)")


def start_nginx(e: Env) -> None:
    d = e.tmp / "nginx"
    (d / "logs").mkdir(parents=True)
    (d / "www").mkdir()
    big = d / "www" / "big.bin"
    with open(big, "wb") as f:  # real bytes (not a sparse file), written once
        chunk = os.urandom(1 << 20)
        for _ in range(HTTP_MIB):
            f.write(chunk)
    for p in (e.tmp, d, d / "www"):
        os.chmod(p, 0o755)
    os.chmod(big, 0o644)
    e.origin_port = free_port()
    e.proxy_port = free_port()
    (d / "nginx.conf").write_text(f"""worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  upstream origin {{ server 127.0.0.1:{e.origin_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{e.origin_port};
    location / {{ default_type application/json; return 200 '{JSON_BODY}'; }}
    location = /big.bin {{ root {d}/www; default_type application/octet-stream; }}
  }}
  server {{
    listen 127.0.0.1:{e.proxy_port};
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer {UPSTREAM_TOKEN}";
      # In-memory buffering only: a large body streams at the client's pace, no temp files.
      proxy_buffer_size 64k;
      proxy_buffers 16 64k;
      proxy_max_temp_file_size 0;
    }}
  }}
}}
""")
    run([require("nginx"), "-p", str(d), "-e", str(d / "logs" / "error.log"), "-c",
         str(d / "nginx.conf"), "-t"], timeout=30, what="nginx -t")
    run([require("nginx"), "-p", str(d), "-e", str(d / "logs" / "error.log"), "-c",
         str(d / "nginx.conf")], timeout=30, what="nginx")

    def stop():
        pid = tail(d / "nginx.pid").strip()
        if pid:
            os.kill(int(pid), signal.SIGTERM)
            end = time.monotonic() + 10
            while time.monotonic() < end and Path(f"/proc/{pid}").exists():
                time.sleep(0.1)
    PROCS.add("nginx", stop)
    for port in (e.origin_port, e.proxy_port):
        wait_port(port, "nginx", logfile=d / "logs" / "error.log")
    for port, path in ((e.origin_port, "/invoices/7"), (e.proxy_port, "/invoices/7")):
        body = curl_get(f"http://127.0.0.1:{port}{path}")
        if body != JSON_BODY:
            raise BenchError(f"nginx on {port} answered {body!r}")
    log(f"nginx ready: origin {e.origin_port}, proxy_pass {e.proxy_port}; {HTTP_MIB} MiB file")


def curl_get(url: str, headers: list[str] = ()) -> str:
    cmd = ["curl", "-sS", "--fail", "--max-time", "20", url]
    for h in headers:
        cmd += ["-H", h]
    return run(cmd, timeout=30, what="curl").stdout


class Warden:
    """One Warden: a directory from `warden init`, a config, a key; `start`/`stop`."""

    def __init__(self, e: Env, name: str, durability: str) -> None:
        self.e = e
        self.name = name
        self.durability = durability
        self.dir = e.tmp / name
        self.proc: subprocess.Popen | None = None
        run([str(WARDEN), "init", str(self.dir)], timeout=30, what="warden init")
        self.write_config()
        run([str(WARDEN), "config", "check", "--config", str(self.config)], timeout=30,
            env=self.env(), what="warden config check")
        self.key = run([str(WARDEN), "keys", "create", "--config", str(self.config),
                        "--principal", "agent:bench", "--group", "agents"],
                       timeout=30, env=self.env(), what="warden keys create").stdout.strip()
        if not self.key:
            raise BenchError("warden keys create printed no key")

    @property
    def config(self) -> Path:
        return self.dir / "warden.toml"

    def write_config(self) -> None:
        self.pg_port, self.http_port, self.admin_port = free_port(), free_port(), free_port()
        self.config.write_text(f"""# bench/harness.py: evidence on, masking on.
[gateway]
data_dir = "./warden-data"
durability = "{self.durability}"

[listeners]
postgres = "127.0.0.1:{self.pg_port}"
http = "127.0.0.1:{self.http_port}"
admin = "127.0.0.1:{self.admin_port}"

[[connections]]
name = "bench"
protocol = "postgres"
upstream = "127.0.0.1:{self.e.pg_port}"
database = "bench"
user = "postgres"
password = "${{BENCH_PG_PW}}"

[[connections]]
name = "api"
protocol = "http"
upstream = "http://127.0.0.1:{self.e.origin_port}"
headers = {{ Authorization = "Bearer ${{BENCH_UPSTREAM_TOKEN}}" }}

[[rules]]
id = "agents-select"
principals = ["group:agents"]
connections = ["bench"]
sql = ["select"]
effect = "allow"

[[rules]]
id = "agents-get"
principals = ["group:agents"]
connections = ["api"]
http = ["GET /**"]
effect = "allow"

[[masking]]
connections = ["*"]
detectors = ["credit_card", "email", "us_ssn", "iban", "phone", "secret"]
operator = "partial"
""")

    def env(self) -> dict:
        env = dict(os.environ, BENCH_PG_PW=PG_PW, BENCH_UPSTREAM_TOKEN=UPSTREAM_TOKEN,
                   WARDEN_LOG=os.environ.get("WARDEN_LOG", "warn"))
        env.pop("WARDEN_CONFIG", None)
        return env

    def start(self, fresh_ports: bool = False) -> None:
        if fresh_ports:
            self.write_config()
        logf = self.dir / "serve.log"
        self.proc = subprocess.Popen([str(WARDEN), "serve", "--config", str(self.config)],
                                     cwd=self.dir, env=self.env(), stdout=subprocess.DEVNULL,
                                     stderr=open(logf, "ab"), start_new_session=True)
        p = self.proc
        PROCS.add(f"warden {self.name}", lambda: stop_popen(p))
        for port in (self.pg_port, self.http_port, self.admin_port):
            wait_port(port, f"warden {self.name}", proc=p, logfile=logf)

    def stop(self) -> None:
        if self.proc is not None:
            stop_popen(self.proc)
            self.proc = None

    def hwm_mib(self) -> float:
        assert self.proc is not None
        return hwm_kib(self.proc.pid) / 1024

    def check(self) -> None:
        r = run(["psql", f"host=127.0.0.1 port={self.pg_port} dbname=bench user=agent:bench",
                 "-X", "-qAt", "-c", "select count(*) from pgbench_branches"],
                env=pg_env(self.key), timeout=30, what=f"psql through warden {self.name}")
        if r.stdout.strip() != "5":
            raise BenchError(f"warden {self.name}: unexpected answer {r.stdout!r}")
        body = curl_get(f"http://127.0.0.1:{self.http_port}/api/invoices/7",
                        [f"Authorization: Bearer {self.key}"])
        if "ann@example.com" in body or '"id":7' not in body.replace(" ", ""):
            raise BenchError(f"warden {self.name}: JSON API answered {body!r} (expected the "
                             f"email masked)")


# ------------------------------------------------------------------------------ measurements


def pgbench(port: int, user: str, db: str, password: str, clients: int, mode: str,
            cpu_pid: int | None = None) -> dict:
    """tps and latency; with `cpu_pid`, also that process's CPU per transaction."""
    jobs = 2 if clients > 1 else 1
    cmd = ["pgbench", "-S", "-n", "-M", mode, "-c", str(clients), "-j", str(jobs), "-T",
           str(max(1, round(SECONDS))), "-h", "127.0.0.1", "-p", str(port), "-U", user, db]
    cpu0 = cpu_seconds(cpu_pid)
    r = run(cmd, env=pg_env(password), timeout=SECONDS * 3 + 60, what="pgbench")
    cpu = cpu_seconds(cpu_pid) - cpu0
    out = r.stdout
    done = re.search(r"number of transactions actually processed: (\d+)", out)
    tps = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
    lat = re.search(r"latency average = ([0-9.]+) ms", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    if not tps or not lat:
        raise BenchError(f"cannot parse pgbench output:\n{out}\n{r.stderr}")
    if failed and int(failed.group(1)) != 0:
        raise BenchError(f"pgbench reported failed transactions:\n{out}")
    res = {"tps": float(tps.group(1)), "latency_ms": float(lat.group(1))}
    if done:
        res["tx"] = int(done.group(1))
    if cpu_pid and done and int(done.group(1)) > 0 and cpu == cpu:
        res["cpu_us_per_tx"] = cpu * 1e6 / int(done.group(1))
    return res


def wrk_unit(v: str) -> float:
    """wrk latency '1.23ms' / '850.00us' / '1.02s' -> ms."""
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", v)
    if not m:
        raise BenchError(f"cannot parse wrk latency {v!r}")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]


WRK_CONNECTIONS = 32  # bench/ab.py --http-connections changes it


def wrk(url: str, headers: list[str] = (), cpu_pid: int | None = None) -> dict:
    conns = WRK_CONNECTIONS
    cmd = ["wrk", f"-t{min(2, conns)}", f"-c{conns}", f"-d{max(1, round(SECONDS))}s", "--latency", "--timeout", "5s"]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    cpu0 = cpu_seconds(cpu_pid)
    r = run(cmd, timeout=SECONDS * 3 + 60, what="wrk")
    cpu = cpu_seconds(cpu_pid) - cpu0
    out = r.stdout
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    avg = re.search(r"^\s+Latency\s+(\S+)", out, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockerr = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if not (rps and total and avg and p50 and p99):
        raise BenchError(f"cannot parse wrk output:\n{out}\n{r.stderr}")
    res = {"rps": float(rps.group(1)), "requests": int(total.group(1)),
           "latency_avg_ms": wrk_unit(avg.group(1)), "p50_ms": wrk_unit(p50.group(1)),
           "p99_ms": wrk_unit(p99.group(1)),
           "non2xx": int(non2xx.group(1)) if non2xx else 0,
           "socket_errors": sum(int(x) for x in sockerr.groups()) if sockerr else 0}
    if cpu_pid and int(total.group(1)) > 0 and cpu == cpu:
        res["cpu_us_per_req"] = cpu * 1e6 / int(total.group(1))
    return res


def wal_mib(w: "Warden") -> float:
    p = w.dir / "warden-data" / "evidence.db-wal"
    return p.stat().st_size / 2**20 if p.exists() else 0.0


def restart_case(w: "Warden") -> dict:
    """A gateway restarted on a store of BIG_RECORDS records: pgbench -S -c 8 extended in
    three back-to-back windows right after the restart, against the same gateway before it
    (when its store had just been filled). The restarted gateway verifies the whole chain
    in the background and signs its first checkpoint; this shows what that costs the data
    path."""
    per_client = max(1, BIG_RECORDS // 2 // 8)
    log(f"restart: filling a store with ~{2 * 8 * per_client} records through Warden "
        f"(pgbench -t {per_client} -c 8)")
    w.start(fresh_ports=True)
    cmd = ["pgbench", "-S", "-n", "-M", "extended", "-c", "8", "-j", "2", "-t", str(per_client),
           "-h", "127.0.0.1", "-p", str(w.pg_port), "-U", "agent:bench", "bench"]
    run(cmd, env=pg_env(w.key), timeout=BIG_RECORDS / 1000 + 600, what="pgbench (fill)")
    out: dict = {}
    pid = w.proc.pid if w.proc else None
    out["before"] = pgbench(w.pg_port, "agent:bench", "bench", w.key, 8, "extended", pid)
    out["before"]["wal_mib"] = wal_mib(w)
    w.stop()
    db = w.dir / "warden-data" / "evidence.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        out["records"] = c.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()[0]
    out["db_mib"] = (db.stat().st_size + (wal_mib(w) * 2**20)) / 2**20
    w.start()
    pid = w.proc.pid if w.proc else None
    out["after"] = []
    for _ in range(3):
        r = pgbench(w.pg_port, "agent:bench", "bench", w.key, 8, "extended", pid)
        r["wal_mib"] = wal_mib(w)
        out["after"].append(r)
        log(f"  restart window: tps={r['tps']:.0f} cpu_us_per_tx={r.get('cpu_us_per_tx', 0):.1f} "
            f"wal={r['wal_mib']:.0f} MiB")
    w.stop()
    return out


def large_select(port: int, user: str, db: str, password: str) -> dict:
    sql = LARGE_SQL.format(rows=ROWS)
    t0 = time.perf_counter()
    r = run(["psql", f"host=127.0.0.1 port={port} dbname={db} user={user}", "-X", "-At",
             "-v", "ON_ERROR_STOP=1", "-c", sql], env=pg_env(password),
            timeout=600, what="psql large select", stdout=subprocess.DEVNULL)
    secs = time.perf_counter() - t0
    del r
    return {"seconds": secs, "rows_per_s": ROWS / secs}


def download(url: str, headers: list[str] = ()) -> dict:
    cmd = ["curl", "-sS", "--fail", "--max-time", "600", "-o", "/dev/null", "-w",
           "%{http_code} %{size_download} %{time_total}", url]
    for h in headers:
        cmd += ["-H", h]
    r = run(cmd, timeout=660, what="curl download")
    code, size, secs = r.stdout.split()
    size_i, secs_f = int(size), float(secs)
    if code != "200" or size_i != HTTP_MIB << 20:
        raise BenchError(f"download {url}: status {code}, {size_i} bytes "
                         f"(expected 200, {HTTP_MIB << 20})")
    return {"seconds": secs_f, "mib_per_s": size_i / (1 << 20) / secs_f}


def ledger(durability: str, writers: int) -> dict:
    r = run([str(LEDGER_BENCH), str(LEDGER_SECONDS), "--append-only", "--durability",
             durability, "--writers", str(writers)], timeout=LEDGER_SECONDS * 4 + 120,
            what="ledger_bench")
    m = re.search(rf"^\| {durability} \| {writers} \| (\d+) \| (\d+) \|$", r.stdout, re.M)
    if not m:
        raise BenchError(f"cannot parse ledger_bench output:\n{r.stdout}")
    return {"records": int(m.group(1)), "records_per_s": float(m.group(2))}


# ------------------------------------------------------------------------------ machine


def machine() -> dict:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = ""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            mem = f"{int(line.split()[1]) / (1 << 20):.1f} GiB"

    def version(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except Exception:
            return "?"

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        except Exception:
            return "?"
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "memory": mem, "kernel": platform.release(),
        "postgres": version([str(pg_bindir() / "postgres"), "--version"]),
        "pgbouncer": version(["pgbouncer", "--version"]),
        "nginx": version(["nginx", "-v"]), "wrk": version(["wrk", "--version"]).split(" [")[0],
        "git": git("rev-parse", "--short", "HEAD") + (" (dirty tree)" if git("status", "--porcelain", "--untracked-files=no") else ""),
    }


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ------------------------------------------------------------------------------ report


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def fmt(x: float, digits: int = 0) -> str:
    if x != x:  # nan
        return "–"
    return f"{x:,.{digits}f}".replace(",", " ")


def ratio(a: float, b: float) -> str:
    if a != a or b != b or b == 0:
        return "–"
    return f"{a / b:.2f}×"


def spread(xs: list[float], digits: int = 0) -> str:
    if len(xs) < 2:
        return ""
    return f" ({fmt(min(xs), digits)}–{fmt(max(xs), digits)})"


def report(res: dict, meta: dict) -> str:
    L: list[str] = []
    L.append(f"# Warden benchmark — {meta['finished']}\n")
    m = meta["machine"]
    L.append(f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']}, Linux {m['kernel']}. "
             f"Load average (1/5/15 min) before: {meta['load_before']}, after: {meta['load_after']}.  ")
    L.append(f"Software: {m['postgres']}; {m['pgbouncer'].splitlines()[0]}; {m['nginx']}; {m['wrk']}; "
             f"Warden {m['git']} (release).  ")
    L.append(f"Settings: {meta['rounds']} interleaved rounds (median shown, min–max in "
             f"parentheses), {meta['seconds']:g} s per pgbench/wrk run, "
             f"{meta['ledger_seconds']:g} s per ledger case; wall time {meta['wall_s'] / 60:.1f} min. "
             f"PostgreSQL runs with fsync=off (all targets share it). Warden: evidence on, "
             f"masking on (6 detectors, `partial`), durability `process` unless marked `fsync`.\n")

    pg = res.get("pgbench")
    if pg:
        L.append("## pgbench -S -n (scale 5)\n")
        L.append("| clients | protocol | direct tps | pgbouncer tps | Warden tps | Warden fsync tps "
                 "| pgbouncer/direct | Warden/direct | Warden/pgbouncer | Warden fsync/pgbouncer "
                 "| latency ms direct / pgbouncer / Warden / fsync "
                 "| proxy CPU µs/tx pgbouncer / Warden / fsync |")
        L.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
        for case, t in pg.items():
            c, mode = case.split("/")
            tps = {k: med([x["tps"] for x in v]) for k, v in t.items()}
            lat = {k: med([x["latency_ms"] for x in v]) for k, v in t.items()}
            row = [c, mode]
            for k in ("direct", "pgbouncer", "warden", "warden-fsync"):
                row.append(fmt(tps.get(k, float("nan"))) + spread([x["tps"] for x in t.get(k, [])]))
            row += [ratio(tps["pgbouncer"], tps["direct"]), ratio(tps["warden"], tps["direct"]),
                    ratio(tps["warden"], tps["pgbouncer"]),
                    ratio(tps.get("warden-fsync", float("nan")), tps["pgbouncer"])]
            row.append(" / ".join(fmt(lat.get(k, float("nan")), 3)
                                  for k in ("direct", "pgbouncer", "warden", "warden-fsync")))
            row.append(" / ".join(
                fmt(med([x["cpu_us_per_tx"] for x in t.get(k, []) if "cpu_us_per_tx" in x]), 1)
                for k in ("pgbouncer", "warden", "warden-fsync")))
            L.append("| " + " | ".join(row) + " |")
        L.append("\nproxy CPU: user + system CPU time of the pgbouncer or Warden process (all "
                 "threads, Warden's evidence indexer included) divided by the transactions of "
                 "the run.\n")

    w = res.get("wrk")
    if w:
        L.append("## wrk -t2 -c32, small JSON API\n")
        L.append("| target | req/s | avg ms | p50 ms | p99 ms | non-2xx | socket errors | vs direct | vs nginx proxy_pass | CPU µs/req |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        rps = {k: med([x["rps"] for x in v]) for k, v in w.items()}
        for k, label in (("direct", "direct (nginx)"), ("nginx", "nginx proxy_pass"),
                         ("warden", "Warden")):
            v = w[k]
            L.append(f"| {label} | {fmt(rps[k])}{spread([x['rps'] for x in v])} "
                     f"| {fmt(med([x['latency_avg_ms'] for x in v]), 3)} "
                     f"| {fmt(med([x['p50_ms'] for x in v]), 3)} | {fmt(med([x['p99_ms'] for x in v]), 3)} "
                     f"| {sum(x['non2xx'] for x in v)} | {sum(x['socket_errors'] for x in v)} "
                     f"| {ratio(rps[k], rps['direct'])} | {ratio(rps[k], rps['nginx'])} "
                     f"| {fmt(med([x['cpu_us_per_req'] for x in v if 'cpu_us_per_req' in x]), 1)} |")
        L.append("\nnon-2xx and socket errors are totals over all rounds. CPU µs/req: the Warden "
                 "process's CPU time (all threads) per request; nginx's is not measured (master + "
                 "workers).\n")

    s = res.get("select")
    if s:
        L.append(f"## Large SELECT ({fmt(ROWS)} rows, 4 columns incl. an email per row; psql, text protocol)\n")
        L.append("| target | seconds | rows/s | vs direct | Warden peak RSS (VmHWM) |")
        L.append("|---|---:|---:|---:|---:|")
        secs = {k: med([x["seconds"] for x in v]) for k, v in s.items()}
        for k in ("direct", "warden"):
            v = s[k]
            rss = (f"{max(x['hwm_mib'] for x in v):.1f} MiB (max)" if k == "warden" else "–")
            L.append(f"| {k} | {secs[k]:.2f}{spread([x['seconds'] for x in v], 2)} | {fmt(ROWS / secs[k])} "
                     f"| {ratio(secs['direct'], secs[k])} | {rss} |")
        L.append("\nA fresh Warden (process durability, masking on: every email is masked) serves each run; "
                 "its VmHWM is read at the end of the run.\n")

    d = res.get("download")
    if d:
        L.append(f"## Large HTTP body ({HTTP_MIB} MiB application/octet-stream, curl -o /dev/null)\n")
        L.append("| target | seconds | MiB/s | vs direct | vs nginx proxy_pass | Warden peak RSS (VmHWM) |")
        L.append("|---|---:|---:|---:|---:|---:|")
        sp = {k: med([x["mib_per_s"] for x in v]) for k, v in d.items()}
        for k, label in (("direct", "direct (nginx)"), ("nginx", "nginx proxy_pass"),
                         ("warden", "Warden")):
            v = d[k]
            rss = (f"{max(x['hwm_mib'] for x in v):.1f} MiB (max)" if k == "warden" else "–")
            L.append(f"| {label} | {med([x['seconds'] for x in v]):.2f} | {fmt(sp[k])}{spread([x['mib_per_s'] for x in v])} "
                     f"| {ratio(sp[k], sp['direct'])} | {ratio(sp[k], sp['nginx'])} | {rss} |")
        L.append("")

    rs = res.get("restart")
    if rs:
        L.append(f"## Restart on a large store ({fmt(rs['records'])} records, "
                 f"{rs['db_mib']:.0f} MiB of SQLite incl. WAL)\n")
        L.append("| pgbench -S -c 8 extended | tps | Warden CPU µs/tx | SQLite WAL MiB after |")
        L.append("|---|---:|---:|---:|")
        b = rs["before"]
        L.append(f"| before the restart | {fmt(b['tps'])} | {fmt(b.get('cpu_us_per_tx', float('nan')), 1)} "
                 f"| {b['wal_mib']:.0f} |")
        for i, a in enumerate(rs["after"]):
            L.append(f"| after the restart, window {i + 1} ({i * SECONDS:g}–{(i + 1) * SECONDS:g} s) "
                     f"| {fmt(a['tps'])} | {fmt(a.get('cpu_us_per_tx', float('nan')), 1)} | {a['wal_mib']:.0f} |")
        L.append("\nThe restarted gateway verifies the whole chain in the background (paced: at most "
                 "a quarter of a core) and continues its Merkle frontier from the last checkpoint; its "
                 "CPU per transaction includes that work.\n")

    lg = res.get("ledger")
    if lg:
        L.append("## Ledger alone (crates/store/examples/ledger_bench, each writer awaits its commit)\n")
        L.append("| durability | writers | records/s |")
        L.append("|---|---:|---:|")
        for case, v in lg.items():
            dur, wr = case.split("/")
            L.append(f"| `{dur}` | {wr} | {fmt(med([x['records_per_s'] for x in v]))}"
                     f"{spread([x['records_per_s'] for x in v])} |")
        L.append("")
    return "\n".join(L)


# ------------------------------------------------------------------------------ main


def main() -> int:
    unknown = ONLY - ALL_CASES
    if unknown:
        raise BenchError(f"BENCH_ONLY: unknown case(s) {sorted(unknown)}; known: {sorted(ALL_CASES)}")
    for tool in ("psql", "pgbench", "curl"):
        require(tool)
    if "wrk" in ONLY:
        require("wrk")
    require("nginx")
    require("pgbouncer")
    if IS_ROOT:
        require("runuser")
    for b in (WARDEN, LEDGER_BENCH):
        if not b.exists():
            raise BenchError(f"{b} missing: run bench/run.sh (it builds the release binaries)")

    started = time.time()
    meta = {"started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(), "load_before": loadavg(), "rounds": ROUNDS,
            "seconds": SECONDS, "ledger_seconds": LEDGER_SECONDS, "rows": ROWS,
            "http_mib": HTTP_MIB, "cases": sorted(ONLY)}
    log(f"machine: {meta['machine']['nproc']} CPUs, {meta['machine']['cpu']}, "
        f"load {meta['load_before']}")
    tmp = Path(tempfile.mkdtemp(prefix="warden-bench-"))
    os.chmod(tmp, 0o755)
    log(f"temp dir {tmp}")
    PROCS.add("temp dir", lambda: None if KEEP else shutil.rmtree(tmp, ignore_errors=True))
    e = Env(tmp)
    start_postgres(e)
    start_pgbouncer(e)
    start_nginx(e)
    w = Warden(e, "warden", "process")
    wf = Warden(e, "warden-fsync", "fsync")
    wbig = Warden(e, "warden-fresh", "process")
    for x in (w, wf):
        x.start()
        x.check()
    wbig.start()
    wbig.check()
    wbig.stop()
    log(f"warden ready: process pg {w.pg_port} http {w.http_port}; fsync pg {wf.pg_port}")

    auth = [f"Authorization: Bearer {w.key}"]
    bouncer_pid = tail(tmp / "pgbouncer" / "pgbouncer.pid").strip()
    cpu_pids = {"pgbouncer": int(bouncer_pid) if bouncer_pid.isdigit() else None,
                "warden": w.proc.pid if w.proc else None,
                "warden-fsync": wf.proc.pid if wf.proc else None}
    pg_targets = {
        "direct": (e.pg_port, "postgres", "bench", PG_PW),
        "pgbouncer": (e.bouncer_port, "postgres", "bench", PG_PW),
        "warden": (w.pg_port, "agent:bench", "bench", w.key),
        "warden-fsync": (wf.pg_port, "agent:bench", "bench", wf.key),
    }
    res: dict = {k: {} for k in ONLY}

    def note(group: str, case: str, target: str, value: dict) -> None:
        res[group].setdefault(case, {}).setdefault(target, []).append(value)
        short = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in value.items())
        log(f"  {group} {case} {target}: {short}")

    for rnd in range(1, ROUNDS + 1):
        log(f"round {rnd}/{ROUNDS} (load {loadavg()})")
        if "pgbench" in ONLY:
            for clients in (1, 8):
                for mode in ("simple", "extended"):
                    for t in ("direct", "pgbouncer", "warden") + (("warden-fsync",) if clients == 1 else ()):
                        note("pgbench", f"{clients}/{mode}", t,
                             pgbench(*pg_targets[t], clients, mode, cpu_pids.get(t)))
        if "wrk" in ONLY:
            note("wrk", "json", "direct", wrk(f"http://127.0.0.1:{e.origin_port}/invoices/7"))
            note("wrk", "json", "nginx", wrk(f"http://127.0.0.1:{e.proxy_port}/invoices/7"))
            note("wrk", "json", "warden", wrk(f"http://127.0.0.1:{w.http_port}/api/invoices/7", auth,
                                              cpu_pids["warden"]))
        if "select" in ONLY:
            note("select", "1m", "direct", large_select(*pg_targets["direct"]))
            wbig.start(fresh_ports=True)
            r = large_select(wbig.pg_port, "agent:bench", "bench", wbig.key)
            r["hwm_mib"] = wbig.hwm_mib()
            wbig.stop()
            note("select", "1m", "warden", r)
        if "download" in ONLY:
            note("download", "big", "direct", download(f"http://127.0.0.1:{e.origin_port}/big.bin"))
            note("download", "big", "nginx", download(f"http://127.0.0.1:{e.proxy_port}/big.bin"))
            wbig.start(fresh_ports=True)
            r = download(f"http://127.0.0.1:{wbig.http_port}/api/big.bin",
                         [f"Authorization: Bearer {wbig.key}"])
            r["hwm_mib"] = wbig.hwm_mib()
            wbig.stop()
            note("download", "big", "warden", r)
        if "ledger" in ONLY:
            for dur in ("process", "fsync"):
                for writers in (1, 8, 64):
                    note("ledger", f"{dur}/{writers}", "ledger", ledger(dur, writers))

    if "restart" in ONLY:
        wr = Warden(e, "warden-restart", "process")
        res["restart"] = restart_case(wr)

    # Flatten the single-target groups for the report.
    if "select" in res:
        res["select"] = res["select"].get("1m", {})
    if "download" in res:
        res["download"] = res["download"].get("big", {})
    if "wrk" in res:
        res["wrk"] = res["wrk"].get("json", {})
    if "ledger" in res:
        res["ledger"] = {k: v["ledger"] for k, v in res["ledger"].items()}
    meta["load_after"] = loadavg()
    meta["finished"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta["wall_s"] = time.time() - started
    meta["warden_peak_rss_mib_after_all"] = {"warden": w.hwm_mib(), "warden-fsync": wf.hwm_mib()}
    text = report(res, meta)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "latest.md").write_text(text + "\n")
    (OUT / "latest.json").write_text(json.dumps({"meta": meta, "results": res}, indent=1) + "\n")
    print(text)
    log(f"wrote {OUT / 'latest.md'} and {OUT / 'latest.json'}")
    return 0


def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_main(main) -> None:
    """Run `main()` as a script's entry point: a BenchError or Ctrl-C/SIGTERM/SIGHUP ends
    it with a message, and everything started is stopped whatever happened."""
    # Also when started in the background by a non-interactive shell (SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    code = 1
    try:
        code = main()
    except BenchError as ex:
        log(f"FAILED: {ex}")
        code = 1
    except KeyboardInterrupt as ex:
        log(f"interrupted ({str(ex) or 'Ctrl-C'}); stopping everything")
        code = 130
    finally:
        # Ignore further Ctrl-C while stopping, so nothing is left behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        PROCS.stop_all()
    sys.exit(code)


if __name__ == "__main__":
    run_main(main)
