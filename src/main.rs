//! `tessera` — one binary, one subcommand per role, running the engine's
//! default game. See `ARCHITECTURE.md`; a game's own binary is the same
//! line with its game (`src/lib.rs`).

use std::process::ExitCode;

fn main() -> ExitCode {
    tessera::run(tessera::DefaultGame)
}
