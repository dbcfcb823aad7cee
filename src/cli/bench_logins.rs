//! `tessera cluster-bench`'s login load: HTTP logins (`POST /v1/login`)
//! against the coordinator while it serves the attach and detach round
//! trips, to measure logins per second.
//!
//! A login needs a gate to hand out; the bench has none, so a stand-in
//! registers on a link as a gate with a client address nobody dials, and
//! heartbeats. Tokens are issued and never used (each new login of an
//! account replaces its unused one). Half the login clients log in with
//! their password every time (bound by argon2id and its concurrency cap),
//! the other half with the resume key each login hands back (no hash: the
//! coordinator's own cost).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tessera_bots::http_client::HttpClient;
use tessera_link::LinkConfig;
use tessera_proto::client::CLIENT_PROTOCOL;
use tessera_proto::login::{LoginRequest, LoginResponse};
use tessera_wire::{Heartbeat, LinkMsg, Register, Role, Secret};

/// The password of every bench account.
pub(super) const PASSWORD: &str = "correct horse battery";

/// The email of login client `i`'s account.
pub(super) fn email(i: u32) -> String {
    format!("login{i}@example.com")
}

/// Logins answered while measuring, by kind, and those that failed.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct LoginTally {
    pub(super) password: u64,
    pub(super) resumed: u64,
    pub(super) failed: u64,
}

/// The login clients and the stand-in gate, running until [`Logins::finish`].
pub(super) struct Logins {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<LoginTally>>,
    gate: tokio::task::JoinHandle<()>,
}

impl Logins {
    /// Registers the stand-in gate, then starts `clients` login clients
    /// against `http`, counting only while `measuring`.
    pub(super) async fn start(
        http: SocketAddr,
        link: &str,
        secret: Secret,
        clients: u32,
        measuring: Arc<AtomicBool>,
    ) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let gate = tokio::spawn(stand_in_gate(link.to_owned(), secret, Arc::clone(&stop)));
        let base = format!("http://{http}");
        let tasks = (0..clients)
            .map(|i| {
                tokio::spawn(login_loop(
                    HttpClient::new(&base, Duration::from_secs(10), 1),
                    i,
                    Arc::clone(&measuring),
                    Arc::clone(&stop),
                ))
            })
            .collect();
        Ok(Self { stop, tasks, gate })
    }

    /// Stops every client and the gate; the tallies summed.
    pub(super) async fn finish(self) -> anyhow::Result<LoginTally> {
        self.stop.store(true, Ordering::Relaxed);
        let mut sum = LoginTally::default();
        for t in self.tasks {
            let t = t.await?;
            sum.password += t.password;
            sum.resumed += t.resumed;
            sum.failed += t.failed;
        }
        self.gate.await?;
        Ok(sum)
    }
}

/// A gate on a link: registered with one client address, heartbeating
/// every 250 ms with no clients, until `stop`. What the coordinator sends
/// it is read and dropped.
async fn stand_in_gate(link: String, secret: Secret, stop: Arc<AtomicBool>) {
    let cfg = LinkConfig::new(Role::Gate, "bench-gate", secret);
    let Ok(mut link) = tessera_link::connect(&link, &cfg).await else {
        eprintln!("the stand-in gate cannot connect: logins will fail");
        return;
    };
    let addrs = vec!["127.0.0.1:9".to_owned()];
    let register = LinkMsg::Register(Register {
        addr: addrs.join(","),
        capacity: 0,
        hosted: vec![],
        game: String::new(),
    });
    if link.send(&register).await.is_err() {
        return;
    }
    let mut every = tokio::time::interval(Duration::from_millis(250));
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::select! {
            _ = every.tick() => {
                seq += 1;
                let beat = LinkMsg::Heartbeat(Heartbeat {
                    seq,
                    scenes: vec![],
                    online: 0,
                    addrs: addrs.clone(),
                });
                if link.send(&beat).await.is_err() {
                    return;
                }
            }
            msg = link.recv() => if msg.is_none() {
                return;
            },
        }
    }
}

/// Login client `i`: logs in again as soon as answered, with its password
/// (even `i`) or its latest resume key (odd `i`, after a first password
/// login), until `stop`.
async fn login_loop(
    http: HttpClient,
    i: u32,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> LoginTally {
    let mut tally = LoginTally::default();
    let mut key: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let resumed = i % 2 == 1 && key.is_some();
        let request = LoginRequest {
            email: (!resumed).then(|| email(i)),
            password: (!resumed).then(|| PASSWORD.to_owned()),
            resume_key: if resumed { key.take() } else { None },
            client_version: CLIENT_PROTOCOL,
        };
        let answer = http.post::<_, LoginResponse>("/v1/login", &request).await;
        let counting = measuring.load(Ordering::Relaxed);
        match answer {
            Ok(LoginResponse::Ok { resume_key, .. }) => {
                key = Some(resume_key);
                if counting && resumed {
                    tally.resumed += 1;
                } else if counting {
                    tally.password += 1;
                }
            }
            other => {
                if counting {
                    tally.failed += 1;
                }
                // Refused or queued: not a login; pause rather than spin.
                if let Err(e) = &other {
                    tracing::debug!(error = %e, "bench login failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tally
}
