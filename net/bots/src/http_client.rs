//! A small JSON client for the coordinator's HTTP API (hyper 1 + hyper-util's
//! pooled client): the bots, `tessera status` and `tessera admin` use it.
//!
//! Every exchange has a deadline and a bounded body
//! ([`MAX_BODY_BYTES`]); a non-2xx answer is decoded as the API's
//! [`ApiError`] when it is one. Nothing here panics on what a server sends.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Serialize;
use serde::de::DeserializeOwned;

use tessera_proto::login::ApiError;

/// Largest answer body read, unless [`HttpClient::with_max_body`] says otherwise.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// One pooled client for one base URL (`http://host:port`).
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: HyperClient<HttpConnector, Full<Bytes>>,
    base: String,
    timeout: Duration,
    max_body: usize,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("no answer within the timeout")]
    Timeout,
    #[error("transport: {0}")]
    Transport(String),
    #[error("reading the body: {0}")]
    Body(String),
    #[error("HTTP {status} {}", .error.code)]
    Api { status: u16, error: ApiError },
    #[error("HTTP {0}")]
    Status(u16),
    #[error("unexpected body: {0}")]
    Json(String),
}

impl HttpError {
    /// A short reason for a tally.
    pub fn reason(&self) -> String {
        match self {
            HttpError::Timeout => "timeout".into(),
            HttpError::Transport(_) => "unreachable".into(),
            HttpError::Body(_) => "bad body".into(),
            HttpError::Api { error, .. } => error.code.clone(),
            HttpError::Status(s) => format!("HTTP {s}"),
            HttpError::Json(_) => "bad JSON".into(),
        }
    }

    /// Worth retrying after a pause (and how long, if the server said).
    pub fn retry(&self) -> Option<Option<u64>> {
        match self {
            HttpError::Api { status: 429, error } => Some(error.retry_after_ms),
            HttpError::Api { status: 503, .. } | HttpError::Status(502..=504) => Some(None),
            HttpError::Timeout | HttpError::Transport(_) => Some(None),
            _ => None,
        }
    }
}

impl HttpClient {
    /// A client for `base`; each exchange (connect included) must finish
    /// within `timeout`; at most `pool` idle connections are kept.
    pub fn new(base: &str, timeout: Duration, pool: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client = HyperClient::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(pool)
            .build(connector);
        Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            timeout,
            max_body: MAX_BODY_BYTES,
        }
    }

    /// Reads answer bodies up to `bytes` (e.g. a large cluster's status).
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `POST base+path` with a JSON body.
    pub async fn post<Q: Serialize, A: DeserializeOwned>(
        &self,
        path: &str,
        body: &Q,
    ) -> Result<A, HttpError> {
        self.post_as(path, body, None).await
    }

    /// `POST base+path` with a JSON body and, if given, `Authorization: Bearer <token>`.
    pub async fn post_as<Q: Serialize, A: DeserializeOwned>(
        &self,
        path: &str,
        body: &Q,
        bearer: Option<&str>,
    ) -> Result<A, HttpError> {
        let json = serde_json::to_vec(body).map_err(|e| HttpError::Json(e.to_string()))?;
        let mut request = hyper::Request::post(format!("{}{path}", self.base))
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(token) = bearer {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(json)))
            .map_err(|e| HttpError::Transport(e.to_string()))?;
        self.send(request).await
    }

    /// `GET base+path`, a JSON answer.
    pub async fn get_json<A: DeserializeOwned>(&self, path: &str) -> Result<A, HttpError> {
        self.get_as(path, None).await
    }

    /// `GET base+path` with, if given, `Authorization: Bearer <token>`.
    pub async fn get_as<A: DeserializeOwned>(
        &self,
        path: &str,
        bearer: Option<&str>,
    ) -> Result<A, HttpError> {
        let mut request = hyper::Request::get(format!("{}{path}", self.base));
        if let Some(token) = bearer {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| HttpError::Transport(e.to_string()))?;
        self.send(request).await
    }

    async fn send<A: DeserializeOwned>(
        &self,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<A, HttpError> {
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| HttpError::Transport(chain(&e)))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), self.max_body)
                .collect()
                .await
                .map_err(|e| HttpError::Body(e.to_string()))?
                .to_bytes();
            Ok::<_, HttpError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| HttpError::Timeout)??;
        if (200..300).contains(&status) {
            serde_json::from_slice(&body).map_err(|e| HttpError::Json(e.to_string()))
        } else {
            match serde_json::from_slice::<ApiError>(&body) {
                Ok(error) => Err(HttpError::Api { status, error }),
                Err(_) => Err(HttpError::Status(status)),
            }
        }
    }
}

/// An error and its sources, `: `-separated (hyper's own message is terse).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
