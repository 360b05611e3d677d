"""Small helpers shared by the e2e tests."""
from __future__ import annotations

import uuid

from conftest import wait_for


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


def session_records(w, session_id: str) -> list[dict]:
    return w.audit(session=session_id)
