//! `tessera admin`: operator actions over the coordinator's admin API,
//! authenticated with the admin token (never the cluster secret) — kick or ban a player, move a
//! scene to another scene server, drain a scene server before maintenance.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tessera_bots::http_client::HttpError;
use tessera_cluster::{DrainRequest, DrainResponse, MoveRequest, MoveResponse};

use super::cluster::api_client;
use crate::config::Config;

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    action: AdminAction,
    /// The coordinator's admin API (default: from the config file,
    /// `coordinator.admin_http` or else `coordinator.http`).
    #[arg(long, global = true)]
    http: Option<String>,
    /// Config file holding `coordinator.admin_token` (default:
    /// ./tessera.toml if it exists; `TESSERA_ADMIN_TOKEN` overrides it).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum AdminAction {
    /// End a player's session (by account email or avatar name).
    Kick(AdminTarget),
    /// Lock the account (logins refused) and end its session.
    Ban(AdminTarget),
    /// Move a scene to another scene server. Its host flushes and drops it,
    /// then the target loads it under a new epoch; its players see a pause,
    /// not a disconnect. One move at a time in the cluster.
    MoveScene(MoveArgs),
    /// Move every scene off a scene server, one at a time, and place nothing
    /// new on it (before maintenance); `--cancel` lets it take scenes again.
    Drain(DrainArgs),
}

#[derive(Debug, Args)]
struct AdminTarget {
    /// The account's email.
    #[arg(long, conflicts_with = "avatar", required_unless_present = "avatar")]
    email: Option<String>,
    /// An avatar name of the account.
    #[arg(long)]
    avatar: Option<String>,
    /// Shown to the player.
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Debug, Args)]
struct MoveArgs {
    /// The scene to move (as `tessera status` lists it).
    name: String,
    /// The scene server to move it to (its node name).
    #[arg(long)]
    to: String,
}

#[derive(Debug, Args)]
struct DrainArgs {
    /// The scene server to empty (its node name).
    server: String,
    /// Stop draining: the server may be given scenes again.
    #[arg(long)]
    cancel: bool,
}

/// `tessera admin …`.
pub fn admin(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(args.config.as_deref())?;
    let token = config.coordinator.admin_token.get().to_owned();
    let http = args.http.unwrap_or_else(|| config.admin_url());
    let api = Api {
        http: &http,
        token: &token,
    };
    match args.action {
        AdminAction::Kick(t) => kick(&api, "kick", t),
        AdminAction::Ban(t) => kick(&api, "ban", t),
        AdminAction::MoveScene(m) => {
            let body = MoveRequest {
                scene: m.name,
                to: m.to,
            };
            let r: MoveResponse = api.post("move-scene", &body)?;
            println!(
                "moving scene {} to {}: it pauses while it moves; `tessera status` shows it placed",
                r.scene, r.to
            );
            Ok(ExitCode::SUCCESS)
        }
        AdminAction::Drain(d) => {
            let body = DrainRequest {
                server: d.server,
                cancel: d.cancel,
            };
            let r: DrainResponse = api.post("drain", &body)?;
            if !r.draining {
                println!("{} takes scenes again", r.server);
            } else if r.scenes.is_empty() {
                println!("{} is draining and hosts no scene", r.server);
            } else {
                println!(
                    "draining {}: {} scene(s) to move, one at a time ({}); `tessera status` shows them leave",
                    r.server,
                    r.scenes.len(),
                    r.scenes.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The coordinator's admin API and the credential it wants.
struct Api<'a> {
    http: &'a str,
    token: &'a str,
}

impl Api<'_> {
    /// `POST /v1/admin/{path}` with `body`; a refusal is an error saying why.
    fn post<Q: Serialize, A: DeserializeOwned>(&self, path: &str, body: &Q) -> anyhow::Result<A> {
        let client = api_client(self.http, Duration::from_secs(10))?;
        let url = format!("{}/v1/admin/{path}", client.base());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let answer = rt.block_on(client.post_as::<_, A>(
            &format!("/v1/admin/{path}"),
            body,
            Some(self.token),
        ));
        answer.map_err(|e| match e {
            HttpError::Api { status, error } => {
                anyhow::anyhow!("{path} refused (HTTP {status}): {}", error.error)
            }
            HttpError::Transport(why) => anyhow::anyhow!("cannot reach {url}: {why}"),
            HttpError::Timeout => anyhow::anyhow!("{url}: no answer within 10 s"),
            other => anyhow::anyhow!("{url}: {other}"),
        })
    }
}

/// `tessera admin kick|ban`.
fn kick(api: &Api<'_>, path: &str, target: AdminTarget) -> anyhow::Result<ExitCode> {
    let body = tessera_proto::login::KickRequest {
        email: target.email,
        avatar: target.avatar,
        reason: target.reason,
    };
    let r: tessera_proto::login::AdminResponse = api.post(path, &body)?;
    println!(
        "account {}: {}{}",
        r.account,
        if r.banned { "banned, " } else { "" },
        if r.kicked {
            "session ended"
        } else {
            "no live session"
        }
    );
    Ok(ExitCode::SUCCESS)
}
