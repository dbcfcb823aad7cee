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
