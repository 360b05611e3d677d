"""End-to-end harness for Warden's PostgreSQL gateway.

Session fixtures:
- ``pg``: a throw-away PostgreSQL cluster (initdb + postgres from /usr/lib/postgresql/*/bin)
  with database ``orders``, role ``orders_app``, table ``items`` (1000 rows) and ``big``.
- ``warden``: a Warden gateway (``warden serve``) in front of it, with keys for
  ``agent:reporter`` (group agents), ``user:dana`` (group dba), ``agent:outsider`` (no
  groups), and helpers to run psql, query the evidence ledger and verify the chain.

Nothing is skipped: a missing tool fails loudly.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WARDEN_BIN = Path(os.environ.get("WARDEN_BIN", REPO / "target" / "debug" / "warden"))
PG_PROBE_BIN = Path(
    os.environ.get("PG_PROBE_BIN", REPO / "target" / "debug" / "examples" / "pg_probe")
)
ORDERS_PW = "orders-app-pw-7f3a"
SUPER_PW = "super-pw-91c2"
IS_ROOT = os.geteuid() == 0


# --------------------------------------------------------------------------- utilities


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None,
              log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            text = log.read_text() if log and log.exists() else ""
            raise RuntimeError(f"process exited with {proc.returncode} before listening:\n{text}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    text = log.read_text() if log and log.exists() else ""
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s\n{text}")


def require_tool(path: str | Path) -> str:
    p = shutil.which(str(path)) if not os.path.isabs(str(path)) else str(path)
    if not p or not os.path.exists(p):
        raise RuntimeError(f"required tool {path} is missing; install it (the e2e suite skips nothing)")
    return p


def wait_for(pred, timeout: float = 10.0, interval: float = 0.2, what: str = "condition"):
    """Poll ``pred`` until it returns a truthy value; return that value or fail."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def pg_bindir() -> Path:
    dirs = glob.glob("/usr/lib/postgresql/*/bin")
    if not dirs:
        raise RuntimeError("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin "
                           "(apt-get install postgresql)")
    dirs.sort(key=lambda d: int(Path(d).parent.name) if Path(d).parent.name.isdigit() else 0)
    return Path(dirs[-1])


def as_pg_user(cmd: list[str]) -> list[str]:
    return (["runuser", "-u", "postgres", "--"] + cmd) if IS_ROOT else cmd


# --------------------------------------------------------------------------- PostgreSQL


@dataclass
class Postgres:
    port: int
    datadir: Path
    tmp: Path
    bindir: Path

    def admin_psql(self, sql: str, db: str = "postgres") -> str:
        env = dict(os.environ, PGPASSWORD=SUPER_PW)
        env.pop("PGOPTIONS", None)
        r = subprocess.run(
            ["psql", f"host=127.0.0.1 port={self.port} dbname={db} user=postgres",
             "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
            env=env, capture_output=True, text=True, timeout=60,
        )
        if r.returncode != 0:
            raise RuntimeError(f"admin psql failed ({r.returncode}): {r.stderr}")
        return r.stdout


@pytest.fixture(scope="session")
def pg():
    require_tool("psql")
    bindir = pg_bindir()
    for tool in ("initdb", "pg_ctl"):
        require_tool(bindir / tool)
    if IS_ROOT:
        require_tool("runuser")
    tmp = Path(tempfile.mkdtemp(prefix="warden-e2e-pg-"))
    datadir = tmp / "data"
    pwfile = tmp / "pwfile"
    pwfile.write_text(SUPER_PW + "\n")
    if IS_ROOT:
        shutil.chown(tmp, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
        os.chmod(tmp, 0o755)
    r = subprocess.run(
        as_pg_user([str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres",
                    "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                    "--no-sync"]),
        capture_output=True, text=True, timeout=120,
    )
    if r.returncode != 0:
        raise RuntimeError(f"initdb failed: {r.stdout}\n{r.stderr}")
    port = free_port()
    log = tmp / "postgres.log"
    if IS_ROOT:
        log.touch()
        shutil.chown(log, "postgres", "postgres")
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {tmp} -c fsync=off"
    r = subprocess.run(
        as_pg_user([str(bindir / "pg_ctl"), "-D", str(datadir), "-l", str(log), "-o", opts,
                    "-w", "-t", "60", "start"]),
        capture_output=True, text=True, timeout=90,
    )
    if r.returncode != 0:
        raise RuntimeError(f"pg_ctl start failed: {r.stdout}\n{r.stderr}\n{log.read_text()}")
    p = Postgres(port=port, datadir=datadir, tmp=tmp, bindir=bindir)
    try:
        wait_port(port)
        p.admin_psql(f"create role orders_app login password '{ORDERS_PW}'")
        p.admin_psql("create database orders owner orders_app")
        p.admin_psql(
            "create table items(id int primary key, name text, price numeric);"
            "insert into items select g, 'item-' || g, (g % 100) + 0.5 "
            "from generate_series(1, 1000) g;"
            "create table big(id int, payload text);"
            "grant all on all tables in schema public to orders_app;"
            "alter table items owner to orders_app; alter table big owner to orders_app;",
            db="orders",
        )
        yield p
    finally:
        subprocess.run(
            as_pg_user([str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"]),
            capture_output=True, text=True, timeout=60,
        )
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- Warden


RULES = """
[[rules]]
id = "agents-read"
principals = ["group:agents"]
connections = ["orders"]
sql = ["select"]
effect = "allow"

[[rules]]
id = "agents-write"
principals = ["group:agents"]
connections = ["orders"]
sql = ["insert", "update"]
effect = "allow"

[[rules]]
id = "no-deletes"
principals = ["*"]
connections = ["orders"]
sql = ["delete"]
effect = "deny"

[[rules]]
id = "dba-all"
principals = ["group:dba"]
connections = ["*"]
sql = ["*"]
effect = "allow"

[[rules]]
id = "agents-broken"
principals = ["group:agents"]
connections = ["broken"]
sql = ["select"]
effect = "allow"
"""


def write_config(dirpath: Path, pg_port: int, listen_port: int, broken_port: int,
                 extra: str = "", admin_port: int | None = None) -> Path:
    cfg = dirpath / "warden.toml"
    cfg.write_text(f"""
[gateway]
data_dir = "./data"

[listeners]
postgres = "127.0.0.1:{listen_port}"
admin = "127.0.0.1:{admin_port if admin_port is not None else free_port()}"
{extra}
[[connections]]
name = "orders"
protocol = "postgres"
upstream = "127.0.0.1:{pg_port}"
database = "orders"
user = "orders_app"
password = "${{ORDERS_PW}}"

[[connections]]
name = "broken"
protocol = "postgres"
upstream = "127.0.0.1:{broken_port}"
database = "orders"
user = "orders_app"
password = "${{ORDERS_PW}}"
{RULES}
""")
    return cfg


def warden_env() -> dict:
    env = dict(os.environ, ORDERS_PW=ORDERS_PW)
    env.pop("PGOPTIONS", None)
    env.pop("WARDEN_CONFIG", None)
    return env


def run_warden(args: list[str], timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
    require_tool(WARDEN_BIN)
    r = subprocess.run([str(WARDEN_BIN)] + args, env=warden_env(), capture_output=True,
                       text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"warden {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


@dataclass
class KeyInfo:
    secret: str
    id: str
    principal: str


@dataclass
class Warden:
    config: Path
    port: int
    proc: subprocess.Popen
    log: Path
    tmp: Path
    keys: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    # ---- keys
    def create_key(self, principal: str, groups: list[str] = ()) -> KeyInfo:
        args = ["keys", "create", "--config", str(self.config), "--principal", principal]
        for g in groups:
            args += ["--group", g]
        r = run_warden(args, check=True)
        lines = r.stdout.splitlines()
        assert len(lines) == 1 and r.stdout.endswith("\n"), f"stdout must be the key only: {r.stdout!r}"
        secret = lines[0]
        assert secret.startswith("wk_"), secret
        assert secret not in r.stderr, "the key must not be echoed on stderr"
        # "created key <id> for <principal>..." on stderr
        words = r.stderr.split()
        kid = words[words.index("key") + 1]
        return KeyInfo(secret=secret, id=kid, principal=principal)

    # ---- clients
    def conninfo(self, user: str, db: str = "orders", extra: str = "") -> str:
        return f"host=127.0.0.1 port={self.port} dbname={db} user={user} {extra}".strip()

    def psql(self, sql: str | None, key: str, user: str = "agent:reporter", db: str = "orders",
             pgoptions: str | None = None, extra_args: list[str] = (), extra_conn: str = "",
             timeout: float = 120, stdin: str | None = None) -> subprocess.CompletedProcess:
        env = dict(os.environ, PGPASSWORD=key, PGCONNECT_TIMEOUT="10")
        env.pop("PGOPTIONS", None)
        env.pop("PGSSLMODE", None)
        if pgoptions is not None:
            env["PGOPTIONS"] = pgoptions
        args = ["psql", self.conninfo(user, db, extra_conn), "-X", "-v", "ON_ERROR_STOP=1", "-At"]
        if sql is not None:
            args += ["-c", sql]
        args += list(extra_args)
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout,
                              input=stdin)

    def connect(self, key_name: str = "reporter", **kw):
        import psycopg
        k = self.keys[key_name]
        return psycopg.connect(host="127.0.0.1", port=self.port, dbname=kw.pop("dbname", "orders"),
                               user=k.principal, password=k.secret, connect_timeout=10, **kw)

    # ---- evidence
    def audit(self, kind: str | None = None, session: str | None = None,
              principal: str | None = None) -> list[dict]:
        args = ["audit", "query", "--config", str(self.config), "--format", "json"]
        if kind:
            args += ["--kind", kind]
        if session:
            args += ["--session", session]
        if principal:
            args += ["--principal", principal]
        r = run_warden(args, check=True)
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def verify(self, config: Path | None = None) -> tuple[int, str]:
        r = run_warden(["audit", "verify", "--config", str(config or self.config)])
        return r.returncode, r.stdout + r.stderr

    def alive(self) -> bool:
        return self.proc.poll() is None

    def vm_hwm_kb(self) -> int:
        return _status_kb(self.pid, "VmHWM")

    def vm_rss_kb(self) -> int:
        return _status_kb(self.pid, "VmRSS")


def _status_kb(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field_name} not in /proc/{pid}/status")


def start_warden(cfg: Path, port: int, tmp: Path, name: str = "warden") -> tuple[subprocess.Popen, Path]:
    require_tool(WARDEN_BIN)
    log = tmp / f"{name}.log"
    fh = open(log, "wb")
    proc = subprocess.Popen([str(WARDEN_BIN), "serve", "--config", str(cfg)], env=warden_env(),
                            stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                            cwd=str(tmp))
    fh.close()
    try:
        wait_port(port, timeout=30, proc=proc, log=log)
    except Exception:
        proc.kill()
        proc.wait()
        raise
    return proc, log


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def warden(pg):
    tmp = Path(tempfile.mkdtemp(prefix="warden-e2e-gw-"))
    port = free_port()
    broken_port = free_port()  # nothing listens there
    cfg = write_config(tmp, pg.port, port, broken_port)
    r = run_warden(["config", "check", "--config", str(cfg)])
    assert r.returncode == 0, f"the e2e config must be valid:\n{r.stdout}{r.stderr}"
    w = Warden(config=cfg, port=port, proc=None, log=tmp / "warden.log", tmp=tmp)  # type: ignore[arg-type]
    w.keys["reporter"] = w.create_key("agent:reporter", ["agents"])
    w.keys["dana"] = w.create_key("user:dana", ["dba"])
    w.keys["outsider"] = w.create_key("agent:outsider")
    w.proc, w.log = start_warden(cfg, port, tmp)
    try:
        yield w
    finally:
        stop_process(w.proc)
        print(f"\n--- warden log tail ({w.log}) ---\n" + w.log.read_text()[-3000:])
        shutil.rmtree(tmp, ignore_errors=True)
