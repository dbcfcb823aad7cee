//! A run's settings ([`BotConfig`]), what a bot does once in the world
//! ([`Behaviour`]), and the account each bot uses.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_sim::rng::mix;

/// The login API a bot run uses unless told otherwise.
pub const DEFAULT_LOGIN: &str = "http://127.0.0.1:7080";
/// Most bots one run drives.
pub const MAX_BOTS: usize = 10_000;
/// Longest run, in seconds.
pub const MAX_DURATION_S: u64 = 3600;

/// What a bot does once in the world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Behaviour {
    /// Walks, changing to a random direction every 2–5 s.
    #[default]
    Wander,
    /// Wanders and says a scene (or, one time in ten, global) chat line
    /// every 4–6 s (10–15 a minute); counts the lines it receives. That is
    /// the pace of the chattiest players (a short line takes a few seconds
    /// to type), well within the gate's 30 a minute per session; a run
    /// where every bot chats so is a worst case of a crowd's fan-out.
    Chat,
    /// Logs in, enters, wanders 5–15 s, leaves, disconnects, and starts
    /// over; each completed leave is a cycle (not a drop).
    Churn,
    /// Fights: walks toward the nearest player it sees and sends the game's
    /// `Attack` action at it (its net id, `u32` little-endian, first in the
    /// payload) twice a second. Counts the game's `Hit` and `Death` events
    /// whose payload starts with its own net id as its hits and kills (see
    /// `docs/game.md`). Needs a game with an `Attack` action.
    Fight,
}

impl Behaviour {
    pub fn as_str(self) -> &'static str {
        match self {
            Behaviour::Wander => "wander",
            Behaviour::Chat => "chat",
            Behaviour::Churn => "churn",
            Behaviour::Fight => "fight",
        }
    }
}

impl fmt::Display for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Behaviour {
    type Err = BotConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "wander" => Ok(Behaviour::Wander),
            "chat" => Ok(Behaviour::Chat),
            "churn" => Ok(Behaviour::Churn),
            "fight" => Ok(Behaviour::Fight),
            other => Err(BotConfigError::Behaviour(other.to_owned())),
        }
    }
}

/// A bad [`BotConfig`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BotConfigError {
    #[error("--count must be between 1 and {MAX_BOTS}, not {0}")]
    Count(usize),
    #[error("--duration must be between 1 and {MAX_DURATION_S} seconds, not {0}")]
    Duration(u64),
    #[error("--warmup must be between 0 and {MAX_DURATION_S} seconds, not {0}")]
    Warmup(u64),
    #[error("--login {url:?} is not a usable URL: {why}")]
    Url { url: String, why: &'static str },
    #[error("unknown behaviour {0:?} (wander, chat, churn or fight)")]
    Behaviour(String),
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("the first account index plus the count must fit in a u32")]
    Index,
    #[error("--loss must be between 0 and 1, not {0}")]
    Loss(String),
}

/// Settings for a bot run. Build with [`BotConfig::new`] (which validates);
/// the tuning fields may then be changed ([`run`](super::run()) validates
/// again).
#[derive(Clone, Debug)]
pub struct BotConfig {
    /// How many bots (1 ..= [`MAX_BOTS`]).
    pub count: usize,
    /// The login API's base URL, `http://host:port` (no trailing slash).
    pub login: String,
    /// How long the bots play once every bot has entered or failed.
    pub duration: Duration,
    pub behaviour: Behaviour,
    /// Bots use accounts `first_index .. first_index + count`. Default 0.
    pub first_index: usize,
    /// Most bots in the login phase at once (each costs the server a password
    /// hash or two). Default 100.
    pub logins_in_flight: usize,
    /// Inputs per second per bot. Default 10.
    pub input_hz: u32,
    /// Timeout of one HTTP request. Default 10 s.
    pub request_timeout: Duration,
    /// How long a bot may take from its first login request to a login token,
    /// retries and queueing included. Default 120 s.
    pub login_timeout: Duration,
    /// How long a bot may take from the token to `Entered`. Default 30 s.
    pub enter_timeout: Duration,
    /// How often `GET /v1/status` is sampled. Default 1 s.
    pub status_interval: Duration,
    /// Time between the last bot entering (or failing) and the measured
    /// period, whole seconds: round trips then go to `rtt_ms_warmup`. The
    /// login storm's password hashing leaves queues behind that take a few
    /// seconds to drain; the measured period is the steady state after.
    /// Default 10 s; 0 measures from the last entry.
    pub warmup: Duration,
    /// Seed of the bots' random choices (directions, timings), reported as
    /// `seed`. Default: from the clock, so runs differ. Avatars are stored
    /// where they stop, so a fixed seed walks every bot the same way run
    /// after run and a reused world drifts into its corners, where the
    /// crowds make each run heavier than the last. Set it to repeat a run's
    /// choices.
    pub seed: u64,
    /// The chance each datagram a bot receives is dropped (seeded by `seed`
    /// and the bot's index). Default 0.
    pub loss: f32,
    /// The admin API, for the scene snapshots the view check needs;
    /// without it the report's `view` is absent. Default none.
    pub admin: Option<AdminAccess>,
    /// The game the bots play: its protocol hash goes with every login, and
    /// its replicated components are read from the state packets. Default:
    /// the default game.
    pub game: tessera_proto::GameSchema,
}

/// Where the coordinator's admin API is and the token it takes.
#[derive(Clone)]
pub struct AdminAccess {
    /// Base URL, `http://host:port` (see [`normalize_login_url`]).
    pub url: String,
    /// The admin token (never the cluster secret).
    pub token: String,
}

impl std::fmt::Debug for AdminAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAccess")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A seed that differs from run to run (the clock, mixed).
pub fn seed_from_clock() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    mix(nanos, u64::from(std::process::id()), 3)
}

impl BotConfig {
    /// A validated configuration with default tuning.
    pub fn new(
        count: usize,
        login: &str,
        duration_s: u64,
        behaviour: Behaviour,
    ) -> Result<Self, BotConfigError> {
        let config = Self {
            count,
            login: normalize_login_url(login)?,
            duration: Duration::from_secs(duration_s),
            behaviour,
            first_index: 0,
            logins_in_flight: 100,
            input_hz: 10,
            request_timeout: Duration::from_secs(10),
            login_timeout: Duration::from_secs(120),
            enter_timeout: Duration::from_secs(30),
            status_interval: Duration::from_secs(1),
            warmup: Duration::from_secs(10),
            seed: seed_from_clock(),
            loss: 0.0,
            admin: None,
            game: tessera_proto::GameSchema::new("default"),
        };
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), BotConfigError> {
        self.validate_sizes()?;
        normalize_login_url(&self.login)?;
        self.validate_tuning()
    }

    /// The count, the period and the warm-up.
    fn validate_sizes(&self) -> Result<(), BotConfigError> {
        if !(1..=MAX_BOTS).contains(&self.count) {
            return Err(BotConfigError::Count(self.count));
        }
        let secs = self.duration.as_secs();
        if !(1..=MAX_DURATION_S).contains(&secs) || self.duration.subsec_nanos() != 0 {
            return Err(BotConfigError::Duration(secs));
        }
        let warmup = self.warmup.as_secs();
        if warmup > MAX_DURATION_S || self.warmup.subsec_nanos() != 0 {
            return Err(BotConfigError::Warmup(warmup));
        }
        Ok(())
    }

    /// The rates and timeouts (none zero) and the account range.
    fn validate_tuning(&self) -> Result<(), BotConfigError> {
        if self.logins_in_flight == 0 {
            return Err(BotConfigError::Zero("logins in flight"));
        }
        if self.input_hz == 0 {
            return Err(BotConfigError::Zero("input rate"));
        }
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(BotConfigError::Loss(self.loss.to_string()));
        }
        for (name, d) in [
            ("request timeout", self.request_timeout),
            ("login timeout", self.login_timeout),
            ("enter timeout", self.enter_timeout),
            ("status interval", self.status_interval),
        ] {
            if d.is_zero() {
                return Err(BotConfigError::Zero(name));
            }
        }
        if self
            .first_index
            .checked_add(self.count)
            .is_none_or(|end| u32::try_from(end).is_err())
        {
            return Err(BotConfigError::Index);
        }
        Ok(())
    }
}

/// Checks a login base URL and returns it without a trailing slash: plain
/// `http` (the client speaks no TLS), a host, no path, query or fragment.
pub fn normalize_login_url(url: &str) -> Result<String, BotConfigError> {
    let bad = |why| BotConfigError::Url {
        url: url.to_owned(),
        why,
    };
    let trimmed = url.trim().trim_end_matches('/');
    let uri: hyper::Uri = trimmed.parse().map_err(|_| bad("does not parse"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(_) => return Err(bad("only http:// is supported")),
        None => return Err(bad("needs a scheme, e.g. http://127.0.0.1:7080")),
    }
    let Some(authority) = uri.authority() else {
        return Err(bad("needs a host"));
    };
    if authority.host().is_empty() {
        return Err(bad("needs a host"));
    }
    if authority.as_str().contains('@') {
        return Err(bad("must not carry credentials"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() || trimmed.contains('#') {
        return Err(bad("must be a base URL without a path, query or fragment"));
    }
    Ok(format!("http://{authority}"))
}

/// The email of bot `i`.
pub fn bot_email(i: usize) -> String {
    format!("bot{i}@bots.tessera.test")
}

/// The password of bot `i` (long enough, not the email).
pub fn bot_password(i: usize) -> String {
    format!("bot-password-{i}-tessera")
}

/// The avatar name bot `i` creates when its account has none.
pub fn bot_avatar_name(i: usize) -> String {
    format!("Bot{i}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_the_bad_argument() {
        let ok = BotConfig::new(1, DEFAULT_LOGIN, 60, Behaviour::Wander).expect("valid");
        assert_eq!(ok.login, "http://127.0.0.1:7080");
        assert!(BotConfig::new(MAX_BOTS, "http://h:1/", 3600, Behaviour::Churn).is_ok());
        assert_eq!(
            BotConfig::new(0, DEFAULT_LOGIN, 60, Behaviour::Wander).err(),
            Some(BotConfigError::Count(0))
        );
        assert_eq!(
            BotConfig::new(MAX_BOTS + 1, DEFAULT_LOGIN, 60, Behaviour::Wander).err(),
            Some(BotConfigError::Count(MAX_BOTS + 1))
        );
        assert_eq!(
            BotConfig::new(1, DEFAULT_LOGIN, 0, Behaviour::Wander).err(),
            Some(BotConfigError::Duration(0))
        );
        assert_eq!(
            BotConfig::new(1, DEFAULT_LOGIN, 3601, Behaviour::Wander).err(),
            Some(BotConfigError::Duration(3601))
        );
        let msg = BotConfig::new(0, DEFAULT_LOGIN, 60, Behaviour::Wander)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("--count") && msg.contains("10000"), "{msg}");
        assert_eq!("churn".parse::<Behaviour>(), Ok(Behaviour::Churn));
        assert!("dance".parse::<Behaviour>().is_err());
    }

    #[test]
    fn tuning_is_validated_again() {
        let ok = BotConfig::new(1, DEFAULT_LOGIN, 60, Behaviour::Wander).expect("valid");
        let mut long_warmup = ok.clone();
        long_warmup.warmup = Duration::from_secs(3601);
        assert_eq!(
            long_warmup.validate().err(),
            Some(BotConfigError::Warmup(3601))
        );
        let mut no_warmup = ok.clone();
        no_warmup.warmup = Duration::ZERO;
        assert!(no_warmup.validate().is_ok());
        let mut tuned = ok.clone();
        tuned.logins_in_flight = 0;
        assert_eq!(
            tuned.validate(),
            Err(BotConfigError::Zero("logins in flight"))
        );
        let mut far = ok;
        far.first_index = u32::MAX as usize;
        assert_eq!(far.validate(), Err(BotConfigError::Index));
    }

    #[test]
    fn login_url_is_a_plain_http_base() {
        for bad in [
            "",
            "127.0.0.1:7080",
            "https://127.0.0.1:7080",
            "ftp://x",
            "http://",
            "http://h:1/v1/login",
            "http://h:1/?q=1",
            "http://user:pw@h:1",
            "http://h:1#frag",
            "not a url",
        ] {
            let err = normalize_login_url(bad);
            assert!(
                matches!(err, Err(BotConfigError::Url { .. })),
                "{bad:?} accepted: {err:?}"
            );
        }
        assert_eq!(
            normalize_login_url(" http://[::1]:7080/ ").as_deref(),
            Ok("http://[::1]:7080")
        );
    }

    #[test]
    fn bot_credentials_pass_the_account_rules() {
        use tessera_persistence::validate::{check_avatar_name, check_password, normalize_email};
        for i in [0, 7, 9_999, 123_456] {
            let email = normalize_email(&bot_email(i)).expect("valid email");
            check_password(&bot_password(i), &email).expect("valid password");
            assert!(!bot_password(i).contains(&format!("bot{i}@")));
            check_avatar_name(&bot_avatar_name(i)).expect("valid avatar name");
        }
    }
}
