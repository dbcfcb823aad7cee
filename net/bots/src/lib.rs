//! # tessera-bots — clients of the cluster
//!
//! * [`bot`]: many simulated players in one process through the real login
//!   API and gate, with behaviours and a report (`tessera bots`);
//! * [`tool`]: link clients for tests, benches and operator tools (sessions,
//!   attach and detach, inputs) without UDP clients behind them;
//! * [`http_client`]: a bounded JSON client for the coordinator's HTTP API.
//!
//! **API Boundary.** Everything here is a *client*: it must never hold
//! authority over the world, bypass the login, gate or link paths a real
//! client or node uses, or panic on what a server sends.

pub mod bot;
pub mod http_client;
pub mod tool;
