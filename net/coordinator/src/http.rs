//! The coordinator's HTTP API (axum):
//!
//! * `GET /v1/status` — servers, gates, scenes (see [`ClusterStatus`]);
//! * `POST /v1/register`, `POST /v1/login`, `POST /v1/login/poll` — accounts
//!   and admission (bodies in [`tessera_proto::login`]);
//!
//! and the admin API, on the same listener or, with `admin_http`, on one of
//! its own (then the public listener serves none of it):
//!
//! * `POST /v1/admin/kick`, `POST /v1/admin/ban`, `POST /v1/admin/move-scene`,
//!   `POST /v1/admin/drain` — operator actions, and
//!   `GET /v1/scenes/{name}/snapshot` — a scene's entities as its last
//!   tick's packets were built from them (the truth client views are checked
//!   against), all with `Authorization: Bearer <admin token>` — the admin
//!   API's own credential, never the cluster secret, which stays off the
//!   wire;
//! * `GET /map?scene=NAME` — the live map: one self-contained HTML page
//!   (`map.html`) whose script polls that snapshot several times a second,
//!   sending the token it reads from the URL fragment (`#token=…`, which a
//!   browser never sends to the server) as the Bearer header. The page
//!   itself carries no data and needs no credential.
//!
//! Bodies are capped at [`MAX_BODY_BYTES`]. Registration and login are rate
//! limited per client address (an IPv4 address or an IPv6 /64, read from a
//! configured proxy's header when the peer is that proxy) and per valid,
//! normalised email with governor token buckets before any hashing; polls
//! have a per-address limit of their own. A password check waits for a
//! hashing permit as a task, then runs on the blocking pool. Every refusal
//! is a JSON [`ApiError`] with a stable `code`.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tessera_persistence as db;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use tessera_cluster::{
    ClusterStatus, DrainError, DrainRequest, DrainResponse, MoveError, MoveRequest, MoveResponse,
};
use tessera_proto::AccountId;
use tessera_proto::client::CLIENT_PROTOCOL;
use tessera_proto::login::{
    AdminResponse, ApiError, KickRequest, LoginRequest, LoginResponse, PollRequest,
    RegisterRequest, RegisterResponse,
};
use tessera_wire::Secret;

use crate::core::SharedCore;
use crate::login::{Admission, AdmitError, LoginConfig};
use crate::metrics::Counters;

/// Rate limiters of the login API, and how a client's address is found.
pub(crate) struct Limits {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    poll_per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_account: DefaultKeyedRateLimiter<String>,
    trusted: Vec<IpAddr>,
    proxies: Vec<IpAddr>,
    client_ip_header: String,
}

/// Keys kept per limiter before idle ones are pruned.
const MAX_LIMITER_KEYS: usize = 100_000;

/// The largest request body the API reads; every body it takes is a few
/// short fields. A larger one is refused with 413 before it is buffered.
pub(crate) const MAX_BODY_BYTES: usize = 4 * 1024;

/// What a per-IP limit counts against: an IPv4 address, or an IPv6 /64 (a
/// host usually holds a whole /64, so rotating within it must not reset
/// its budget). An IPv4-mapped IPv6 address counts as its IPv4 address.
fn limiter_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn quota(per_s: u32, burst: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(per_s).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

/// One request against `key`'s bucket; idle keys are pruned past
/// [`MAX_LIMITER_KEYS`], so a limiter's memory stays bounded.
fn limit<K: Clone + Eq + std::hash::Hash>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
    what: &str,
) -> Result<(), ApiFailure> {
    if limiter.len() > MAX_LIMITER_KEYS {
        limiter.retain_recent();
    }
    limiter.check_key(key).map_err(|n| {
        let wait = n.wait_time_from(limiter.clock().now());
        ApiFailure::rate_limited(what, wait)
    })
}

impl Limits {
    pub(crate) fn new(c: &LoginConfig) -> Self {
        let ips = |list: &[String]| list.iter().filter_map(|s| s.parse().ok()).collect();
        Self {
            per_ip: RateLimiter::keyed(quota(c.per_ip_per_s, c.per_ip_burst)),
            poll_per_ip: RateLimiter::keyed(quota(c.poll_per_ip_per_s, c.poll_per_ip_burst)),
            per_account: RateLimiter::keyed(quota(c.per_account_per_s, c.per_account_burst)),
            trusted: ips(&c.trusted_ips),
            proxies: ips(&c.proxies),
            client_ip_header: c.client_ip_header.clone(),
        }
    }

    /// The client's address: the TCP peer, or, when the peer is one of the
    /// configured proxies, the last entry of the proxy's header (the one
    /// that proxy appended). A proxy that sent no usable header is keyed
    /// as itself.
    pub(crate) fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.proxies.contains(&peer) {
            return peer;
        }
        headers
            .get_all(self.client_ip_header.as_str())
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(peer)
    }

    /// Logins and registrations from `ip` (see [`limiter_key`]).
    pub(crate) fn check_ip(&self, ip: IpAddr) -> Result<(), ApiFailure> {
        self.limit_addr(&self.per_ip, ip, "too many requests from this address")
    }

    /// Polls of queued logins from `ip`.
    fn check_poll_ip(&self, ip: IpAddr) -> Result<(), ApiFailure> {
        self.limit_addr(&self.poll_per_ip, ip, "too many polls from this address")
    }

    /// One request from `ip` against `limiter`, unless `ip` is trusted.
    fn limit_addr(
        &self,
        limiter: &DefaultKeyedRateLimiter<IpAddr>,
        ip: IpAddr,
        what: &str,
    ) -> Result<(), ApiFailure> {
        if self.trusted.contains(&ip) {
            return Ok(());
        }
        limit(limiter, &limiter_key(ip), what)
    }

    /// `email` must be normalised (valid, lower case): the limiter keeps
    /// one key per distinct email, so it must never key on raw input.
    pub(crate) fn check_account(&self, email: &str) -> Result<(), ApiFailure> {
        limit(
            &self.per_account,
            &email.to_owned(),
            "too many logins for this account",
        )
    }
}

/// The API's shared state.
#[derive(Clone)]
pub(crate) struct Api {
    /// As many permits as the password hasher runs hashes at once: a
    /// request waits here, as a task, before it takes a blocking thread, so
    /// a flood of logins queues cheaply instead of parking the blocking pool.
    pub(crate) hashing: Arc<Semaphore>,
    pub(crate) core: Arc<SharedCore>,
    pub(crate) limits: Arc<Limits>,
    /// The admin token (not the cluster secret).
    pub(crate) admin: Secret,
    pub(crate) counters: Arc<Counters>,
    /// The game's protocol, and its hash as a login carries it.
    pub(crate) game: Arc<(tessera_proto::GameSchema, String)>,
}

/// Serves the API, and `/metrics`, `/livez` and `/readyz` of `registry`,
/// on `listener` until `stop`; the admin API on `admin` if given, else on
/// `listener` too.
pub(crate) async fn serve(
    listener: TcpListener,
    admin: Option<TcpListener>,
    api: Api,
    registry: tessera_metrics::Registry,
    stop: CancellationToken,
) {
    let public = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/protocol", get(protocol))
        .route("/v1/register", post(register))
        .route("/v1/login", post(login))
        .route("/v1/login/poll", post(poll))
        .route("/v1/password", post(crate::password::change_password));
    let admin_routes = Router::new()
        .route("/v1/admin/kick", post(kick))
        .route("/v1/admin/ban", post(ban))
        .route("/v1/admin/move-scene", post(move_scene))
        .route("/v1/admin/drain", post(drain))
        .route("/v1/scenes/{name}/snapshot", get(snapshot))
        .route("/map", get(map_page));
    let finish = |r: Router<Api>| {
        r.layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(api.clone())
    };
    let metrics = tessera_metrics::http::router(registry);
    match admin {
        None => {
            let app = finish(public.merge(admin_routes)).merge(metrics);
            serve_on(listener, app, "HTTP API", stop).await;
        }
        Some(admin) => {
            let app = finish(public).merge(metrics);
            tokio::join!(
                serve_on(listener, app, "HTTP API", stop.clone()),
                serve_on(admin, finish(admin_routes), "admin API", stop),
            );
        }
    }
}

async fn serve_on(listener: TcpListener, app: Router, what: &str, stop: CancellationToken) {
    if let Err(e) = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop.cancelled_owned())
    .await
    {
        warn!(error = %e, "{what} stopped");
    }
}

/// An error answer: status and body.
pub(crate) struct ApiFailure(pub(crate) StatusCode, pub(crate) ApiError);

impl ApiFailure {
    pub(crate) fn new(status: StatusCode, code: &str, error: impl Into<String>) -> Self {
        Self(
            status,
            ApiError {
                code: code.into(),
                error: error.into(),
                retry_after_ms: None,
            },
        )
    }

    /// A body that is not the JSON asked for: 413 `too_large` past
    /// [`MAX_BODY_BYTES`], else 400 `invalid`.
    pub(crate) fn bad_body(e: JsonRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
            )
        } else {
            Self::new(StatusCode::BAD_REQUEST, "invalid", e.body_text())
        }
    }

    fn rate_limited(what: &str, wait: std::time::Duration) -> Self {
        let mut f = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", what);
        f.1.retry_after_ms = Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1));
        f
    }

    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<AdmitError> for ApiFailure {
    fn from(e: AdmitError) -> Self {
        match e {
            AdmitError::NoGate => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "no_gate", e.to_string())
            }
            AdmitError::QueueFull => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "queue_full", e.to_string())
            }
            AdmitError::UnknownTicket => {
                Self::new(StatusCode::NOT_FOUND, "unknown_ticket", e.to_string())
            }
            AdmitError::UnknownResumeKey => {
                Self::new(StatusCode::UNAUTHORIZED, "bad_credentials", e.to_string())
            }
            AdmitError::Issue(_) => Self::internal(e),
            AdmitError::NoRandomness(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
        }
    }
}

fn admitted(a: Admission, poll_ms: u64) -> LoginResponse {
    match a {
        Admission::Token {
            account,
            token,
            gate,
            expires_in_s,
            resume_key,
        } => LoginResponse::Ok {
            account: AccountId(account),
            token,
            gate,
            expires_in_s,
            resume_key,
        },
        Admission::Queued { ticket, position } => LoginResponse::Queued {
            ticket,
            position,
            poll_ms,
        },
    }
}

/// The game's protocol (its components, actions and events) and its hash:
/// what a client in another language reads to speak it.
async fn protocol(State(api): State<Api>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "hash": api.game.1,
        "schema": api.game.0,
    }))
}

async fn status(State(api): State<Api>) -> Json<ClusterStatus> {
    Json(api.core.lock().status())
}

/// Runs a store call that hashes a password on the blocking pool, once a
/// hashing permit is free.
pub(crate) async fn hashing<T: Send + 'static>(
    api: &Api,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiFailure> {
    let _permit = Arc::clone(&api.hashing)
        .acquire_owned()
        .await
        .map_err(ApiFailure::internal)?;
    let counters = Arc::clone(&api.counters);
    blocking(move || {
        let start = std::time::Instant::now();
        let r = f();
        counters.password_hash.observe_duration(start.elapsed());
        r
    })
    .await
}

/// Runs a store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiFailure> {
    tokio::task::spawn_blocking({
        let span = tracing::Span::current();
        let f = f;
        move || span.in_scope(f)
    })
    .await
    .map_err(ApiFailure::internal)
}

async fn register(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<RegisterResponse>), ApiFailure> {
    let Json(req) = body.map_err(ApiFailure::bad_body)?;
    api.limits
        .check_ip(api.limits.client_ip(peer.ip(), &headers))?;
    let store = Arc::clone(api.core.lock().store());
    let result = hashing(&api, move || {
        store.register(&req.email, &req.password, req.nickname.as_deref())
    })
    .await?;
    match result {
        Ok(account) => Ok((
            StatusCode::CREATED,
            Json(RegisterResponse {
                account: AccountId(account),
            }),
        )),
        Err(db::RegisterError::DuplicateEmail { email }) => Err(ApiFailure::new(
            StatusCode::CONFLICT,
            "email_taken",
            format!("an account with email {email} already exists"),
        )),
        Err(
            e @ (db::RegisterError::InvalidEmail(_)
            | db::RegisterError::InvalidPassword(_)
            | db::RegisterError::InvalidNickname(_)),
        ) => Err(ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            db::error_chain(&e),
        )),
        Err(e) => Err(ApiFailure::internal(db::error_chain(&e))),
    }
}

/// `POST /v1/login`, counted by outcome.
async fn login(
    State(api): State<Api>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<Json<LoginResponse>, ApiFailure> {
    let counters = Arc::clone(&api.counters);
    let answer = login_answer(api, peer, headers, body).await;
    counters.login(match &answer {
        Ok(Json(LoginResponse::Ok { .. })) => "ok",
        Ok(Json(LoginResponse::Queued { .. })) => "queued",
        Err(f) => f.1.code.as_str(),
    });
    answer
}

/// The hash a login without `game_protocol` is taken to carry: the default
/// game's.
static DEFAULT_GAME_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| tessera_proto::GameSchema::new("default").hash_hex());

async fn login_answer(
    api: Api,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<Json<LoginResponse>, ApiFailure> {
    let Json(req) = body.map_err(ApiFailure::bad_body)?;
    if req.client_version != CLIENT_PROTOCOL {
        return Err(ApiFailure::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            format!(
                "client version {} is not supported; this cluster speaks {CLIENT_PROTOCOL}: upgrade the client",
                req.client_version
            ),
        ));
    }
    let theirs = req
        .game_protocol
        .as_deref()
        .unwrap_or(DEFAULT_GAME_HASH.as_str());
    if theirs != api.game.1 {
        return Err(ApiFailure::new(
            StatusCode::UPGRADE_REQUIRED,
            "protocol_mismatch",
            format!(
                "this cluster runs game {:?} with protocol hash {}; the client speaks {theirs}: use a client built for this game",
                api.game.0.game, api.game.1
            ),
        ));
    }
    let client = api.limits.client_ip(peer.ip(), &headers);
    api.limits.check_ip(client)?;
    let admitted_as = match (req.resume_key, req.email, req.password) {
        (Some(key), _, _) => {
            let account = resume_login(&api, &key).await?;
            // The key is spent here, under the lock: of two logins with
            // one key, one gets in.
            api.core
                .lock()
                .admit_resumed(&key, account)
                .map_err(|e| match e {
                    AdmitError::UnknownResumeKey => bad_resume_key(),
                    e => e.into(),
                })?
        }
        (None, Some(email), Some(password)) => {
            let account = password_login(&api, client, email, password).await?;
            api.core.lock().admit(account)?
        }
        (None, _, _) => {
            return Err(ApiFailure::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                "email and password, or resume_key, are required",
            ));
        }
    };
    Ok(Json(admitted(admitted_as, 500)))
}

fn bad_resume_key() -> ApiFailure {
    ApiFailure::new(
        StatusCode::UNAUTHORIZED,
        "bad_credentials",
        "unknown, used or expired resume key: log in with the password",
    )
}

/// The account behind a resume key, if it is still open: a banned
/// account's resume key is worthless. The key is not spent yet.
async fn resume_login(api: &Api, key: &str) -> Result<u64, ApiFailure> {
    let account = api.core.lock().resume_account(key);
    let Some(account) = account else {
        return Err(bad_resume_key());
    };
    let store = Arc::clone(api.core.lock().store());
    let open = blocking(move || store.account(account))
        .await?
        .map_err(ApiFailure::internal)?
        .is_some_and(|a| a.status == db::AccountStatus::Open);
    if !open {
        return Err(locked());
    }
    Ok(account)
}

/// The account whose password this is (rate limited per account; the
/// hash runs on the blocking pool).
async fn password_login(
    api: &Api,
    client: IpAddr,
    email: String,
    password: String,
) -> Result<u64, ApiFailure> {
    let email = limited_email(api, &email)?;
    let store = Arc::clone(api.core.lock().store());
    let addr = client.to_string();
    let result = hashing(api, move || store.login(&email, &password, &addr)).await?;
    result.map(|a| a.id).map_err(login_refused)
}

/// A password check's email, normalised: validated before any limiter
/// keys on it or any hash is spent, then held to the per-account limit.
pub(crate) fn limited_email(api: &Api, email: &str) -> Result<String, ApiFailure> {
    let email = db::validate::normalize_email(email).map_err(|e| {
        ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            db::error_chain(&db::LoginError::InvalidEmail(e)),
        )
    })?;
    api.limits.check_account(&email)?;
    Ok(email)
}

/// The answer to a refused password check.
pub(crate) fn login_refused(e: db::LoginError) -> ApiFailure {
    use db::LoginError as L;
    match e {
        L::UnknownEmail | L::WrongPassword => bad_credentials(),
        L::Locked | L::Deleted => locked(),
        e @ (L::InvalidEmail(_) | L::InvalidPassword(_) | L::InvalidAddress(_)) => {
            ApiFailure::new(StatusCode::BAD_REQUEST, "invalid", db::error_chain(&e))
        }
        e => ApiFailure::internal(db::error_chain(&e)),
    }
}

pub(crate) fn bad_credentials() -> ApiFailure {
    ApiFailure::new(
        StatusCode::UNAUTHORIZED,
        "bad_credentials",
        "wrong email or password",
    )
}

pub(crate) fn locked() -> ApiFailure {
    ApiFailure::new(StatusCode::FORBIDDEN, "locked", "the account is locked")
}

async fn poll(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<PollRequest>, JsonRejection>,
) -> Result<Json<LoginResponse>, ApiFailure> {
    api.limits
        .check_poll_ip(api.limits.client_ip(peer.ip(), &headers))?;
    let Json(req) = body.map_err(ApiFailure::bad_body)?;
    let a = api.core.lock().poll(&req.ticket)?;
    Ok(Json(admitted(a, 500)))
}

fn authorize(api: &Api, headers: &HeaderMap) -> Result<(), ApiFailure> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| Secret::new(t.trim().as_bytes().to_vec()));
    match given {
        Some(s) if s.ct_eq(&api.admin) => Ok(()),
        _ => {
            api.counters.admin_unauthorized();
            Err(ApiFailure::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "admin actions need `Authorization: Bearer <admin token>`",
            ))
        }
    }
}

/// The account an admin request names (by email or avatar name).
async fn target_account(api: &Api, req: &KickRequest) -> Result<u64, ApiFailure> {
    let store = Arc::clone(api.core.lock().store());
    let (email, avatar) = (req.email.clone(), req.avatar.clone());
    blocking(move || match (email, avatar) {
        (Some(email), _) => store
            .account_by_email(&email)
            .map(|a| a.id)
            .map_err(|e| ApiFailure::new(StatusCode::NOT_FOUND, "not_found", db::error_chain(&e))),
        (None, Some(name)) => match store.avatar_by_name(&name) {
            Ok(Some(a)) => Ok(a.account),
            Ok(None) => Err(ApiFailure::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no avatar named {name}"),
            )),
            Err(e) => Err(ApiFailure::internal(e)),
        },
        (None, None) => Err(ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "name an `email` or an `avatar`",
        )),
    })
    .await?
}

async fn kick(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Json<KickRequest>, JsonRejection>,
) -> Result<Json<AdminResponse>, ApiFailure> {
    authorize(&api, &headers)?;
    let Json(req) = body.map_err(ApiFailure::bad_body)?;
    let account = target_account(&api, &req).await?;
    let reason = req.reason.unwrap_or_else(|| "kicked by an operator".into());
    let kicked = api.core.lock().kick(account, &reason);
    info!(account, kicked, "operator kick");
    Ok(Json(AdminResponse {
        account: AccountId(account),
        kicked,
        banned: false,
    }))
}

async fn ban(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Json<KickRequest>, JsonRejection>,
) -> Result<Json<AdminResponse>, ApiFailure> {
    authorize(&api, &headers)?;
    let Json(req) = body.map_err(ApiFailure::bad_body)?;
    let account = target_account(&api, &req).await?;
    let store = Arc::clone(api.core.lock().store());
    blocking(move || store.lock_account(account))
        .await?
        .map_err(|e| ApiFailure::internal(db::error_chain(&e)))?;
    let reason = req.reason.unwrap_or_else(|| "banned by an operator".into());
    // Locked first, then revoked: a login that raced the ban either saw
    // the lock or loses its token and key here.
    let kicked = {
        let mut core = api.core.lock();
        core.revoke_logins(account);
        core.kick(account, &reason)
    };
    info!(account, kicked, "operator ban");
    Ok(Json(AdminResponse {
        account: AccountId(account),
        kicked,
        banned: true,
    }))
}

/// How long a snapshot may take to come back from its scene server.
const SNAPSHOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn snapshot(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<tessera_sim::SceneSnapshot>, ApiFailure> {
    use crate::core::snapshots::SnapshotRefused;
    authorize(&api, &headers)?;
    let asked = api.core.lock().request_snapshot(&name);
    let (request, rx) = asked.map_err(|e| match e {
        SnapshotRefused::NotPlaced => ApiFailure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("scene {name:?} is not placed"),
        ),
        SnapshotRefused::Busy => ApiFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "too many snapshots in flight; try again",
        ),
    })?;
    let unavailable = |why: &str| {
        ApiFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("no snapshot of {name:?}: {why}"),
        )
    };
    let bytes = match tokio::time::timeout(SNAPSHOT_TIMEOUT, rx).await {
        Ok(Ok(Some(bytes))) => bytes,
        Ok(Ok(None)) => return Err(unavailable("its scene server does not host it")),
        Ok(Err(_)) => return Err(unavailable("the request was dropped")),
        Err(_) => {
            api.core.lock().forget_snapshot(request);
            return Err(unavailable("its scene server did not answer in time"));
        }
    };
    postcard::from_bytes(&bytes)
        .map(Json)
        .map_err(|e| ApiFailure::internal(format!("a snapshot that does not decode: {e}")))
}

/// The live map's page: static, self-contained; its script does the rest.
const MAP_PAGE: &str = include_str!("map.html");

/// `GET /map`'s query.
#[derive(Debug, serde::Deserialize)]
struct MapQuery {
    scene: Option<String>,
}

/// `GET /map?scene=NAME`: the page, for a placed scene; 404 naming the placed
/// scenes for any other, 400 without a scene.
async fn map_page(
    State(api): State<Api>,
    query: Result<Query<MapQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
    let scene = query.ok().and_then(|Query(q)| q.scene).unwrap_or_default();
    let placed = api.core.lock().placed_scenes();
    let text = |status: StatusCode, body: String| {
        (status, [(CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
    };
    if scene.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "name a scene: /map?scene=NAME#token=ADMIN_TOKEN (placed: {})\n",
                placed.join(", ")
            ),
        );
    }
    if !placed.contains(&scene) {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "scene {scene:?} is not placed (placed: {})\n",
                placed.join(", ")
            ),
        );
    }
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-store"),
        ],
        MAP_PAGE,
    )
        .into_response()
}

/// `POST /v1/admin/move-scene`: the scene's host flushes and drops it, then
/// it is placed on the target. 404 for an unknown scene or server, 409 for
/// a move that cannot be made now (another under way, the target down,
/// draining or full, the scene not running or already there).
async fn move_scene(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Json<MoveRequest>, JsonRejection>,
) -> Result<Json<MoveResponse>, ApiFailure> {
    authorize(&api, &headers)?;
    let Json(req) = body.map_err(ApiFailure::bad_body)?;
    let moved = api.core.lock().move_scene(&req.scene, &req.to);
    moved.map_err(|e| match e {
        MoveError::UnknownScene(_) | MoveError::UnknownServer(_) => {
            ApiFailure::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        _ => ApiFailure::new(StatusCode::CONFLICT, "conflict", e.to_string()),
    })?;
    Ok(Json(MoveResponse {
        scene: req.scene,
        to: req.to,
    }))
}

/// `POST /v1/admin/drain`: the server takes no new scene and its scenes move
/// to the others, one at a time (`"cancel": true` ends that). 404 for an
/// unknown server.
async fn drain(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Json<DrainRequest>, JsonRejection>,
) -> Result<Json<DrainResponse>, ApiFailure> {
    authorize(&api, &headers)?;
    let Json(req) = body.map_err(ApiFailure::bad_body)?;
    let drained = api.core.lock().drain(&req.server, !req.cancel);
    let scenes = drained.map_err(|e @ DrainError::UnknownServer(_)| {
        ApiFailure::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
    })?;
    Ok(Json(DrainResponse {
        server: req.server,
        draining: !req.cancel,
        scenes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(proxies: &[&str]) -> Limits {
        Limits::new(&LoginConfig {
            trusted_ips: Vec::new(),
            proxies: proxies.iter().map(|s| s.to_string()).collect(),
            ..LoginConfig::default()
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            limiter_key(ip("2001:db8:1:2:aaaa::1")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            limiter_key(ip("2001:db8:1:2:ffff::9")),
            ip("2001:db8:1:2::")
        );
        assert_ne!(limiter_key(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(limiter_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(limiter_key(ip("192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn rotating_within_a_64_does_not_reset_the_budget() {
        let l = limits(&[]);
        let burst = LoginConfig::default().per_ip_burst;
        for i in 0..burst {
            let a = ip(&format!("2001:db8::{:x}", i + 1));
            assert!(l.check_ip(a).is_ok(), "request {i}");
        }
        assert!(l.check_ip(ip("2001:db8::ffff")).is_err());
        assert!(l.check_ip(ip("2001:db8:0:1::1")).is_ok(), "another /64");
    }

    #[test]
    fn only_a_configured_proxy_names_the_client() {
        let l = limits(&["10.0.0.1"]);
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.4".parse().expect("value"),
        );
        assert_eq!(l.client_ip(ip("10.0.0.1"), &h), ip("198.51.100.4"));
        assert_eq!(
            l.client_ip(ip("10.0.0.2"), &h),
            ip("10.0.0.2"),
            "not a proxy"
        );
        let mut bad = HeaderMap::new();
        bad.insert("x-forwarded-for", "not an address".parse().expect("value"));
        assert_eq!(l.client_ip(ip("10.0.0.1"), &bad), ip("10.0.0.1"));
        assert_eq!(
            l.client_ip(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn polls_have_a_limit_of_their_own() {
        let l = limits(&[]);
        let c = LoginConfig::default();
        let a = ip("198.51.100.1");
        for i in 0..c.poll_per_ip_burst {
            assert!(l.check_poll_ip(a).is_ok(), "poll {i}");
        }
        assert!(l.check_poll_ip(a).is_err());
        assert!(l.check_ip(a).is_ok(), "logins are counted apart");
    }

    #[test]
    fn trusted_addresses_are_not_limited() {
        let l = Limits::new(&LoginConfig::default());
        for _ in 0..100 {
            assert!(l.check_ip(ip("127.0.0.1")).is_ok());
            assert!(l.check_poll_ip(ip("::1")).is_ok());
        }
    }

    #[test]
    fn bad_proxy_settings_are_refused() {
        let bad_proxy = LoginConfig {
            proxies: vec!["proxy.example".into()],
            ..LoginConfig::default()
        };
        let err = bad_proxy.validate().expect_err("not an IP");
        assert!(err.contains("proxies"), "{err}");
        let bad_header = LoginConfig {
            client_ip_header: "X Forwarded".into(),
            ..LoginConfig::default()
        };
        let err = bad_header.validate().expect_err("not a header name");
        assert!(err.contains("client_ip_header"), "{err}");
        assert!(LoginConfig::default().validate().is_ok());
    }
}
