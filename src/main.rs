//! `tessera` — one binary, one subcommand per role. See `ARCHITECTURE.md`.

mod cli;
mod config;
mod scenes;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    cli::init_tracing(cli.log_format());
    match cli.run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
