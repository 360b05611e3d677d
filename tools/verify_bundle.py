#!/usr/bin/env python3
"""Independent verifier for Warden evidence bundles (docs/evidence-format.md).

Written from the format document only: Python standard library + `cryptography` (Ed25519).

    python3 tools/verify_bundle.py BUNDLE.json --public-key signing.pub

Exit codes: 0 the bundle is intact, 1 it is not (the first problem is printed),
2 usage or I/O error.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FORMAT = "warden-evidence-bundle/v1"
CHECKPOINT_HEADER = "warden-checkpoint/v1"
BUNDLE_SIGNATURE_HEADER = "warden-bundle/v1"
TOP_LEVEL = {"format", "manifest", "public_key", "checkpoint", "proofs", "records",
             "prior_checkpoint", "bundle_signature"}
CHECKPOINT_FIELDS = {"tree_size", "root", "head_hash", "ts", "key_fingerprint", "signature"}


class Bad(Exception):
    """The bundle is not intact."""


class Num(str):
    """A JSON number kept exactly as written (canonical form re-emits it verbatim)."""


# ----------------------------------------------------------------------------- canonical JSON

def canonical(value, skip_top: str | None = None) -> str:
    """Keys sorted by code point (= UTF-8 byte order), no whitespace, JSON string escaping
    as `json.dumps(..., ensure_ascii=False)` (short escapes for \\b \\f \\n \\r \\t \\" \\\\,
    \\u00XX lowercase for other control characters, everything else literal)."""
    out: list[str] = []
    _emit(value, out, skip_top)
    return "".join(out)


def _emit(v, out: list[str], skip: str | None = None) -> None:
    if isinstance(v, Num):
        out.append(str(v))
    elif v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, str):
        out.append(json.dumps(v, ensure_ascii=False))
    elif isinstance(v, list):
        out.append("[")
        for i, x in enumerate(v):
            if i:
                out.append(",")
            _emit(x, out)
        out.append("]")
    elif isinstance(v, dict):
        out.append("{")
        first = True
        for k in sorted(v):
            if k == skip:
                continue
            if not first:
                out.append(",")
            first = False
            out.append(json.dumps(k, ensure_ascii=False))
            out.append(":")
            _emit(v[k], out)
        out.append("}")
    else:  # pragma: no cover - json.loads produces nothing else
        raise Bad(f"unexpected JSON value {v!r}")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- Merkle (RFC 6962/9162)

def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(leaf: bytes, index: int, size: int, path: list[bytes], root: bytes) -> bool:
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(m: int, n: int, old_root: bytes, new_root: bytes, proof: list[bytes]) -> bool:
    if m > n:
        return False
    if m == n:
        return not proof and old_root == new_root
    if m == 0:
        return not proof
    if not proof:
        return False
    path = ([old_root] if m & (m - 1) == 0 else []) + list(proof)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


# ----------------------------------------------------------------------------- helpers

def h32(x, what: str) -> bytes:
    if not isinstance(x, str) or len(x) != 64:
        raise Bad(f"{what} is not 64 hex digits")
    try:
        b = bytes.fromhex(x)
    except ValueError:
        raise Bad(f"{what} is not 64 hex digits") from None
    if x != b.hex():
        raise Bad(f"{what} is not lowercase hex")
    return b


def as_int(x, what: str) -> int:
    if not isinstance(x, Num) or not x.isdigit():
        raise Bad(f"{what} is not a non-negative integer")
    return int(x)


def ed25519_ok(key: Ed25519PublicKey, msg: bytes, sig_hex) -> bool:
    try:
        sig = bytes.fromhex(sig_hex) if isinstance(sig_hex, str) else b""
        if len(sig) != 64:
            return False
        key.verify(sig, msg)
        return True
    except (InvalidSignature, ValueError):
        return False


def check_checkpoint(cp, key: Ed25519PublicKey, fp: str, what: str) -> dict:
    if not isinstance(cp, dict) or set(cp) != CHECKPOINT_FIELDS:
        raise Bad(f"{what} is malformed")
    size = as_int(cp["tree_size"], f"{what}.tree_size")
    h32(cp["root"], f"{what}.root")
    h32(cp["head_hash"], f"{what}.head_hash")
    if cp["key_fingerprint"] != fp:
        raise Bad(f"{what} at tree_size {size} is signed by another key ({cp['key_fingerprint'][:16]})")
    text = f"{CHECKPOINT_HEADER}\n{size}\n{cp['root']}\n{cp['head_hash']}\n{cp['ts']}\n"
    if not ed25519_ok(key, text.encode(), cp["signature"]):
        raise Bad(f"{what} at tree_size {size}: the signature does not verify")
    return cp


def outside_filters(rec: dict, filters: dict) -> str | None:
    ts = rec.get("ts") or ""
    if "since" in filters and ts < filters["since"]:
        return f"ts {ts} is before {filters['since']}"
    if "until" in filters and ts >= filters["until"]:
        return f"ts {ts} is not before {filters['until']}"
    if "principal" in filters and (rec.get("principal") or {}).get("id") != filters["principal"]:
        return f"principal is not {filters['principal']}"
    if "connection" in filters and rec.get("connection") != filters["connection"]:
        return f"connection is not {filters['connection']}"
    if "kind" in filters and rec.get("kind") != filters["kind"]:
        return f"kind is not {filters['kind']}"
    return None


# ----------------------------------------------------------------------------- verification

def verify(data: bytes, public_key_hex: str) -> dict:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Bad(f"the bundle is not UTF-8: {e}") from None
    try:
        bundle = json.loads(text, parse_int=Num, parse_float=Num,
                            parse_constant=lambda c: (_ for _ in ()).throw(Bad(f"{c} is not JSON")))
    except json.JSONDecodeError as e:
        raise Bad(f"the bundle is not valid JSON: {e}") from None
    if not isinstance(bundle, dict):
        raise Bad("the bundle is not a JSON object")
    extra = set(bundle) - TOP_LEVEL
    if extra:
        raise Bad(f"unknown top-level member {sorted(extra)[0]!r}")
    if bundle.get("format") != FORMAT:
        raise Bad(f"format is not {FORMAT}")

    raw_key = h32(public_key_hex.strip(), "the public key")
    key = Ed25519PublicKey.from_public_bytes(raw_key)
    fp = sha256_hex(raw_key)
    pk = bundle.get("public_key")
    if pk != {"algorithm": "ed25519", "key": raw_key.hex(), "fingerprint": fp}:
        raise Bad(f"public_key is not the trusted key (fingerprint {fp})")

    cp = check_checkpoint(bundle.get("checkpoint"), key, fp, "checkpoint")
    size = int(cp["tree_size"])
    root = bytes.fromhex(cp["root"])

    records, proofs = bundle.get("records"), bundle.get("proofs")
    if not isinstance(records, list) or not isinstance(proofs, list):
        raise Bad("records/proofs missing")
    if len(records) != len(proofs):
        raise Bad(f"{len(records)} records but {len(proofs)} proofs")
    manifest = bundle.get("manifest")
    if not isinstance(manifest, dict):
        raise Bad("manifest missing")
    filters = manifest.get("filters") or {}
    prev = None
    contiguous = True
    for i, (rec, proof) in enumerate(zip(records, proofs)):
        if not isinstance(rec, dict):
            raise Bad(f"records[{i}] is not an object")
        seq = as_int(rec.get("seq"), f"records[{i}].seq")
        h = rec.get("hash")
        if not isinstance(h, str):
            raise Bad(f"record {seq} has no hash")
        if sha256_hex(canonical(rec, skip_top="hash").encode("utf-8")) != h:
            raise Bad(f"record {seq} was edited: its hash does not match its content")
        if not isinstance(proof, dict) or set(proof) != {"seq", "path"} or proof["seq"] != Num(str(seq)):
            raise Bad(f"proofs[{i}] is not the proof of record {seq}")
        if prev is not None:
            pseq, phash = prev
            if seq <= pseq:
                raise Bad(f"record {seq} is out of order (after {pseq})")
            if seq == pseq + 1:
                if rec.get("prev_hash") != phash:
                    raise Bad(f"record {seq}: prev_hash is not the hash of record {pseq}")
            else:
                contiguous = False
        if seq == 0 or seq > size:
            raise Bad(f"record {seq} is not covered by checkpoint {size}")
        if not isinstance(proof["path"], list):
            raise Bad(f"proof of record {seq} has no path")
        path = [h32(x, f"proof of record {seq}") for x in proof["path"]]
        leaf = leaf_hash(h32(h, f"record {seq} hash"))
        if not verify_inclusion(leaf, seq - 1, size, path, root):
            raise Bad(f"record {seq} is not included in checkpoint {size}: its inclusion proof fails")
        if seq == size and h != cp["head_hash"]:
            raise Bad(f"record {seq} is not the head the checkpoint signed")
        why = outside_filters(rec, filters)
        if why:
            raise Bad(f"record {seq} does not match the export filters: {why}")
        prev = (seq, h)

    first = int(records[0]["seq"]) if records else None
    last = int(records[-1]["seq"]) if records else None
    expect = {"record_count": len(records), "first_seq": first, "last_seq": last,
              "tree_size": size, "public_key_fingerprint": fp}
    for k, want in expect.items():
        got = manifest.get(k)
        got = int(got) if isinstance(got, Num) else got
        if got != want:
            raise Bad(f"manifest {k!r} does not match the bundle")

    prior_size = None
    if "prior_checkpoint" in bundle:
        p = bundle["prior_checkpoint"]
        if not isinstance(p, dict):
            raise Bad("prior_checkpoint is malformed")
        pc = check_checkpoint(p.get("checkpoint"), key, fp, "prior checkpoint")
        cons = p.get("consistency")
        if not isinstance(cons, list):
            raise Bad("prior_checkpoint.consistency missing")
        proof = [h32(x, "prior_checkpoint.consistency") for x in cons]
        prior_size = int(pc["tree_size"])
        if not verify_consistency(prior_size, size, bytes.fromhex(pc["root"]), root, proof):
            raise Bad(f"checkpoint {size} does not extend prior checkpoint {prior_size}: "
                      "the consistency proof fails")

    sig = bundle.get("bundle_signature")
    if (not isinstance(sig, dict) or set(sig) != {"algorithm", "key_fingerprint", "signature"}
            or sig["algorithm"] != "ed25519" or sig["key_fingerprint"] != fp):
        raise Bad("bundle_signature is missing or not by the trusted key")
    digest = sha256_hex(canonical(bundle, skip_top="bundle_signature").encode("utf-8"))
    if not ed25519_ok(key, f"{BUNDLE_SIGNATURE_HEADER}\n{digest}\n".encode(), sig["signature"]):
        raise Bad("bundle signature does not verify: the bundle was edited after it was signed")

    if (canonical(bundle) + "\n").encode("utf-8") != data:
        raise Bad("the file is not in canonical form: it was edited")
    return {"records": len(records), "first_seq": first, "last_seq": last, "tree_size": size,
            "checkpoint_ts": cp["ts"], "contiguous": contiguous, "prior_checkpoint": prior_size,
            "key_fingerprint": fp}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--public-key", required=True,
                    help="file with the 64-hex-digit Ed25519 public key (signing.pub), or the digits")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return 2 if e.code else 0
    try:
        with open(args.bundle, "rb") as f:
            data = f.read()
        if os.path.exists(args.public_key):
            with open(args.public_key, encoding="ascii") as f:
                key_hex = f.read().strip()
        else:
            key_hex = args.public_key.strip()
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        Ed25519PublicKey.from_public_bytes(h32(key_hex, "the public key"))
    except (Bad, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        result = verify(data, key_hex)
    except Bad as e:
        if args.json:
            print(json.dumps({"ok": False, "problem": str(e)}))
        else:
            print(f"FAILED: {e}")
        return 1
    if args.json:
        print(json.dumps({"ok": True, **result}))
    else:
        rng = f" (seq {result['first_seq']}..{result['last_seq']})" if result["records"] else ""
        print(f"OK: {result['records']} record(s){rng} verified against checkpoint tree_size "
              f"{result['tree_size']} signed {result['checkpoint_ts']} by key {result['key_fingerprint']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
