//! `POST /v1/password`: a player changes their password with the current
//! one. Limited like a password login (per client address, per account),
//! and hashed on the blocking pool behind the hashing permits. A change
//! revokes the account's resume keys and pending connect tokens: whoever
//! held them (a stolen key, say) must log in with the new password.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use tessera_persistence as db;
use tessera_proto::login::{ChangePasswordRequest, ChangePasswordResponse};
use tracing::info;

use crate::http::{
    Api, ApiFailure, bad_credentials, hashing, limited_email, locked, login_refused,
};

pub(crate) async fn change_password(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<ChangePasswordRequest>, JsonRejection>,
) -> Result<Json<ChangePasswordResponse>, ApiFailure> {
    let Json(req) = body.map_err(ApiFailure::bad_body)?;
    api.limits
        .check_ip(api.limits.client_ip(peer.ip(), &headers))?;
    // The new password is checked before any limiter keys on the request
    // or any hash is spent (the store checks it again, against the
    // account's email as stored).
    db::validate::check_password(&req.new_password, &req.email).map_err(|e| {
        ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            db::error_chain(&db::ChangePasswordError::InvalidPassword(e)),
        )
    })?;
    let email = limited_email(&api, &req.email)?;
    let store = Arc::clone(api.core.lock().store());
    let result = hashing(&api, move || {
        // The login's checks first (an unknown email costs a hash too, and
        // a locked account tells so only to who knows the password).
        let account = store
            .verify_password(&email, &req.password)
            .map_err(Refused::Login)?;
        store
            .change_password(account.id, &req.password, &req.new_password)
            .map_err(Refused::Change)?;
        Ok::<_, Refused>(account.id)
    })
    .await?;
    let account = result.map_err(Refused::into_failure)?;
    api.core.lock().revoke_logins(account);
    info!(account, "password changed; resume keys revoked");
    Ok(Json(ChangePasswordResponse {
        account: tessera_proto::AccountId(account),
    }))
}

enum Refused {
    Login(db::LoginError),
    Change(db::ChangePasswordError),
}

impl Refused {
    fn into_failure(self) -> ApiFailure {
        use db::ChangePasswordError as C;
        match self {
            Refused::Login(e) => login_refused(e),
            // Changed or deleted between the check and the change.
            Refused::Change(C::WrongPassword | C::UnknownAccount(_)) => bad_credentials(),
            Refused::Change(C::Deleted(_)) => locked(),
            Refused::Change(e @ C::InvalidPassword(_)) => {
                ApiFailure::new(StatusCode::BAD_REQUEST, "invalid", db::error_chain(&e))
            }
            Refused::Change(e) => ApiFailure::internal(db::error_chain(&e)),
        }
    }
}
