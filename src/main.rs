//! `tessera` — one binary, one subcommand per role. See `ARCHITECTURE.md`.

mod cli;
mod config;
mod scenes;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    cli::init_tracing();
    let cli = cli::Cli::parse();
    match cli.run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
