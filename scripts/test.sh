#!/usr/bin/env bash
# Runs every test: formatting, lints, unit + property tests, and the end-to-end suites
# against throw-away PostgreSQL servers with real clients (psql, psycopg, tokio-postgres).
# Needs: a Rust toolchain, python3 (with venv), PostgreSQL server binaries, psql, openssl.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build (binary and test clients)"
cargo build --workspace --bins --examples

step "cargo test (unit and property tests)"
cargo test --workspace

step "python test environment (.venv, pinned in tests/requirements.txt)"
if [ ! -x .venv/bin/pytest ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt

step "end-to-end tests (real PostgreSQL and HTTP servers; psql, psycopg, tokio-postgres, curl, httpx, openai; the console in headless chromium)"
target="${CARGO_TARGET_DIR:-$PWD/target}"
WARDEN_BIN="$target/debug/warden" \
PG_PROBE_BIN="$target/debug/examples/pg_probe" \
JWT_MINT_BIN="$target/debug/examples/jwt_mint" \
  .venv/bin/pytest -q -p no:cacheprovider tests/e2e
