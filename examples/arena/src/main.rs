//! `arena`: the whole `tessera` command line, playing the arena.

use std::process::ExitCode;

fn main() -> ExitCode {
    tessera::run(tessera_arena::Arena)
}
