//! The accepting side: [`bind`] a listener, [`serve`] links on it.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};
use tracing::Instrument as _;

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, info, warn};

use super::{
    ConfigError, HandshakeError, Link, LinkConfig, PeerInfo,
    handshake::{accept_hello, count_handshake_failure, handshake_framed, send_refusal, within},
    io::establish,
};
use crate::stats::{Counter, LinkStats};

/// The wait after a failed `accept`, doubled after each failure in a row.
const ACCEPT_RETRY_FIRST: Duration = Duration::from_millis(10);
const ACCEPT_RETRY_MAX: Duration = Duration::from_secs(1);

/// Binds a TCP listener on `addr` (`host:port`; port 0 = any free port) and
/// returns it with the address it got.
pub async fn bind(addr: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Serves links on `listener` until `shutdown` completes.
///
/// Each accepted connection gets its own task: the handshake (bounded by
/// [`LinkConfig::handshake_timeout`]), then `handler` with the established
/// [`Link`]. At most [`LinkConfig::max_links`] connections are served at once;
/// further ones wait in the accept backlog. A refused or broken connection is
/// logged and counted in [`LinkConfig::stats`] and never affects the others.
///
/// On shutdown, every link is closed with
/// [`CloseReason::Shutdown`](super::CloseReason::Shutdown) (its `recv`
/// returns `None`) and `serve` returns once every handler has returned — so a
/// handler must end when its link does.
pub async fn serve<H, Fut>(
    listener: TcpListener,
    cfg: LinkConfig,
    handler: H,
    shutdown: impl Future,
) -> Result<(), ConfigError>
where
    H: Fn(Link) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    cfg.validate()?;
    let cfg = Arc::new(cfg);
    let handler = Arc::new(handler);
    let limit = Arc::new(Semaphore::new(cfg.max_links));
    let root = CancellationToken::new();
    let tracker = TaskTracker::new();
    let local = listener.local_addr().ok();
    info!(addr = ?local, node = ?cfg.node, role = %cfg.role, "serving links");
    tokio::pin!(shutdown);
    let mut accept_delay = ACCEPT_RETRY_FIRST;
    loop {
        let permit = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // never closed; defensive
            },
        };
        let accepted = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            conn = accept_next(&listener, &mut accept_delay, &cfg.stats) => conn,
        };
        let Some((stream, addr)) = accepted else {
            continue;
        };
        tracker.spawn(
            serve_link(
                stream,
                addr,
                cfg.clone(),
                handler.clone(),
                root.child_token(),
                tracker.clone(),
                permit,
            )
            .in_current_span(),
        );
    }
    drop(listener);
    root.cancel();
    tracker.close();
    tracker.wait().await;
    info!(addr = ?local, "link server stopped");
    Ok(())
}

/// Accepts the next connection. After a failed accept (usually out of file
/// descriptors) it waits `delay`, doubled for the next failure, so that some
/// links can close rather than the listener spin, and returns `None`.
async fn accept_next(
    listener: &TcpListener,
    delay: &mut Duration,
    stats: &LinkStats,
) -> Option<(TcpStream, SocketAddr)> {
    match listener.accept().await {
        Ok(conn) => {
            *delay = ACCEPT_RETRY_FIRST;
            Some(conn)
        }
        Err(e) => {
            stats.bump(Counter::AcceptErrors);
            warn!(error = %e, "accept failed; retrying in {delay:?}");
            tokio::time::sleep(*delay).await;
            *delay = (*delay * 2).min(ACCEPT_RETRY_MAX);
            None
        }
    }
}

/// One accepted connection's task: the handshake, then `handler` with the
/// link, holding one of [`LinkConfig::max_links`] slots throughout.
async fn serve_link<H, Fut>(
    stream: TcpStream,
    addr: SocketAddr,
    cfg: Arc<LinkConfig>,
    handler: Arc<H>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    _slot: OwnedSemaphorePermit,
) where
    H: Fn(Link) -> Fut,
    Fut: Future<Output = ()>,
{
    let link = tokio::select! {
        biased;
        _ = cancel.cancelled() => return,
        link = accept_link(stream, addr, &cfg, cancel.clone(), &tracker) => link,
    };
    if let Some(link) = link {
        handler(link).await;
    }
}

/// Runs the accepting handshake on one connection; logs and counts failure.
async fn accept_link(
    stream: TcpStream,
    addr: SocketAddr,
    cfg: &LinkConfig,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Option<Link> {
    let mut framed = handshake_framed(stream);
    match within(cfg.handshake_timeout, accept_hello(&mut framed, cfg)).await {
        Ok(hello) => {
            info!(peer = %addr, node = ?hello.node, role = %hello.role, "link up");
            let peer = PeerInfo {
                role: hello.role,
                node: hello.node,
                addr,
            };
            Some(establish(framed, peer, cfg, cancel, tracker))
        }
        Err(e) => {
            count_handshake_failure(&cfg.stats, &e);
            if matches!(e, HandshakeError::PeerClosed) {
                // A port probe or health check: nothing to refuse.
                debug!(peer = %addr, "connection closed before a hello");
            } else {
                warn!(peer = %addr, "link refused: {e}");
            }
            send_refusal(&mut framed, &e, cfg).await;
            None
        }
    }
}
