//! `warden`: the evidence gateway for AI agents. See `warden --help`.
#![forbid(unsafe_code)]

mod approvals_cmd;
mod cli;
mod config;
mod console_cfg;
mod evidence_cmd;
mod init;
mod masking_cfg;
mod serve;

use std::process::ExitCode;

use clap::Parser;

// jemalloc instead of glibc's malloc: the data path allocates and frees small buffers and
// records on several threads (glibc's arenas, `malloc_consolidate` and `_int_free` were
// ~9 % of an HTTP request's CPU). Measured: −12 % CPU per HTTP request, −3.6 % instructions
// per pgbench transaction, peak RSS of a 1 GiB download +3 MiB (mimalloc, tried before,
// added 58 MiB there). docs/benchmarks.md, "Thirteenth pass".
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
