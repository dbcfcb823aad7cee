//! The gate's client-facing UDP layer.
//!
//! * [`screen`]: the datagram screen every inbound datagram passes before
//!   netcode sees it;
//! * [`token`]: connect tokens carrying [`TokenClaims`], and the
//!   [`NonceBook`] that makes each token single-use.

pub mod screen;
pub mod token;

pub use screen::{Direction, PacketKind, Reject, Screen, ScreenStats, classify};
pub use token::{
    BurnError, ClaimsError, IssueError, IssuedToken, NonceBook, NonceBookStats, RecordError,
    TokenClaims, TokenDecodeError, TokenIssuer, unix_now,
};
