//! A real gate on 127.0.0.1 for the transport tests: bound on an OS port,
//! issuing tokens as a login does, waiting for its events under a time bound.

// Each test crate uses its own part of this.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_gate::token::{from_hex, read_standard, to_hex, write_standard};
use tessera_gate::{Admission, Gate, GateConfig, GateEvent, NonceBook, TokenIssuer, unix_now};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// The bound on each wait of a test.
pub const LIMIT: Duration = Duration::from_secs(20);

pub struct GateFixture {
    pub gate: Gate,
    pub events: mpsc::Receiver<GateEvent>,
    pub issuer: TokenIssuer,
    pub book: Arc<Mutex<NonceBook>>,
}

impl GateFixture {
    /// A gate with `protocol` and `key`, a nonce book of `nonces`, waking
    /// every 10 ms, with `tweak` applied to its configuration.
    pub async fn bind(
        protocol: u64,
        key: [u8; 32],
        nonces: usize,
        tweak: impl FnOnce(&mut GateConfig),
    ) -> Self {
        let mut config = GateConfig::new(protocol, key);
        config.update_interval = Duration::from_millis(10);
        tweak(&mut config);
        let book = Arc::new(Mutex::new(NonceBook::new(nonces, Duration::from_secs(30))));
        let admission: Arc<dyn Admission> = book.clone();
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (gate, events) = Gate::bind(config, &[addr], admission).await.unwrap();
        let issuer = TokenIssuer::new(protocol, key, Duration::from_secs(30), 5).unwrap();
        Self {
            gate,
            events,
            issuer,
            book,
        }
    }

    /// A token as a login hands it out (hex of the standard form, nonce
    /// recorded), read back as a client does: its client id is 0, for the
    /// standard form does not carry it.
    pub fn token(&mut self, account: u64, client_id: u64) -> renetcode::ConnectToken {
        let now = unix_now();
        let issued = self
            .issuer
            .issue(now, account, client_id, &self.gate.open_addresses())
            .unwrap();
        self.book
            .lock()
            .unwrap()
            .record(issued.claims.nonce, now)
            .unwrap();
        let hex = to_hex(&write_standard(&issued.token));
        read_standard(&from_hex(&hex).unwrap()).unwrap()
    }

    /// Reads gate events until one matches.
    pub async fn expect(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&GateEvent) -> bool,
    ) -> GateEvent {
        let wait = async {
            loop {
                let event = self.events.recv().await.expect("gate event queue closed");
                if pred(&event) {
                    return event;
                }
            }
        };
        timeout(LIMIT, wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for gate event: {what}"))
    }

    pub async fn stop(self) {
        timeout(LIMIT, self.gate.shutdown())
            .await
            .expect("gate shutdown timed out");
    }
}
