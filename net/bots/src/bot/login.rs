//! A bot's way in over HTTP: `POST /v1/login`, registering the account the
//! first time (`/v1/register`), waiting in the login queue
//! (`/v1/login/poll`), and backing off when the server says so. A bot
//! coming back logs in with the resume key its last login gave, as a real
//! client would: no password, so no password hash on the server.

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
    /// The key for the next login: resume keys are single use, and each
    /// login hands out a new one.
    pub(super) resume_key: String,
}

impl Admitted {
    fn of(answer: LoginResponse) -> Result<Self, (String, u64)> {
        match answer {
            LoginResponse::Ok {
                token, resume_key, ..
            } => Ok(Admitted { token, resume_key }),
            LoginResponse::Queued {
                ticket, poll_ms, ..
            } => Err((ticket, poll_ms)),
        }
    }
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

/// Logs bot `index` in: with `resume_key` if it has one (falling back to
/// the password if the server no longer knows the key), else with the
/// password, registering its account on the first `401`. Retries what the
/// server says is worth retrying, and waits in the queue if it is queued.
pub(super) async fn login(
    shared: &RunShared,
    index: usize,
    resume_key: Option<String>,
) -> Result<Admitted, Failure> {
    let jitter = mix(shared.config.seed, index as u64, 1);
    if let Some(key) = resume_key {
        match resume(shared, key, jitter).await? {
            Some(admitted) => {
                add(&shared.n.logins_resume, 1);
                return Ok(admitted);
            }
            None => add(&shared.n.resume_refused, 1),
        }
    }
    let admitted = password_login(shared, index, jitter).await?;
    add(&shared.n.logins_password, 1);
    Ok(admitted)
}

/// A login with a resume key; `None` if the server refuses the key (spent,
/// expired or revoked: the password is the way back in).
async fn resume(shared: &RunShared, key: String, jitter: u64) -> Result<Option<Admitted>, Failure> {
    let request = LoginRequest {
        email: None,
        password: None,
        resume_key: Some(key),
        client_version: CLIENT_PROTOCOL,
        game_protocol: Some(shared.config.game.hash_hex()),
    };
    let mut retries = Retries::new(jitter);
    let answer = loop {
        match shared
            .http
            .post::<_, LoginResponse>("/v1/login", &request)
            .await
        {
            Ok(answer) => break answer,
            Err(HttpError::Api { status: 401, .. }) => return Ok(None),
            Err(e) => match e.retry() {
                Some(hint) => tokio::time::sleep(retries.next_pause(hint)).await,
                None => return Err(Failure::Reason(format!("resume: {}", e.reason()))),
            },
        }
    };
    match Admitted::of(answer) {
        Ok(admitted) => Ok(Some(admitted)),
        Err((ticket, poll_ms)) => poll(shared, ticket, poll_ms, jitter).await.map(Some),
    }
}

/// A login with bot `index`'s email and password, registering the account
/// on the first `401`.
async fn password_login(
    shared: &RunShared,
    index: usize,
    jitter: u64,
) -> Result<Admitted, Failure> {
    let email = bot_email(index);
    let password = bot_password(index);
    let request = LoginRequest {
        email: Some(email.clone()),
        password: Some(password.clone()),
        resume_key: None,
        client_version: CLIENT_PROTOCOL,
        game_protocol: Some(shared.config.game.hash_hex()),
    };
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
    match Admitted::of(answer) {
        Ok(admitted) => Ok(admitted),
        Err((ticket, poll_ms)) => poll(shared, ticket, poll_ms, jitter).await,
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
            Ok(answer) => match Admitted::of(answer) {
                Ok(admitted) => return Ok(admitted),
                Err((_, poll_ms)) => wait = Duration::from_millis(poll_ms),
            },
            Err(e) => match e.retry() {
                Some(hint) => wait = retries.next_pause(hint),
                None => return Err(Failure::Reason(format!("queue poll: {}", e.reason()))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Json;
    use axum::http::StatusCode;
    use tessera_proto::AccountId;
    use tessera_proto::login::ApiError;

    use super::*;
    use crate::bot::config::{Behaviour, BotConfig};
    use crate::bot::shared::get;

    /// A login API that knows one password and one unspent resume key,
    /// `key-1`, which buys `key-2`; every request's body is kept.
    fn fake_login_api(seen: Arc<Mutex<Vec<LoginRequest>>>) -> axum::Router {
        let login = move |Json(req): Json<LoginRequest>| async move {
            seen.lock().expect("lock").push(req.clone());
            let ok = |resume_key: &str| {
                Json(LoginResponse::Ok {
                    account: AccountId(1),
                    token: "00".into(),
                    gate: "127.0.0.1:1".into(),
                    expires_in_s: 20,
                    resume_key: resume_key.into(),
                })
            };
            match (req.resume_key.as_deref(), req.password.as_deref()) {
                (Some("key-1"), _) => Ok(ok("key-2")),
                (None, Some(p)) if p == bot_password(0) => Ok(ok("key-p")),
                _ => Err((
                    StatusCode::UNAUTHORIZED,
                    Json(ApiError {
                        code: "bad_credentials".into(),
                        error: "test".into(),
                        retry_after_ms: None,
                    }),
                )),
            }
        };
        axum::Router::new().route("/v1/login", axum::routing::post(login))
    }

    /// A bot coming back logs in with its resume key, no password, and
    /// keeps the new key; a refused key sends it back to its password.
    #[tokio::test]
    async fn a_bot_coming_back_logs_in_with_its_resume_key() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server =
            tokio::spawn(axum::serve(listener, fake_login_api(seen.clone())).into_future());
        let config =
            BotConfig::new(1, &format!("http://{addr}"), 30, Behaviour::Churn).expect("valid");
        let shared = RunShared::new(config);
        let login = |key: Option<&str>| login(&shared, 0, key.map(str::to_owned));

        let first = login(None).await.ok().expect("password login");
        assert_eq!(first.resume_key, "key-p");
        let back = login(Some("key-1")).await.ok().expect("resumed");
        assert_eq!(back.resume_key, "key-2", "the rotated key is kept");
        let spent = login(Some("key-1-spent"))
            .await
            .ok()
            .expect("password again");
        assert_eq!(spent.resume_key, "key-p");

        let seen = seen.lock().expect("lock").clone();
        let sent: Vec<_> = seen
            .iter()
            .map(|r| (r.resume_key.as_deref(), r.password.is_some()))
            .collect();
        assert_eq!(
            sent,
            [
                (None, true),
                (Some("key-1"), false),
                (Some("key-1-spent"), false),
                (None, true)
            ]
        );
        let n = &shared.n;
        assert_eq!(get(&n.logins_password), 2);
        assert_eq!(get(&n.logins_resume), 1);
        assert_eq!(get(&n.resume_refused), 1);
        server.abort();
    }

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
