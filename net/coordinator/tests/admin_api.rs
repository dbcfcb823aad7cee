//! The admin API's credential and listener, on a coordinator alone (no
//! gate or scene server needed): the admin token, never the cluster secret,
//! opens it, and with `admin_http` it answers only on its own listener.

use std::net::SocketAddr;
use std::time::Duration;

use tessera_cluster::ClusterConfig;
use tessera_coordinator::{
    AdminToken, Coordinator, CoordinatorConfig, CoordinatorConfigError, StartError,
};
use tessera_wire::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "admin-api-test-cluster-secret";
const TOKEN: &str = "admin-api-test-admin-token";

/// Runs `f` on a runtime and fails the test after `secs`.
fn bounded<F: std::future::Future<Output = ()>>(secs: u64, f: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(secs), f)
            .await
            .expect("the test ran out of time");
    });
}

fn config(data: &std::path::Path, admin_http: Option<&str>) -> CoordinatorConfig {
    CoordinatorConfig {
        listen: "127.0.0.1:0".into(),
        http: "127.0.0.1:0".into(),
        admin_http: admin_http.map(str::to_owned),
        admin_token: AdminToken::new(TOKEN),
        data: data.to_path_buf(),
        ..CoordinatorConfig::default()
    }
}

async fn start(config: CoordinatorConfig) -> Result<Coordinator, StartError> {
    Coordinator::start(
        config,
        ClusterConfig::default(),
        Secret::new(SECRET),
        vec!["field".into()],
    )
    .await
}

/// One HTTP/1.1 request; the status code and the body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = bearer.map_or(String::new(), |b| format!("Authorization: Bearer {b}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(body.as_bytes()).await.expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.expect("read");
    let code = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (code, body)
}

const KICK: &str = r#"{"email":"nobody@example.com"}"#;

#[test]
fn the_admin_api_takes_its_own_token_not_the_cluster_secret() {
    bounded(30, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let coord = start(config(dir.path(), None)).await.expect("started");
        let at = coord.admin_addr();
        assert_eq!(at, coord.http_addr(), "one listener by default");
        let kick = |bearer| request(at, "POST", "/v1/admin/kick", bearer, KICK);
        let (code, body) = kick(None).await;
        assert_eq!(code, 401, "{body}");
        let (code, body) = kick(Some(SECRET)).await;
        assert_eq!(code, 401, "the cluster secret opens nothing: {body}");
        // Through the door: the account it names does not exist.
        let (code, body) = kick(Some(TOKEN)).await;
        assert_eq!(code, 404, "{body}");
        assert!(body.contains("not_found"), "{body}");
        let (code, _) = request(at, "GET", "/v1/scenes/field/snapshot", Some(SECRET), "").await;
        assert_eq!(code, 401, "snapshots too");
        let text = coord.metrics().render();
        assert_eq!(
            tessera_metrics::read_sample(&text, "tessera_admin_unauthorized_total"),
            Some(3.0),
            "{text}"
        );
        coord.shutdown().await;
    });
}

#[test]
fn with_admin_http_the_admin_api_answers_only_there() {
    bounded(30, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let coord = start(config(dir.path(), Some("127.0.0.1:0")))
            .await
            .expect("started");
        let (public, admin) = (coord.http_addr(), coord.admin_addr());
        assert_ne!(public, admin);
        for (method, path) in [
            ("POST", "/v1/admin/kick"),
            ("POST", "/v1/admin/ban"),
            ("GET", "/v1/scenes/field/snapshot"),
            ("GET", "/map?scene=field"),
        ] {
            let (code, _) = request(public, method, path, Some(TOKEN), KICK).await;
            assert_eq!(code, 404, "{method} {path} on the public listener");
        }
        let (code, body) = request(admin, "POST", "/v1/admin/kick", Some(TOKEN), KICK).await;
        assert_eq!(code, 404, "{body}");
        assert!(body.contains("not_found"), "{body}");
        // The public API stays on the public listener, and only there.
        let (code, _) = request(public, "GET", "/v1/status", None, "").await;
        assert_eq!(code, 200);
        let (code, _) = request(admin, "GET", "/v1/status", None, "").await;
        assert_eq!(code, 404);
        coord.shutdown().await;
    });
}

#[test]
fn an_admin_token_equal_to_the_cluster_secret_is_refused() {
    bounded(30, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let same = CoordinatorConfig {
            admin_token: AdminToken::new(SECRET),
            ..config(dir.path(), None)
        };
        let e = start(same).await.expect_err("refused");
        assert!(
            matches!(
                e,
                StartError::Config(CoordinatorConfigError::AdminTokenIsSecret)
            ),
            "{e}"
        );
    });
}
