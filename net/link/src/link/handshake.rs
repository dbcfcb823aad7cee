//! The handshake: hello, challenge, response, welcome over the cluster
//! secret, from the accepting side ([`accept_hello`]) or the connecting side
//! ([`offer_hello`]), and what a failed one is counted as and tells the peer.

use std::{future::Future, time::Duration};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use tessera_wire::{
    Challenge, Handshake, HandshakeDecodeError, Hello, MAX_NODE_NAME, NONCE_LEN, Nonce, Response,
    Side, Transcript,
};

use super::{HandshakeError, LinkConfig, config::valid_node_name};
use crate::{
    frame::{FrameCodec, FrameError},
    stats::{Counter, LinkStats},
};

/// The cap on handshake frames, whatever `max_frame` is: a peer that has not
/// authenticated can make us buffer no more than this.
const HANDSHAKE_MAX_FRAME: usize = 4096;

/// How long a refusal frame may take to write before the link is dropped anyway.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Frames a fresh connection for its handshake: small frames only, sent
/// without Nagle's delay.
pub(super) fn handshake_framed(stream: TcpStream) -> Framed<TcpStream, FrameCodec> {
    let _ = stream.set_nodelay(true);
    Framed::new(stream, FrameCodec::new(HANDSHAKE_MAX_FRAME))
}

/// Runs one side's handshake, failing with [`HandshakeError::Timeout`] after
/// `timeout`.
pub(super) async fn within<T>(
    timeout: Duration,
    handshake: impl Future<Output = Result<T, HandshakeError>>,
) -> Result<T, HandshakeError> {
    tokio::time::timeout(timeout, handshake)
        .await
        .unwrap_or(Err(HandshakeError::Timeout(timeout)))
}

/// Tells the peer why its handshake failed, if it should know. Best effort:
/// the peer may already be gone.
pub(super) async fn send_refusal(
    framed: &mut Framed<TcpStream, FrameCodec>,
    e: &HandshakeError,
    cfg: &LinkConfig,
) {
    if let Some((code, reason)) = e.refusal(cfg) {
        let frame = Bytes::from(Handshake::Refused { code, reason }.encode());
        let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, framed.send(frame)).await;
    }
}

/// Reads one handshake frame.
async fn read_handshake(
    framed: &mut Framed<TcpStream, FrameCodec>,
) -> Result<Result<Handshake, HandshakeDecodeError>, HandshakeError> {
    match framed.next().await {
        None => Err(HandshakeError::PeerClosed),
        Some(Err(e)) => Err(HandshakeError::Frame(e)),
        Some(Ok(frame)) => Ok(Handshake::decode(&frame)),
    }
}

/// A fresh nonce from the operating system's CSPRNG.
fn fresh_nonce() -> Result<Nonce, HandshakeError> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n).map_err(|e| HandshakeError::Random(e.to_string()))?;
    Ok(n)
}

fn unexpected(expected: &str, got: Result<Handshake, HandshakeDecodeError>) -> HandshakeError {
    match got {
        Ok(Handshake::Refused { code, reason }) => HandshakeError::Refused { code, reason },
        Ok(other) => HandshakeError::Malformed(format!(
            "expected {expected}, got {}",
            handshake_kind(&other)
        )),
        Err(HandshakeDecodeError::Version { theirs }) => HandshakeError::Version { theirs },
        Err(e) => HandshakeError::Malformed(e.to_string()),
    }
}

async fn send_handshake(
    framed: &mut Framed<TcpStream, FrameCodec>,
    h: &Handshake,
) -> Result<(), HandshakeError> {
    Ok(framed.send(Bytes::from(h.encode())).await?)
}

/// The accepting side: hello in, challenge out, response in, welcome out.
pub(super) async fn accept_hello(
    framed: &mut Framed<TcpStream, FrameCodec>,
    cfg: &LinkConfig,
) -> Result<Hello, HandshakeError> {
    let hello = match read_handshake(framed).await? {
        Ok(Handshake::Hello(h)) => h,
        other => return Err(unexpected("a hello", other)),
    };
    if !valid_node_name(&hello.node) {
        return Err(HandshakeError::Malformed(format!(
            "node name must be 1..={MAX_NODE_NAME} bytes without control characters"
        )));
    }
    if !cfg.accept_roles.contains(&hello.role) {
        return Err(HandshakeError::Role(hello.role));
    }
    let nonce = fresh_nonce()?;
    let transcript = Transcript {
        connecting_role: hello.role,
        connecting_node: &hello.node,
        connecting_nonce: &hello.nonce,
        accepting_role: cfg.role,
        accepting_node: &cfg.node,
        accepting_nonce: &nonce,
    };
    let challenge = Handshake::Challenge(Challenge {
        role: cfg.role,
        node: cfg.node.clone(),
        nonce,
        proof: cfg.secret.proof(Side::Accepting, &transcript),
    });
    send_handshake(framed, &challenge).await?;
    let response = match read_handshake(framed).await? {
        Ok(Handshake::Response(r)) => r,
        other => return Err(unexpected("a response", other)),
    };
    if !cfg
        .secret
        .verify(Side::Connecting, &transcript, &response.proof)
    {
        return Err(HandshakeError::Secret);
    }
    send_handshake(framed, &Handshake::Welcome).await?;
    Ok(hello)
}

/// The connecting side: hello out, challenge in (the acceptor proves it holds
/// the secret first), response out, welcome in.
pub(super) async fn offer_hello(
    framed: &mut Framed<TcpStream, FrameCodec>,
    cfg: &LinkConfig,
) -> Result<Challenge, HandshakeError> {
    let nonce = fresh_nonce()?;
    let hello = Hello {
        role: cfg.role,
        node: cfg.node.clone(),
        nonce,
    };
    send_handshake(framed, &Handshake::Hello(hello)).await?;
    let challenge = match read_handshake(framed).await? {
        Ok(Handshake::Challenge(c)) => c,
        other => return Err(unexpected("a challenge", other)),
    };
    if !valid_node_name(&challenge.node) {
        return Err(HandshakeError::Malformed(
            "bad node name in the challenge".into(),
        ));
    }
    if !cfg.accept_roles.contains(&challenge.role) {
        return Err(HandshakeError::Role(challenge.role));
    }
    let transcript = Transcript {
        connecting_role: cfg.role,
        connecting_node: &cfg.node,
        connecting_nonce: &nonce,
        accepting_role: challenge.role,
        accepting_node: &challenge.node,
        accepting_nonce: &challenge.nonce,
    };
    if !cfg
        .secret
        .verify(Side::Accepting, &transcript, &challenge.proof)
    {
        // The acceptor does not hold our secret: it gets nothing from us.
        return Err(HandshakeError::Secret);
    }
    let response = Handshake::Response(Response {
        proof: cfg.secret.proof(Side::Connecting, &transcript),
    });
    send_handshake(framed, &response).await?;
    match read_handshake(framed).await? {
        Ok(Handshake::Welcome) => Ok(challenge),
        other => Err(unexpected("a welcome", other)),
    }
}

fn handshake_kind(h: &Handshake) -> &'static str {
    match h {
        Handshake::Hello(_) => "a hello",
        Handshake::Challenge(_) => "a challenge",
        Handshake::Response(_) => "a response",
        Handshake::Welcome => "a welcome",
        Handshake::Refused { .. } => "a refusal",
    }
}

/// Counts a failed handshake under the right counters.
pub(super) fn count_handshake_failure(stats: &LinkStats, e: &HandshakeError) {
    match e {
        HandshakeError::Timeout(_) => stats.bump(Counter::HandshakeTimeouts),
        HandshakeError::Frame(FrameError::Oversized { .. }) => {
            stats.bump(Counter::Oversized);
            stats.bump(Counter::HandshakesRefused);
        }
        HandshakeError::Frame(FrameError::Truncated { .. }) => {
            stats.bump(Counter::DecodeErrors);
        }
        HandshakeError::Frame(FrameError::Io(_)) => stats.bump(Counter::IoErrors),
        HandshakeError::Malformed(_) => {
            stats.bump(Counter::DecodeErrors);
            stats.bump(Counter::HandshakesRefused);
        }
        HandshakeError::Version { .. }
        | HandshakeError::Secret
        | HandshakeError::Role(_)
        | HandshakeError::Refused { .. } => stats.bump(Counter::HandshakesRefused),
        HandshakeError::PeerClosed | HandshakeError::Random(_) => {}
    }
}
