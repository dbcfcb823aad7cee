//! A bot's way in over HTTP: `POST /v1/login`, registering the account the
//! first time (`/v1/register`), waiting in the login queue
//! (`/v1/login/poll`), and backing off when the server says so.

use std::time::Duration;

use tessera_proto::client::CLIENT_PROTOCOL;
use tessera_proto::login::{
    LoginRequest, LoginResponse, PollRequest, RegisterRequest, RegisterResponse,
};
use tessera_sim::rng::mix;

use super::config::{bot_avatar_name, bot_email, bot_password};
use super::shared::{RunShared, add};
use crate::http_client::HttpError;

/// What a successful login gives.
pub(super) struct Admitted {
    /// The gate's connect token, hex.
    pub(super) token: String,
}

/// How a connect attempt failed.
pub(super) enum Failure {
    /// The run stopped meanwhile: not the bot's fault.
    Stopped,
    Reason(String),
}

/// Pause before retrying: the server's hint, else 250 ms doubling to 4 s,
/// with ±25 % jitter so retries do not arrive in lockstep.
fn backoff(hint_ms: Option<u64>, attempt: u32, jitter: u64) -> Duration {
    let base = hint_ms
        .unwrap_or_else(|| 250u64.saturating_mul(1 << attempt.min(4)))
        .clamp(50, 10_000);
    let spread = base / 2;
    let offset = if spread == 0 { 0 } else { jitter % spread };
    Duration::from_millis(base - base / 4 + offset)
}

/// The retries of one request: each pause is [`backoff`] for the next
/// attempt, jittered by the bot's own bits.
struct Retries {
    jitter: u64,
    attempt: u32,
}

impl Retries {
    fn new(jitter: u64) -> Self {
        Self { jitter, attempt: 0 }
    }

    /// The pause before the next attempt (`hint`: the server's, if it gave
    /// one).
    fn next_pause(&mut self, hint: Option<u64>) -> Duration {
        let pause = backoff(hint, self.attempt, self.jitter.rotate_left(self.attempt));
        self.attempt += 1;
        pause
    }
}

/// Logs bot `index` in: registers its account on the first `401`, retries
/// what the server says is worth retrying, and waits in the queue if it is
/// queued.
pub(super) async fn login(shared: &RunShared, index: usize) -> Result<Admitted, Failure> {
    let email = bot_email(index);
    let password = bot_password(index);
    let request = LoginRequest {
        email: Some(email.clone()),
        password: Some(password.clone()),
        resume_key: None,
        client_version: CLIENT_PROTOCOL,
    };
    let jitter = mix(shared.config.seed, index as u64, 1);
    let mut retries = Retries::new(jitter);
    let mut registered = false;
    let answer = loop {
        match shared
            .http
            .post::<_, LoginResponse>("/v1/login", &request)
            .await
        {
            Ok(answer) => break answer,
            Err(HttpError::Api { status: 401, .. }) if !registered => {
                register(shared, index, &email, &password).await?;
                registered = true;
            }
            Err(e) => match e.retry() {
                Some(hint) => tokio::time::sleep(retries.next_pause(hint)).await,
                None => return Err(Failure::Reason(format!("login: {}", e.reason()))),
            },
        }
    };
    match answer {
        LoginResponse::Ok { token, .. } => Ok(Admitted { token }),
        LoginResponse::Queued {
            ticket, poll_ms, ..
        } => poll(shared, ticket, poll_ms, jitter).await,
    }
}

/// Registers bot `index`'s account; one that already exists (`409`) is
/// fine.
async fn register(
    shared: &RunShared,
    index: usize,
    email: &str,
    password: &str,
) -> Result<(), Failure> {
    let request = RegisterRequest {
        email: email.to_owned(),
        password: password.to_owned(),
        nickname: Some(bot_avatar_name(index)),
    };
    let mut retries = Retries::new(mix(shared.config.seed, index as u64, 2));
    loop {
        match shared
            .http
            .post::<_, RegisterResponse>("/v1/register", &request)
            .await
        {
            Ok(_) => {
                add(&shared.n.registered, 1);
                return Ok(());
            }
            Err(HttpError::Api { status: 409, .. }) => return Ok(()),
            Err(e) => match e.retry() {
                Some(hint) => tokio::time::sleep(retries.next_pause(hint)).await,
                None => return Err(Failure::Reason(format!("register: {}", e.reason()))),
            },
        }
    }
}

/// Polls the login queue with `ticket` until the token comes, at the pace
/// the server asks for.
async fn poll(
    shared: &RunShared,
    ticket: String,
    poll_ms: u64,
    jitter: u64,
) -> Result<Admitted, Failure> {
    let request = PollRequest { ticket };
    let mut wait = Duration::from_millis(poll_ms);
    let mut retries = Retries::new(jitter);
    loop {
        tokio::time::sleep(wait.clamp(Duration::from_millis(50), Duration::from_secs(5))).await;
        match shared
            .http
            .post::<_, LoginResponse>("/v1/login/poll", &request)
            .await
        {
            Ok(LoginResponse::Ok { token, .. }) => return Ok(Admitted { token }),
            Ok(LoginResponse::Queued { poll_ms, .. }) => wait = Duration::from_millis(poll_ms),
            Err(e) => match e.retry() {
                Some(hint) => wait = retries.next_pause(hint),
                None => return Err(Failure::Reason(format!("queue poll: {}", e.reason()))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_honours_the_hint_and_stays_bounded() {
        for attempt in 0..40 {
            for jitter in [0, 1, 77, u64::MAX] {
                let d = backoff(None, attempt, jitter);
                assert!(
                    d >= Duration::from_millis(50) && d <= Duration::from_secs(13),
                    "{d:?}"
                );
                let h = backoff(Some(1000), attempt, jitter);
                assert!(h >= Duration::from_millis(750) && h < Duration::from_millis(1250));
            }
        }
        assert!(backoff(Some(u64::MAX), 0, 3) <= Duration::from_secs(13));
        assert!(backoff(Some(0), 0, 3) >= Duration::from_millis(37));
    }
}
