//! `tessera` as a library: the whole command line, run for one game.
//!
//! A game crate's binary is one line, and every subcommand (`up`, `scene`,
//! `sim`, `bots`, …) then runs that game:
//!
//! ```no_run
//! use std::process::ExitCode;
//!
//! struct MyGame;
//!
//! impl tessera::Game for MyGame {
//!     fn name(&self) -> &'static str {
//!         "my-game"
//!     }
//!     fn build(&self, world: tessera::SceneWorldBuilder) -> tessera::SceneWorldBuilder {
//!         world // .add_plugins(MyPlugin)
//!     }
//! }
//!
//! fn main() -> ExitCode {
//!     tessera::run(MyGame)
//! }
//! ```

mod cli;
mod config;
mod scenes;

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

pub use bevy_app;
pub use bevy_ecs;
pub use tessera_sim as sim;
pub use tessera_sim::{BuildError, DefaultGame, Game, GameSystems, SceneWorldBuilder};

/// Parses the command line from [`std::env::args_os`] and runs the chosen
/// subcommand with `game`: the `main` of a game's binary.
pub fn run(game: impl Game) -> ExitCode {
    run_with_args(Arc::new(game), std::env::args_os())
}

/// [`run`] with the command line given (`args[0]` is the program name):
/// prints the usage or the error and returns the exit code (2 for bad
/// arguments or a failed command), as the binary does.
pub fn run_with_args<I, T>(game: Arc<dyn Game>, args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            // `--help` and `--version` are "errors" printed to stdout, exit 0.
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
    };
    cli::init_tracing(cli.log_format());
    match cli.run(game) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, `a: b: c`, each cause once: many
/// errors name their cause in their own message too ("cannot listen on
/// ADDR: Address already in use"), and printing the chain as well would
/// say it twice.
fn one_line(err: &anyhow::Error) -> String {
    let mut out = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !out.ends_with(&cause) {
            out.push_str(": ");
            out.push_str(&cause);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::one_line;

    /// An error that names its source in its message, as many do.
    #[derive(Debug)]
    struct Bind(std::io::Error);

    impl std::fmt::Display for Bind {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot listen on 127.0.0.1:7000: {}", self.0)
        }
    }

    impl std::error::Error for Bind {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let err = anyhow::Error::new(Bind(io)).context("tessera up");
        assert_eq!(
            one_line(&err),
            "tessera up: cannot listen on 127.0.0.1:7000: Address already in use"
        );
        let plain = anyhow::anyhow!("no such scene").context("loading");
        assert_eq!(one_line(&plain), "loading: no such scene");
    }
}
