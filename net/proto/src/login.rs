//! The **login API** bodies: `POST /v1/register`, `POST /v1/login`,
//! `POST /v1/login/poll`, `POST /v1/password` on the coordinator's HTTP port. Shared by the
//! coordinator (server) and the bot client, so both ends agree by type.
//!
//! Every answer is JSON. Errors are `{"code": "...", "error": "..."}` with an
//! HTTP status: 400 invalid input, 401 bad credentials, 403 locked or banned,
//! 409 email taken, 413 body over 4 KiB, 426 upgrade required, 429 rate
//! limited (with `retry_after_ms`), 503 no gate available.

use serde::{Deserialize, Serialize};

use crate::AccountId;

/// `POST /v1/register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub email: String,
    pub password: String,
    #[serde(default)]
    pub nickname: Option<String>,
}

/// `201` answer of `POST /v1/register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub account: AccountId,
}

/// `POST /v1/login`: email and password, or a resume key (a reconnect
/// within the grace period, no password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRequest {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub resume_key: Option<String>,
    /// Must be [`crate::client::CLIENT_PROTOCOL`].
    pub client_version: u32,
    /// The game's protocol hash ([`crate::GameSchema::hash_hex`]); absent
    /// means the default game's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub game_protocol: Option<String>,
}

/// `POST /v1/password`: change the password, with the current one. The
/// account's resume keys and pending connect tokens are revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangePasswordRequest {
    pub email: String,
    pub password: String,
    pub new_password: String,
}

/// `200` answer of `POST /v1/password`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangePasswordResponse {
    pub account: AccountId,
}

/// `POST /v1/login/poll`: a queued login asks for its turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollRequest {
    pub ticket: String,
}

/// `200` answer of a login or a poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum LoginResponse {
    /// Admitted: connect to `gate` with `token` (hex of the netcode connect
    /// token) before `expires_in_s`. `resume_key` logs in again without a
    /// password within the grace period.
    Ok {
        account: AccountId,
        token: String,
        gate: String,
        expires_in_s: u64,
        resume_key: String,
    },
    /// The cluster is at its population cap: poll with `ticket` after
    /// `poll_ms`; `position` is 1 for the next one admitted.
    Queued {
        ticket: String,
        position: u64,
        poll_ms: u64,
    },
}

/// Every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable, for programs: `invalid`, `bad_credentials`, `locked`,
    /// `email_taken`, `upgrade_required`, `rate_limited`, `no_gate`,
    /// `unknown_ticket`, `unauthorized`, `not_found`, `internal`.
    pub code: String,
    /// For people.
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// `POST /v1/admin/kick` (header `Authorization: Bearer <admin token>`):
/// ends the session of an account or of the account owning an avatar name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KickRequest {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub avatar: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/admin/ban`: locks the account (logins refused) and kicks it.
pub type BanRequest = KickRequest;

/// Answer of kick and ban.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminResponse {
    pub account: AccountId,
    /// Whether a live session was ended.
    pub kicked: bool,
    pub banned: bool,
}
