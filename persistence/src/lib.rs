//! `tessera-persistence` — the data service's storage: accounts, avatars, scenes and the PC
//! state each scene owns, in one redb file; argon2id password hashing with a concurrency
//! cap; and the write-behind writer the scene hosts feed.
//!
//! See `README.md` beside this crate for the schema and the guarantees.
//!
//! **API Boundary.** This crate owns the database file and its formats: it must
//! never know about scenes' ECS, the network or the cluster's state; callers hand
//! it plain records.
//!
//! **Invariant:** every write is one durable transaction (`Durability::Immediate`, quick
//! repair on); a killed process loses at most what it had not yet committed and never
//! leaves a partial transaction.
//!
//! **Invariant:** nothing here knows about tokio; blocking calls (password hashing,
//! commits) are for blocking threads.

mod accounts;
mod avatars;
pub mod error;
mod export;
mod migrate;
pub mod password;
mod scenes;
pub mod schema;
mod store;
mod types;
pub mod validate;
pub mod writer;

pub use avatars::NewAvatar;
pub use error::*;
pub use export::{ExportError, ExportRecord, Importer};
pub use password::PasswordHasher;
pub use store::{CheckReport, Store, WriteHold};
pub use types::*;
pub use writer::{
    CommitReport, Submission, Submitted, Writer, WriterConfig, WriterStats, torture_state,
};
