//! `portcullis`: the command line (SPEC §1).
#![forbid(unsafe_code)]

mod check;
mod cli;
mod demo;
mod explain;
mod keys;
mod policy;
mod serve;
mod token;

use clap::Parser;
use std::process::ExitCode;

// A request allocates a few dozen small buffers (header maps, strings, boxed
// futures); glibc malloc/free were ~17% of the instructions of plain proxying.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version to stdout (exit 0); usage errors as one line (exit 1).
        Err(e) => return cli::report_parse_error(&e),
    };
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
