//! The client path end to end on loopback: HTTP login → connect token → UDP
//! gate (renet + netcode) → session → avatar → scene, with two players who
//! move, see each other and chat, log out and back in where they were — and
//! every bad input the issue lists, each a clear error or a counted drop
//! while the gate keeps serving the others.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "client_path/fixture.rs"]
mod fixture;
use common::bounded;
use fixture::*;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tessera_coordinator::login::LoginConfig;
use tessera_gate::server::{GateServer, GateServerConfig};
use tessera_gate::{Channel, ClientConfig, ClientEvent, GateClient};
use tessera_proto::SessionId;
use tessera_proto::client::{CLIENT_PROTOCOL, ChatScope, ChatTarget, ClientMsg, ServerMsg};
use tessera_proto::login::{LoginRequest, LoginResponse, PollRequest};
use tessera_wire::Secret;

#[test]
fn two_players_log_in_move_see_each_other_chat_and_come_back_where_they_were() {
    bounded(90, async {
        let c = Cluster::start(&["alice", "bob"], LoginConfig::default()).await;

        // Registration over HTTP, and its errors.
        let (st, v) = c
            .post(
                "/v1/register",
                &serde_json::json!({"email": "carol@example.com", "password": PASSWORD}),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        let (st, v) = c
            .post(
                "/v1/register",
                &serde_json::json!({"email": "CAROL@example.com", "password": PASSWORD}),
            )
            .await;
        assert_eq!((st, v["code"].as_str()), (409, Some("email_taken")), "{v}");
        let (st, v) = c
            .post(
                "/v1/register",
                &serde_json::json!({"email": "nope", "password": PASSWORD}),
            )
            .await;
        assert_eq!((st, v["code"].as_str()), (400, Some("invalid")), "{v}");
        let (st, _) = c
            .post("/v1/register", &serde_json::json!({"garbage": true}))
            .await;
        assert_eq!(st, 400);

        // Login errors: wrong password, unknown email, wrong client version.
        let e = c.login("alice", "wrong password!!").await.unwrap_err();
        assert_eq!((e.0, e.1.code.as_str()), (401, "bad_credentials"));
        let e = c.login("nobody", PASSWORD).await.unwrap_err();
        assert_eq!(e.0, 401);
        let (st, v) = c
            .post(
                "/v1/login",
                &LoginRequest {
                    email: Some("alice@example.com".into()),
                    password: Some(PASSWORD.into()),
                    resume_key: None,
                    client_version: CLIENT_PROTOCOL + 1,
                    game_protocol: None,
                },
            )
            .await;
        assert_eq!(
            (st, v["code"].as_str()),
            (426, Some("upgrade_required")),
            "{v}"
        );
        // A client of another game (another protocol hash) is refused, with
        // both hashes named; the default game's hash, or none, gets in.
        let other = tessera_proto::GameSchema::new("another game").hash_hex();
        let login_as = |game_protocol: Option<String>| LoginRequest {
            email: Some("alice@example.com".into()),
            password: Some(PASSWORD.into()),
            resume_key: None,
            client_version: CLIENT_PROTOCOL,
            game_protocol,
        };
        let (st, v) = c.post("/v1/login", &login_as(Some(other.clone()))).await;
        assert_eq!(
            (st, v["code"].as_str()),
            (426, Some("protocol_mismatch")),
            "{v}"
        );
        let text = v["error"].as_str().unwrap();
        let ours = tessera_proto::GameSchema::new("default").hash_hex();
        assert!(text.contains(&other) && text.contains(&ours), "{text}");
        let (_, v) = c.get("/v1/protocol").await;
        assert_eq!(v["hash"].as_str(), Some(ours.as_str()), "{v}");

        // Both log in, enter, and see each other.
        let la = c.login("alice", PASSWORD).await.unwrap();
        let lb = c.login("bob", PASSWORD).await.unwrap();
        let mut alice = Player::connect(&la).await;
        let mut bob = Player::connect(&lb).await;
        alice.enter().await;
        bob.enter().await;
        assert_eq!(
            (alice.scene.as_str(), bob.scene.as_str()),
            ("field", "field")
        );
        alice.pump(500).await;
        bob.pump(500).await;
        assert!(alice.seen.contains(&bob.net_id), "alice sees bob");
        assert!(bob.seen.contains(&alice.net_id), "bob sees alice");

        // Alice walks north for a second and stops.
        let start = alice.me.unwrap();
        alice.walk([0.0, 1.0], 1000).await;
        let moved = alice.me.unwrap();
        assert!(moved[1] > start[1] + 2.0, "{start:?} -> {moved:?}");

        // Chat: scene, global, whisper by name; a whisper to nobody is an error.
        alice.send(&ClientMsg::Chat {
            to: ChatTarget::Scene,
            text: "hello field".into(),
        });
        bob.until(5, "scene chat", |m| {
            matches!(
                m,
                ServerMsg::Chat {
                    scope: ChatScope::Scene,
                    ..
                }
            )
        })
        .await;
        bob.send(&ClientMsg::Chat {
            to: ChatTarget::Whisper("alice".into()),
            text: "psst".into(),
        });
        let w = alice
            .until(5, "whisper", |m| {
                matches!(
                    m,
                    ServerMsg::Chat {
                        scope: ChatScope::Whisper,
                        ..
                    }
                )
            })
            .await;
        assert_eq!(
            w,
            ServerMsg::Chat {
                from: "Bob".into(),
                scope: ChatScope::Whisper,
                text: "psst".into()
            }
        );
        bob.send(&ClientMsg::Chat {
            to: ChatTarget::Global,
            text: "hi all".into(),
        });
        alice
            .until(5, "global chat", |m| {
                matches!(
                    m,
                    ServerMsg::Chat {
                        scope: ChatScope::Global,
                        ..
                    }
                )
            })
            .await;
        bob.send(&ClientMsg::Chat {
            to: ChatTarget::Whisper("Nobody".into()),
            text: "?".into(),
        });
        bob.until(5, "whisper error", |m| matches!(m, ServerMsg::Error { .. }))
            .await;

        // Alice logs out (leave + disconnect) and back in: same place.
        alice.send(&ClientMsg::Leave);
        alice
            .until(5, "left", |m| matches!(m, ServerMsg::Left { .. }))
            .await;
        alice.client.close().await;
        let LoginResponse::Ok { resume_key, .. } = &la else {
            unreachable!()
        };
        // The resume key logs in without the password.
        let (st, v) = c
            .post(
                "/v1/login",
                &LoginRequest {
                    email: None,
                    password: None,
                    resume_key: Some(resume_key.clone()),
                    client_version: CLIENT_PROTOCOL,
                    game_protocol: None,
                },
            )
            .await;
        assert_eq!(st, 200, "{v}");
        let again: LoginResponse = serde_json::from_value(v).unwrap();
        let mut alice = Player::connect(&again).await;
        alice.enter().await;
        alice.pump(300).await;
        let back = alice.me.unwrap();
        assert!(
            (back[0] - moved[0]).abs() < 0.2 && (back[1] - moved[1]).abs() < 0.2,
            "came back at {back:?}, left at {moved:?}"
        );

        // Duplicate login: the older session is kicked, with a reason.
        let second = c.login("alice", PASSWORD).await.unwrap();
        let mut alice2 = Player::connect(&second).await;
        alice
            .until(5, "kicked", |m| matches!(m, ServerMsg::Kicked { .. }))
            .await;
        assert!(alice.kicked.as_deref().unwrap().contains("elsewhere"));
        alice2.enter().await;

        // A replayed token (from a fresh socket) never gets a session.
        let replay = GateClient::connect(token(&second), ClientConfig::default())
            .await
            .unwrap();
        let mut replay = Player {
            client: replay,
            session: SessionId(0),
            net_id: 0,
            scene: String::new(),
            me: None,
            seen: Default::default(),
            chat: Vec::new(),
            kicked: None,
            disconnected: false,
            entries: 0,
        };
        replay.pump(1500).await;
        assert_eq!(replay.session, SessionId(0));
        assert!(replay.chat.is_empty());

        // Bob is still served.
        alice2.send(&ClientMsg::Chat {
            to: ChatTarget::Whisper("Bob".into()),
            text: "still here?".into(),
        });
        bob.until(
            5,
            "whisper after the attacks",
            |m| matches!(m, ServerMsg::Chat { text, .. } if text == "still here?"),
        )
        .await;
        let s = c.coord().status();
        assert_eq!(s.scenes.iter().map(|r| r.online).sum::<u32>(), 2, "{s:#?}");

        // An operator kicks Bob by avatar name; he is told why.
        let (st, v) = post(
            &c.http,
            "/v1/admin/kick",
            &serde_json::json!({"avatar": "Bob", "reason": "test kick"}),
            Some(ADMIN_TOKEN),
        )
        .await;
        assert_eq!((st, v["kicked"].as_bool()), (200, Some(true)), "{v}");
        bob.until(5, "operator kick", |m| {
            matches!(m, ServerMsg::Kicked { .. })
        })
        .await;
        assert_eq!(bob.kicked.as_deref(), Some("test kick"));
        c.stop().await;
    });
}

#[test]
fn bad_datagrams_floods_and_malformed_messages_cost_only_their_sender() {
    bounded(90, async {
        let c = Cluster::start(
            &["alice", "bob", "mallory", "flood"],
            LoginConfig::default(),
        )
        .await;
        let mut alice = Player::connect(&c.login("alice", PASSWORD).await.unwrap()).await;
        let mut bob = Player::connect(&c.login("bob", PASSWORD).await.unwrap()).await;
        alice.enter().await;
        bob.enter().await;
        let gate: SocketAddr = c.gate.addresses()[0];

        // Random junk, oversized datagrams and the sequence-length hazard
        // (high nibble 9), from a stranger's socket and from alice's own.
        let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..500 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = 1 + (seed % 1400) as usize;
            let mut d: Vec<u8> = (0..len).map(|k| (seed >> (k % 56)) as u8).collect();
            if i % 5 == 0 {
                d[0] = 0x90 | (d[0] & 0x0f);
            }
            let _ = stranger.send_to(&d, gate).await;
        }
        let _ = stranger.send_to(&vec![0u8; 4000], gate).await;
        let mut hazard = vec![0x92u8; 40];
        hazard[0] = 0x92;
        alice.client.send_raw(hazard.clone()).unwrap();
        alice.client.send_raw(vec![0x21; 20]).unwrap();

        // A client that sends a message that does not decode is told and dropped.
        let mut mallory = Player::connect(&c.login("mallory", PASSWORD).await.unwrap()).await;
        mallory
            .client
            .send(Channel::Reliable, vec![0xffu8; 40])
            .unwrap();
        mallory
            .until(5, "kick for garbage", |m| {
                matches!(m, ServerMsg::Kicked { .. })
            })
            .await;
        assert_eq!(mallory.kicked.as_deref(), Some("malformed message"));

        // An oversized message and a flood of messages: disconnected.
        let mut flood = Player::connect(&c.login("flood", PASSWORD).await.unwrap()).await;
        let _ = flood.client.send(Channel::Reliable, vec![0u8; 4096]);
        for _ in 0..3000 {
            if flood
                .client
                .send(Channel::Unreliable, ClientMsg::ListAvatars.encode())
                .is_err()
            {
                break;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !flood.disconnected {
            assert!(
                Instant::now() < deadline,
                "the flooder was not disconnected"
            );
            flood.pump(100).await;
        }

        // Everyone else is still served.
        alice.send(&ClientMsg::Chat {
            to: ChatTarget::Scene,
            text: "after the storm".into(),
        });
        bob.until(
            5,
            "chat after the attacks",
            |m| matches!(m, ServerMsg::Chat { text, .. } if text == "after the storm"),
        )
        .await;
        alice.walk([1.0, 0.0], 300).await;
        let t = c.gate.transport_stats();
        let g = c.gate.stats();
        assert!(g.malformed >= 1, "{g:?}");
        assert!(
            t.screen_rejected >= 100,
            "junk was screened and counted: {t:?}"
        );
        assert!(
            t.kicked_message_flood + t.kicked_message_too_large + t.kicked_datagram_flood >= 1,
            "the flooder was kicked and counted: {t:?}"
        );
        // The gate's exposition agrees: once the kicked clients are gone,
        // two are connected, and the kicks are counted by reason.
        let source = c.gate.metrics_source();
        let scrape = || {
            let mut out = tessera_metrics::Exposition::new();
            source.collect(&mut out);
            out.render()
        };
        let value = |text: &str, series: &str| {
            tessera_metrics::read_sample(text, series)
                .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut text = scrape();
        while value(&text, "tessera_gate_clients{gate=\"gate-1\"}") != 2.0 {
            assert!(Instant::now() < deadline, "{text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
            text = scrape();
        }
        let kicks = |reason: &str| {
            value(
                &text,
                &format!("tessera_gate_kicks_total{{gate=\"gate-1\",reason=\"{reason}\"}}"),
            )
        };
        assert!(kicks("malformed_message") >= 1.0, "{text}");
        assert!(
            kicks("message_flood") + kicks("message_too_large") + kicks("datagram_flood") >= 1.0,
            "{text}"
        );
        let passed = value(&text, "tessera_gate_screen_passed_total{gate=\"gate-1\"}");
        assert!(passed > 0.0, "{text}");
        c.stop().await;
    });
}

#[test]
fn queue_rate_limits_kick_and_ban() {
    bounded(90, async {
        let c = Cluster::start(
            &["alice", "bob", "eve"],
            LoginConfig {
                max_online: 1,
                trusted_ips: Vec::new(),
                per_ip_per_s: 1,
                per_ip_burst: 12,
                token_expiry_s: 2,
                ..LoginConfig::default()
            },
        )
        .await;
        // Alice takes the only place; Bob queues, first in line.
        let la = c.login("alice", PASSWORD).await.unwrap();
        let mut alice = Player::connect(&la).await;
        alice.enter().await;
        tokio::time::sleep(Duration::from_millis(300)).await; // a gate heartbeat
        let LoginResponse::Queued {
            ticket, position, ..
        } = c.login("bob", PASSWORD).await.unwrap()
        else {
            panic!("bob should queue");
        };
        assert_eq!(position, 1);
        let (st, _) = c
            .post(
                "/v1/login/poll",
                &PollRequest {
                    ticket: "nope".into(),
                },
            )
            .await;
        assert_eq!(st, 404);
        // Alice leaves; Bob's next polls admit him. (If her goodbye datagrams
        // are lost the gate notices through netcode's 10 s timeout.)
        alice.client.close().await;
        let deadline = Instant::now() + Duration::from_secs(25);
        let lb = loop {
            let (st, v) = c
                .post(
                    "/v1/login/poll",
                    &PollRequest {
                        ticket: ticket.clone(),
                    },
                )
                .await;
            assert_eq!(st, 200, "{v}");
            let r: LoginResponse = serde_json::from_value(v).unwrap();
            if matches!(r, LoginResponse::Ok { .. }) {
                break r;
            }
            assert!(Instant::now() < deadline, "never admitted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // An expired token is refused.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let mut late = GateClient::connect(token(&lb), ClientConfig::default())
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let mut welcomed = false;
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, late.recv()).await {
            if let ClientEvent::Message { payload, .. } = &ev
                && matches!(ServerMsg::decode(payload), Ok(ServerMsg::Welcome { .. }))
            {
                welcomed = true;
            }
            if matches!(ev, ClientEvent::Disconnected(_)) {
                break;
            }
        }
        assert!(!welcomed, "an expired token opened a session");

        // Per-IP rate limit (127.0.0.1 is not trusted here): a burst, then 429.
        let mut limited = None;
        for _ in 0..20 {
            if let Err((429, e)) = c.login("eve", "wrong password!!").await {
                limited = Some(e);
                break;
            }
        }
        let e = limited.expect("rate limited");
        assert_eq!(e.code, "rate_limited");
        assert!(e.retry_after_ms.unwrap() > 0);
        // Every answer above is counted by its outcome.
        let text = c.coord().metrics().render();
        for outcome in ["ok", "queued", "bad_credentials", "rate_limited"] {
            let series = format!("tessera_login_requests_total{{outcome=\"{outcome}\"}}");
            let n = tessera_metrics::read_sample(&text, &series).unwrap_or(0.0);
            assert!(n >= 1.0, "no {outcome} login counted in\n{text}");
        }

        // Admin: without the admin token refused, and with the cluster
        // secret; kick and ban with the token.
        let (st, _) = post(
            &c.http,
            "/v1/admin/kick",
            &serde_json::json!({"avatar": "Bob"}),
            None,
        )
        .await;
        assert_eq!(st, 401);
        let (st, _) = post(
            &c.http,
            "/v1/admin/kick",
            &serde_json::json!({"avatar": "Bob"}),
            Some(SECRET),
        )
        .await;
        assert_eq!(st, 401, "the cluster secret is no admin credential");
        let (st, v) = post(
            &c.http,
            "/v1/admin/ban",
            &serde_json::json!({"email": "eve@example.com"}),
            Some(ADMIN_TOKEN),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["banned"], true);
        c.stop().await;
    });
}

#[test]
fn after_a_gate_dies_players_resume_with_their_key_where_they_were() {
    bounded(90, async {
        let mut c = Cluster::start(&["alice"], LoginConfig::default()).await;
        let la = c.login("alice", PASSWORD).await.unwrap();
        let mut alice = Player::connect(&la).await;
        alice.enter().await;
        alice.walk([1.0, 0.0], 800).await;
        let was = alice.me.unwrap();

        // The gate goes away; a new one takes its place on another port.
        let link = c.coord().link_addr().to_string();
        let old = std::mem::replace(
            &mut c.gate,
            GateServer::start(
                GateServerConfig {
                    coordinator: link,
                    name: "gate-2".into(),
                    listen: "127.0.0.1:0".into(),
                    listeners: 1,
                    heartbeat_ms: 100,
                    ..GateServerConfig::default()
                },
                Secret::new(SECRET),
            )
            .await
            .unwrap(),
        );
        drop(old);
        alice.pump(500).await;
        assert!(
            alice.disconnected,
            "the old gate's clients are disconnected"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !c
            .coord()
            .status()
            .gates
            .iter()
            .any(|g| g.name == "gate-2" && g.alive)
        {
            assert!(Instant::now() < deadline, "gate-2 never registered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;

        // The resume key logs in without the password, through the new gate.
        let LoginResponse::Ok { resume_key, .. } = &la else {
            unreachable!()
        };
        let (st, v) = c
            .post(
                "/v1/login",
                &LoginRequest {
                    email: None,
                    password: None,
                    resume_key: Some(resume_key.clone()),
                    client_version: CLIENT_PROTOCOL,
                    game_protocol: None,
                },
            )
            .await;
        assert_eq!(st, 200, "{v}");
        let again: LoginResponse = serde_json::from_value(v).unwrap();
        let LoginResponse::Ok { gate, .. } = &again else {
            panic!("{again:?}")
        };
        assert_eq!(gate.parse::<SocketAddr>().unwrap(), c.gate.addresses()[0]);
        let mut alice = Player::connect(&again).await;
        alice.enter().await;
        alice.pump(300).await;
        let back = alice.me.unwrap();
        assert!(
            (back[0] - was[0]).abs() < 0.2 && (back[1] - was[1]).abs() < 0.2,
            "resumed at {back:?}, was at {was:?}"
        );
        // A wrong resume key is refused.
        let (st, v) = c
            .post(
                "/v1/login",
                &LoginRequest {
                    email: None,
                    password: None,
                    resume_key: Some("0123".into()),
                    client_version: CLIENT_PROTOCOL,
                    game_protocol: None,
                },
            )
            .await;
        assert_eq!((st, v["code"].as_str()), (401, Some("bad_credentials")));
        // The key is spent: it logs in once, and the token brought a new one.
        let resume = |key: &str| LoginRequest {
            email: None,
            password: None,
            resume_key: Some(key.to_owned()),
            client_version: CLIENT_PROTOCOL,
            game_protocol: None,
        };
        let (st, v) = c.post("/v1/login", &resume(resume_key)).await;
        assert_eq!(
            (st, v["code"].as_str()),
            (401, Some("bad_credentials")),
            "{v}"
        );
        let LoginResponse::Ok {
            resume_key: rotated,
            ..
        } = &again
        else {
            unreachable!()
        };
        assert_ne!(rotated, resume_key);
        // A ban revokes the account's resume key.
        let (st, v) = post(
            &c.http,
            "/v1/admin/ban",
            &serde_json::json!({"email": "alice@example.com"}),
            Some(ADMIN_TOKEN),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        let (st, v) = c.post("/v1/login", &resume(rotated)).await;
        assert_eq!(
            (st, v["code"].as_str()),
            (401, Some("bad_credentials")),
            "{v}"
        );
        let text = c.coord().metrics().render();
        for (fate, n) in [("used", 1.0), ("revoked", 1.0)] {
            let series = format!("tessera_login_resume_keys_total{{fate=\"{fate}\"}}");
            assert_eq!(
                tessera_metrics::read_sample(&text, &series),
                Some(n),
                "{text}"
            );
        }
        c.stop().await;
    });
}

#[test]
fn a_coordinator_restart_keeps_players_in_the_world_and_their_sessions() {
    bounded(90, async {
        let mut c = Cluster::start(&["alice", "bob"], LoginConfig::default()).await;
        let mut alice = Player::connect(&c.login("alice", PASSWORD).await.unwrap()).await;
        let mut bob = Player::connect(&c.login("bob", PASSWORD).await.unwrap()).await;
        alice.enter().await;
        bob.enter().await;
        c.restart_coordinator().await;
        // The gate replays its sessions; the scene server keeps its scenes.
        c.until_online(2).await;
        // Session-level features work again: a whisper goes through.
        alice.send(&ClientMsg::Chat {
            to: ChatTarget::Whisper("Bob".into()),
            text: "still together".into(),
        });
        bob.until(
            10,
            "whisper after the restart",
            |m| matches!(m, ServerMsg::Chat { text, .. } if text == "still together"),
        )
        .await;
        // And the players kept moving through it all.
        alice.walk([0.0, 1.0], 500).await;
        assert!(!alice.disconnected && !bob.disconnected);
        c.stop().await;
    });
}

#[test]
fn a_password_change_revokes_the_resume_key_and_the_old_password() {
    bounded(60, async {
        let c = Cluster::start(&["alice"], LoginConfig::default()).await;
        let la = c.login("alice", PASSWORD).await.unwrap();
        let LoginResponse::Ok { resume_key, .. } = &la else {
            unreachable!()
        };
        let change = |current: &str| {
            serde_json::json!({
                "email": "alice@example.com",
                "password": current,
                "new_password": "a brand new passphrase",
            })
        };
        let (st, v) = c.post("/v1/password", &change("not the password")).await;
        assert_eq!(
            (st, v["code"].as_str()),
            (401, Some("bad_credentials")),
            "{v}"
        );
        // Bad input is a clear 400, and changes nothing (the old
        // password still works below).
        let bad = |email: &str, new: &str| serde_json::json!({"email": email, "password": PASSWORD, "new_password": new});
        for body in [
            bad("not an email", "a brand new passphrase"),
            bad("alice@example.com", "short"),
        ] {
            let (st, v) = c.post("/v1/password", &body).await;
            assert_eq!(
                (st, v["code"].as_str()),
                (400, Some("invalid")),
                "{body}: {v}"
            );
        }
        let (st, v) = c
            .post(
                "/v1/password",
                &serde_json::json!({"email": "alice@example.com"}),
            )
            .await;
        assert_eq!(st, 400, "a body without the passwords: {v}");
        let (st, v) = c.post("/v1/password", &change(PASSWORD)).await;
        assert_eq!(st, 200, "{v}");
        let resume = LoginRequest {
            email: None,
            password: None,
            resume_key: Some(resume_key.clone()),
            client_version: CLIENT_PROTOCOL,
            game_protocol: None,
        };
        let (st, v) = c.post("/v1/login", &resume).await;
        assert_eq!(
            (st, v["code"].as_str()),
            (401, Some("bad_credentials")),
            "the resume key dies with the old password: {v}"
        );
        let (st, e) = c.login("alice", PASSWORD).await.unwrap_err();
        assert_eq!((st, e.code.as_str()), (401, "bad_credentials"));
        let back = c.login("alice", "a brand new passphrase").await;
        assert!(matches!(back, Ok(LoginResponse::Ok { .. })), "{back:?}");
        c.stop().await;
    });
}

/// A game's actions at the gate: a wrong size or an unknown kind ends the
/// session; beyond its rate an action is dropped and counted; one the
/// scene's game cannot take gets its sender kicked through the gate.
#[test]
fn game_actions_are_checked_at_the_gate_and_in_the_scene() {
    bounded(60, async {
        let game = tessera_proto::GameSchema {
            game: "poke".into(),
            actions: vec![tessera_proto::game::ActionDesc {
                name: "Poke".into(),
                width: 4,
                per_second: 1,
                burst: 1,
            }],
            ..Default::default()
        };
        let c = Cluster::start_with_gate_game(&["ann", "bob", "cid"], LoginConfig::default(), game)
            .await;
        let mut players = Vec::new();
        for name in ["ann", "bob", "cid"] {
            let mut p = Player::connect(&c.login(name, PASSWORD).await.unwrap()).await;
            p.enter().await;
            players.push(p);
        }
        let kicked = |m: &ServerMsg| matches!(m, ServerMsg::Kicked { .. });
        // Three bytes where Poke has four.
        players[0].send(&ClientMsg::Action {
            kind: 0,
            payload: vec![1, 2, 3],
        });
        let ServerMsg::Kicked { reason } = players[0].until(5, "ann's kick", kicked).await else {
            unreachable!()
        };
        assert!(reason.contains("3 bytes, not 4"), "{reason}");
        // A kind the game does not have.
        players[1].send(&ClientMsg::Action {
            kind: 9,
            payload: vec![0; 4],
        });
        let ServerMsg::Kicked { reason } = players[1].until(5, "bob's kick", kicked).await else {
            unreachable!()
        };
        assert!(reason.contains("unknown action kind 9"), "{reason}");
        // Three at once against a burst of one: one goes on, two are
        // dropped. The scene's game (the default one) has no actions, so
        // the one that reached it gets Cid kicked, from the scene.
        for _ in 0..3 {
            players[2].send(&ClientMsg::Action {
                kind: 0,
                payload: vec![0; 4],
            });
        }
        let ServerMsg::Kicked { reason } = players[2].until(5, "cid's kick", kicked).await else {
            unreachable!()
        };
        assert!(reason.contains("unknown action kind 0"), "{reason}");
        let s = c.gate.stats();
        assert_eq!(
            (
                s.actions,
                s.actions_limited,
                s.actions_malformed,
                s.misbehaved_kicks
            ),
            (1, 2, 2, 1),
            "{s:?}"
        );
        c.stop().await;
    });
}
