"""Small helpers shared by the e2e tests."""
from __future__ import annotations

import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from conftest import wait_for


@dataclass
class Steps:
    """`n` steps run one after another on a thread of their own (see `run_until_held`)."""
    thread: threading.Thread | None = None
    done: list = field(default_factory=list)
    failed: list = field(default_factory=list)

    def join(self, n: int) -> None:
        """Wait for the rest; every step must have completed, in order."""
        assert self.thread is not None
        self.thread.join(timeout=30)
        assert not self.thread.is_alive() and not self.failed, self.failed
        assert self.done == list(range(n)), self.done


def run_until_held(step: Callable[[int], None], n: int) -> tuple[int, Steps]:
    """Run `step(0)` … `step(n - 1)` in order on a thread and wait until they stop making
    progress without an error (1.5 s without a step completing, checked within 4.5 s —
    inside the 5 s a pacing hold may last). Returns the index of the held step (that many
    completed) and the running steps, for `Steps.join` once the hold is lifted. Fails if
    a step failed, or if all completed or none was held in time."""
    steps = Steps()

    def run():
        try:
            for i in range(n):
                step(i)
                steps.done.append(i)
        except Exception as e:  # noqa: BLE001
            steps.failed.append(repr(e))

    steps.thread = threading.Thread(target=run, daemon=True)
    steps.thread.start()
    held_at, last, since = None, -1, time.monotonic()
    deadline = time.monotonic() + 4.5
    while time.monotonic() < deadline and steps.thread.is_alive():
        if len(steps.done) != last:
            last, since = len(steps.done), time.monotonic()
        elif time.monotonic() - since >= 1.5:
            held_at = len(steps.done)
            break
        time.sleep(0.05)
    assert not steps.failed, f"a step failed instead of being held: {steps.failed}"
    assert held_at is not None and steps.thread.is_alive(), (
        f"nothing was held (done: {steps.done}); a debug build is needed for the stall hook")
    assert held_at < n
    return held_at, steps


def tag() -> str:
    """A unique marker to put in statement text, so tests can find their own records."""
    return uuid.uuid4().hex[:10]


def records_with_text(w, text: str, kind: str = "action.request") -> list[dict]:
    return [r for r in w.audit(kind=kind) if (r.get("action") or {}).get("text") == text]


def one_request(w, text: str, timeout: float = 10.0) -> dict:
    recs = wait_for(lambda: records_with_text(w, text), timeout=timeout,
                    what=f"action.request for {text!r}")
    assert len(recs) == 1, f"expected exactly one action.request for {text!r}, got {recs}"
    return recs[0]


def response_for(w, request: dict, timeout: float = 10.0) -> dict:
    def find():
        return [r for r in w.audit(kind="action.response", session=request["session_id"])
                if r.get("request_id") == request["id"]]
    recs = wait_for(find, timeout=timeout, what=f"action.response for request {request['id']}")
    assert len(recs) == 1, recs
    return recs[0]


def assert_answered_and_verified(w, texts: list[str]) -> None:
    """Each of `texts` has exactly one `action.request`, answered by an `action.response`
    of status ok, and `audit verify` passes on the whole store."""
    for text in texts:
        resp = response_for(w, one_request(w, text))
        assert resp["response"]["status"] == "ok", (text, resp["response"])
    code, out = w.verify()
    assert code == 0, out


def session_records(w, session_id: str) -> list[dict]:
    return w.audit(session=session_id)


def pg_msg(tag: bytes, body: bytes) -> bytes:
    """One PostgreSQL protocol message: tag, length, body."""
    return tag + struct.pack("!i", len(body) + 4) + body


def pg_startup(user: str, db: str = "orders") -> bytes:
    """A StartupMessage asking Warden for cleartext password auth (`-c warden.auth=password`)."""
    params = (b"user\0" + user.encode() + b"\0database\0" + db.encode() + b"\0"
              b"options\0-c warden.auth=password\0\0")
    return pg_msg(b"", struct.pack("!i", 196608) + params)


def raw_login(warden, key: str, user: str = "agent:reporter", db: str = "orders") -> socket.socket:
    """A raw-socket PostgreSQL session through Warden (cleartext auth via
    `-c warden.auth=password`, loopback only), logged in and ready for a query."""
    s = socket.create_connection(("127.0.0.1", warden.port), timeout=10)
    s.sendall(pg_startup(user, db))
    buf = b""

    def frame():
        nonlocal buf
        while len(buf) < 5 or len(buf) < 1 + struct.unpack("!i", buf[1:5])[0]:
            chunk = s.recv(65536)
            assert chunk, f"closed during startup; got {buf!r}"
            buf += chunk
        n = 1 + struct.unpack("!i", buf[1:5])[0]
        f, buf = buf[:n], buf[n:]
        return f[:1], f[5:]

    tag_, body = frame()
    assert tag_ == b"R" and struct.unpack("!i", body[:4])[0] == 3, (tag_, body)  # cleartext
    s.sendall(pg_msg(b"p", key.encode() + b"\0"))
    while True:
        tag_, body = frame()
        assert tag_ != b"E", body
        if tag_ == b"Z":
            return s
