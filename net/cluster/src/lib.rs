//! # tessera-cluster — the pure cluster state machine
//!
//! This crate owns the coordinator's decisions: the **registry** of scene
//! servers and gates, the scene catalog and its **placement** (with
//! per-scene epochs), and the **avatar directory** with single sign-on, all
//! in one [`ClusterState`]. It must never do I/O, use tokio, spawn threads,
//! open sockets or files, or read a clock: the networked coordinator
//! (`tessera-coordinator`) feeds it what it hears (registrations,
//! heartbeats, scene events, logins, attach requests) with the current time
//! in milliseconds passed in, and carries out the [`Effect`]s every mutating
//! method returns, **in order**.
//!
//! The same inputs always give the same state and the same effects, so every
//! failure scenario of the design (a server killed, paused and resumed, a
//! coordinator restart) is a plain unit test here.
//!
//! # Code map
//!
//! * `state.rs` — [`ClusterState`] itself, its constructors, the passing of
//!   time ([`ClusterState::tick`]) and [`ClusterState::check_invariants`];
//! * `registry.rs` — nodes: register, heartbeat, scene ready, deregister;
//! * `placement.rs` — the scene catalog, picking a server, claims, epochs;
//! * `balance.rs` — planned moves: an operator's move and drain, and the
//!   hand-off of scenes to a server that joins;
//! * `avatars.rs` — the avatar directory, sessions and transfers;
//! * `effects.rs` — the [`Effect`]s handed to the networked layer;
//! * `config.rs` — [`ClusterConfig`] and scene crowding ([`SceneStatus`]);
//! * `status.rs` — the `GET /v1/status` snapshot ([`ClusterStatus`]).
//!
//! # What it owns
//!
//! * **Registry** ([`ClusterState::register`], [`ClusterState::heartbeat`],
//!   [`ClusterState::deregister`]): nodes by name, each a scene server or a
//!   gate, with an id ([`NodeId`]) that stays the same when the same name
//!   registers again. A node is dead once `heartbeat_timeout_ms` passes
//!   without a heartbeat; a dead node stays listed (not alive) until it
//!   heartbeats again or registers again.
//! * **Placement**: every catalog scene is placed on the least-loaded live
//!   scene server that is not draining (fewest scenes, then total reported
//!   population, then name, then id) and stays there while that server
//!   lives, unless a planned move takes it elsewhere. Each placement carries
//!   an [`Epoch`](tessera_wire::Epoch) that strictly increases per scene.
//! * **Planned moves** ([`ClusterState::move_scene`],
//!   [`ClusterState::drain`], and the hand-off to a server that joins): the
//!   host flushes and drops the scene, reports it released once its saves
//!   are durable ([`ClusterState::scene_released`]), and the scene is placed
//!   on the target under a fresh epoch, one move at a time.
//! * **Claims**: a scene server tells the state which `(scene, epoch)` it
//!   hosts, on register and in every heartbeat. A claim of the current
//!   placement is fine; a claim older than the scene's latest epoch is
//!   refused with [`Effect::DropScene`] (stale: drop without writing); a claim
//!   of the latest epoch of an unplaced scene, or of a newer epoch than the
//!   state knows, is adopted (this is how placement is rebuilt after a
//!   coordinator restart).
//! * **Avatar directory** (see [below](self#avatar-directory)).
//!
//! # Contract with the networked coordinator
//!
//! * A node is identified by its **name**. Every new link starts with
//!   [`ClusterState::register`]; the networked layer maps the link to the
//!   [`NodeId`] it returned and refuses a second live link under a name
//!   already connected (two processes sharing a name would share an
//!   identity). On [`Effect::NodeDown`] it closes the node's link.
//! * **Any** message from a node ([`heartbeat`](ClusterState::heartbeat),
//!   [`scene_ready`](ClusterState::scene_ready)) proves it alive, even after
//!   it was declared dead. [`UnknownNode`] means "register again" (it was
//!   deregistered, or the coordinator restarted).
//! * Call [`ClusterState::tick`] periodically (e.g. every 100 ms) so silent
//!   nodes expire even when nothing else happens.
//! * A heartbeat lists every scene the server hosts **or is loading**
//!   (population 0 while loading): it is the server's full claim.
//! * Effects are instructions, not facts: a [`Effect::PlaceScene`] may be
//!   lost with its link, or the load may fail. The server's claims reconcile:
//!   a placement missing from a register, or from a heartbeat once it is
//!   older than `heartbeat_timeout_ms`, is given up and placed again under a
//!   fresh epoch. Likewise attaches and detaches lost with a link are
//!   reconciled by [`Effect::SyncAttached`] when the server registers again.
//! * After a coordinator restart, gates replay [`ClusterState::login`] and
//!   [`ClusterState::attach`] for their live sessions within
//!   `restart_grace_ms`; the resulting [`Effect::AttachAt`] reaches a host
//!   that may already have the avatar attached for that session, which must
//!   treat it as a no-op. When the grace period ends, every placed scene
//!   gets one [`Effect::SyncAttached`] with the rebuilt directory.
//! * Ignore a scene's events from a placement that is no longer current. So
//!   when a transfer's source scene changes placement (failover, given up,
//!   a planned move, a newer claim) its detach report can never be handled:
//!   the state aborts the transfer itself and says so with
//!   [`Effect::TransferAborted`], then the avatar is attached at the
//!   source's new host, loaded from the last flush. Forget the pending
//!   portal then, so the avatar's next detach and portal are handled.
//!
//! # Epochs and coordinator restarts
//!
//! Epochs are per scene. Whenever a scene's latest epoch changes the state
//! emits [`Effect::PersistEpoch`] *before* the matching
//! [`Effect::PlaceScene`]: the networked coordinator must store it durably
//! (redb) before it sends anything carrying that epoch. After a restart it
//! builds the state with [`ClusterState::recover`], passing those stored
//! epochs: new placements then never reuse an epoch, and a paused server that
//! held an old epoch cannot win its scene back. `recover` also holds new
//! placements back for `restart_grace_ms`, so the servers that still host
//! their scenes can re-register and keep them instead of having them placed
//! elsewhere first.
//!
//! # Avatar directory
//!
//! An avatar always belongs to exactly one scene (the design's "the position
//! belongs to the scene"); it is [`AvatarPresence::Offline`] there (detached),
//! [`AvatarPresence::Online`] (attached for a session), or
//! [`AvatarPresence::Transferring`] (a portal: detached from its scene, whose
//! host is saving it, on its way to another scene). A transfer is three
//! explicit steps — [`ClusterState::begin_transfer`] (detach at the source),
//! [`ClusterState::complete_transfer`] (once the source reported the detach
//! and its state is saved: the avatar's scene changes, persisted by
//! [`Effect::PersistAvatarScene`], then attach at the target) or
//! [`ClusterState::abort_transfer`] — so a crash at any point leaves the
//! avatar in exactly one scene: the source until the commit, the target after.
//! A transfer waits for its detach report only while its source keeps the
//! placement the detach went to; when that placement changes the transfer is
//! aborted ([`Effect::TransferAborted`]).
//!
//! Single sign-on: one session per account. A second [`ClusterState::login`]
//! of the same account ends the old session (its avatar is detached) and
//! returns [`Effect::Kick`] for it. An attach is refused while the avatar is
//! online for another session; the same session attaching the same avatar
//! again is a **reconnect** and re-sends the attach (hosts treat an attach of
//! an avatar already attached for the same session as a no-op).
//!
//! When a scene fails over, its avatars stay in it; the online ones are
//! attached again at the new host with [`Effect::AttachAt`], which loads them
//! from the last flush. While a scene is unplaced, attaches are accepted and
//! their [`Effect::AttachAt`] is sent when the scene is placed.
//!
//! # Invariants
//!
//! [`ClusterState::check_invariants`] checks the ones about a single state;
//! the property test (`proptests.rs`) calls it after every step and checks
//! the ones about histories (epochs never going back, across restarts too;
//! no avatar lost or duplicated; hosts attached exactly as the directory
//! says) against a model.
//!
//! **Invariant:** a placed scene's server is registered, alive, a scene
//! server, and lists the scene; a dead node hosts nothing. So a scene is never
//! listed on two servers, let alone two live ones.
//!
//! **Invariant:** a scene's epoch never decreases and a new placement always
//! gets a fresh epoch above every epoch the scene had, so no scene is ever
//! hosted by two servers at the same epoch.
//!
//! **Invariant:** at most one scene is moving at a time, and a moving scene
//! is placed (on its old host) until its release.
//!
//! **Invariant:** every avatar is in exactly one catalog scene, and the
//! per-scene index agrees with it.
//!
//! **Invariant:** a session has at most one avatar attached or in transfer,
//! that avatar names the session back, and an account has at most one
//! session.
//!
//! **Invariant:** nothing here reads a clock, spawns, or does I/O; maps are
//! `BTreeMap`s, so effects come out in a deterministic order.

mod avatars;
mod balance;
mod config;
mod effects;
mod placement;
mod registry;
mod state;
mod status;

#[cfg(test)]
mod avatar_tests;
#[cfg(test)]
mod balance_tests;
#[cfg(test)]
mod liveness_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod transfer_tests;

pub use avatars::{
    AddAvatarError, AttachError, AvatarPresence, AvatarView, DetachError, LoginError, TransferError,
};
pub use balance::{DrainError, MOVE_TIMEOUTS, MoveError};
pub use config::{ClusterConfig, ClusterConfigError, SceneStatus};
pub use effects::{DropReason, Effect, KickReason};
pub use placement::SceneView;
pub use registry::{NodeId, NodeKind, NodeView, RegisterError, UnknownNode};
pub use state::ClusterState;
pub use status::{
    ClusterStatus, DrainRequest, DrainResponse, GateRow, MoveRequest, MoveResponse, SceneRow,
    ServerRow,
};
// Sessions and accounts are the client protocol's ids, defined once there.
pub use tessera_proto::{AccountId, SessionId};
