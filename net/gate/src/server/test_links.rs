//! For the server's tests: a stand-in peer that accepts gate links.

use tessera_link::{Link, LinkConfig, serve};
use tessera_wire::Role;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Listens as `role` named `name` on a port of its own; every gate link it
/// accepts goes to the returned receiver. Returns the address too.
pub(super) async fn accept_gate_links(
    role: Role,
    name: &str,
    secret: &str,
    stop: CancellationToken,
) -> (String, mpsc::Receiver<Link>) {
    let (listener, addr) = tessera_link::bind("127.0.0.1:0").await.expect("bind");
    let mut cfg = LinkConfig::new(role, name, secret);
    cfg.accept_roles = vec![Role::Gate];
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(serve(
        listener,
        cfg,
        move |link| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(link).await;
            }
        },
        stop.cancelled_owned(),
    ));
    (addr.to_string(), rx)
}
