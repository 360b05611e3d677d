#!/usr/bin/env bash
# Warden end-to-end benchmark (issue 7): one command from a fresh clone.
#
#   bench/run.sh                                   # ~15 min on 2 cores with the defaults
#   BENCH_SECONDS=3 BENCH_ROUNDS=1 bench/run.sh    # quick smoke run
#
# Builds the release binaries, then bench/harness.py starts its own PostgreSQL, pgbouncer,
# nginx and Warden on loopback (free ports, one temp dir) and runs pgbench / wrk / a 1M-row
# SELECT / a 1 GiB download / the ledger alone, interleaved, printing the table of ratios
# and writing bench/results/latest.md + latest.json. See the docstring of bench/harness.py
# for the knobs (BENCH_SECONDS, BENCH_ROUNDS, BENCH_ONLY, ...) and docs/benchmarks.md.
#
# Needs (Debian/Ubuntu): apt-get install -y postgresql pgbouncer nginx-light wrk curl
# (postgresql-client for psql/pgbench), python3, and a Rust toolchain. Not run by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for t in python3 psql pgbench pgbouncer nginx wrk curl cargo; do
  command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=("initdb (postgresql)")
if ((${#missing[@]})); then
  echo "bench/run.sh: missing: ${missing[*]}" >&2
  echo "  apt-get install -y postgresql pgbouncer nginx-light wrk curl" >&2
  exit 1
fi

if [[ "${BENCH_SKIP_BUILD:-}" != 1 ]]; then
  echo "[bench] cargo build --release (warden, ledger_bench)" >&2
  cargo build --release -p warden --bin warden >&2
  cargo build --release -p warden-store --example ledger_bench >&2
fi

# The harness stops everything it started on exit, error, Ctrl-C and SIGTERM; exec so that
# signals reach it directly.
exec python3 bench/harness.py "$@"
