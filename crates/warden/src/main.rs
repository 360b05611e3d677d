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
