//! One bot: logs in, connects to the gate with its token, enters the world
//! and plays its [`Behaviour`] until the run stops it or the server drops it
//! — for churn, leaves and comes back with its resume key, once every bot
//! of the run has entered.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tessera_gate::token::{from_hex, token_from_bytes};
use tessera_gate::{
    Channel, ClientConfig, ClientConn, ClientDisconnect, ClientEvent, ClientSendError, ClientStats,
};
use tessera_link::lock;
use tessera_proto::client::{AvatarInfo, ChatTarget, ClientMsg, ServerMsg, decode_event_datagram};
use tessera_proto::view::{Applied, WorldView};
use tessera_sim::protocol::StatePacket;
use tessera_sim::rng::{SceneRng, mix};
use tessera_wire::{Input, MoveMode};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Interval, MissedTickBehavior};

use super::config::{Behaviour, bot_avatar_name};
use super::login::{Admitted, Failure, login};
use super::measure::{RTT_RING, RttRing, RttWindow, record_us};
use super::shared::{RunShared, STALE_SEEN_CAP, add};

/// How often the acknowledgement clock looks for state applied and not yet
/// acknowledged; it goes alone only if no input went out for this long (a
/// bot sending inputs at 10 Hz acknowledges on them).
const ACK_EVERY: Duration = Duration::from_millis(100);

/// How a stay in the world ended.
enum Outcome {
    /// The run is over (or the bot was told to stop).
    Stopped,
    /// The server or the network ended it.
    Dropped(String),
    /// Churn: left and disconnected on purpose; log in again.
    Cycle,
}

impl Outcome {
    /// The gate client is gone from under the bot.
    fn client_stopped() -> Self {
        Outcome::Dropped("gate client stopped".into())
    }
}

/// Bot `index` from its first login to the end of the run; `permit` is the
/// login slot the run driver took for its start.
pub(super) async fn bot(
    shared: Arc<RunShared>,
    index: usize,
    mut permit: Option<OwnedSemaphorePermit>,
) {
    let mut rng = SceneRng::new(mix(shared.config.seed, index as u64, 0));
    // Sequence numbers never restart, so an ack from before a re-entry can
    // never match an input sent after it.
    let mut seq = 0u32;
    let mut entered_once = false;
    // The key the last login gave, for the next one.
    let mut resume_key = None;
    loop {
        let begun = Instant::now();
        let attempt = connect_and_enter(&shared, index, begun, permit.take(), &mut resume_key);
        let session = tokio::select! {
            biased;
            () = shared.stop.cancelled() => Err(Failure::Stopped),
            r = attempt => r,
        };
        let mut session = match session {
            Ok(s) => s,
            Err(failure) => return count_failure(&shared, failure, entered_once),
        };
        count_entry(&shared, begun, &mut entered_once);
        add(&shared.n.in_world, 1);
        let outcome = session.play(&shared, &mut rng, &mut seq).await;
        shared.n.in_world.fetch_sub(1, Ordering::Relaxed);
        session.finish(&shared);
        match outcome {
            Outcome::Stopped => return,
            Outcome::Dropped(reason) => return shared.drop_bot(&reason),
            Outcome::Cycle => add(&shared.n.churn_cycles, 1),
        }
    }
}

/// Counts a connect attempt that failed: a bot that never got in fails; a
/// churn bot that cannot get back in stops.
fn count_failure(shared: &RunShared, failure: Failure, entered_once: bool) {
    match failure {
        // Never got in before the run ended (only on an early stop).
        Failure::Stopped if !entered_once => shared.fail("stopped before entering"),
        Failure::Stopped => {}
        Failure::Reason(reason) if entered_once => {
            add(&shared.n.churn_failed, 1);
            lock(&shared.failures).add(&format!("churn re-login: {reason}"));
        }
        Failure::Reason(reason) => shared.fail(&reason),
    }
}

/// Counts an entry attempted at `begun`: its latency and, the first time,
/// the bot as connected.
fn count_entry(shared: &RunShared, begun: Instant, entered_once: &mut bool) {
    record_us(&mut lock(&shared.enter), begun.elapsed());
    if !*entered_once {
        *entered_once = true;
        add(&shared.n.connected, 1);
        add(&shared.n.settled, 1);
    }
}

/// Logs in (with `resume_key` if there is one, else the password,
/// registering the account if needed; the login's new resume key replaces
/// it), connects to the gate, creates an avatar if there is none, selects
/// it and waits for `Entered`.
async fn connect_and_enter(
    shared: &RunShared,
    index: usize,
    begun: Instant,
    permit: Option<OwnedSemaphorePermit>,
    resume_key: &mut Option<String>,
) -> Result<Session, Failure> {
    let admitted = login_in_slot(shared, index, permit, resume_key.take()).await?;
    *resume_key = Some(admitted.resume_key.clone());
    record_us(&mut lock(&shared.login), begun.elapsed());
    let mut stage = EnterStage::Connecting;
    let entered = tokio::time::timeout(
        shared.config.enter_timeout,
        enter(
            admitted,
            index,
            &mut stage,
            shared.client_config(index),
            shared.config.game.wire(),
            shared.config.game.component("Hp"),
        ),
    )
    .await;
    match entered {
        Ok(r) => r.map_err(Failure::Reason),
        Err(_) => Err(Failure::Reason(format!(
            "enter: timed out {}",
            stage.waiting_for()
        ))),
    }
}

/// Logs in within the login timeout, holding a login slot throughout:
/// `permit`, or one taken now (a churn re-login takes one too).
async fn login_in_slot(
    shared: &RunShared,
    index: usize,
    permit: Option<OwnedSemaphorePermit>,
    resume_key: Option<String>,
) -> Result<Admitted, Failure> {
    let _permit = match permit {
        Some(p) => p,
        None => shared
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Failure::Stopped)?,
    };
    match tokio::time::timeout(
        shared.config.login_timeout,
        login(shared, index, resume_key),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(Failure::Reason("login: timed out".into())),
    }
}

/// How far an entry got: named in the failure when it times out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EnterStage {
    Connecting,
    Connected,
    Creating,
    Selected,
}

impl EnterStage {
    fn waiting_for(self) -> &'static str {
        match self {
            EnterStage::Connecting => "connecting to the gate",
            EnterStage::Connected => "waiting for the avatar list",
            EnterStage::Creating => "waiting for the new avatar",
            EnterStage::Selected => "waiting to enter the world",
        }
    }
}

/// Connects to the gate with the login token and enters the world; on
/// failure the client says goodbye.
async fn enter(
    admitted: Admitted,
    index: usize,
    stage: &mut EnterStage,
    config: ClientConfig,
    wire: tessera_proto::GameWire,
    hp_component: Option<usize>,
) -> Result<Session, String> {
    let mut client = connect_gate(&admitted.token, config).await?;
    match wait_until_entered(&mut client, index, stage).await {
        Ok(placement) => Ok(Session::new(client, index, placement, wire, hp_component)),
        Err(reason) => {
            let _ = client.disconnect();
            Err(reason)
        }
    }
}

/// A gate client connected with the hex connect token a login gave.
async fn connect_gate(token_hex: &str, config: ClientConfig) -> Result<ClientConn, String> {
    let bytes = from_hex(token_hex).map_err(|_| "login: token is not hex".to_owned())?;
    let token = token_from_bytes(&bytes).map_err(|_| "login: token does not decode".to_owned())?;
    ClientConn::connect(token, config)
        .await
        .map_err(|e| format!("gate: {e}"))
}

/// Reads the gate's messages until `Entered`, selecting the account's first
/// avatar (creating one if it has none); returns the placement entered,
/// `(scene_tag, epoch, net_id)`.
async fn wait_until_entered(
    client: &mut ClientConn,
    index: usize,
    stage: &mut EnterStage,
) -> Result<(u32, u64, u32), String> {
    let mut selected = false;
    let mut created = false;
    loop {
        match next_entry_msg(client, stage).await? {
            ServerMsg::Avatars(list) if !selected => {
                selected = choose_avatar(client, &list, index, &mut created, stage)?;
            }
            ServerMsg::Entered {
                scene_tag,
                epoch,
                net_id,
                ..
            } => return Ok((scene_tag, epoch, net_id)),
            ServerMsg::Error { code, text } => return Err(format!("gate error: {code}: {text}")),
            ServerMsg::Kicked { reason } => return Err(format!("kicked: {reason}")),
            _ => {}
        }
    }
}

/// The next reliable server message while entering; `Connected` moves the
/// stage on and unreliable messages are skipped.
async fn next_entry_msg(
    client: &mut ClientConn,
    stage: &mut EnterStage,
) -> Result<ServerMsg, String> {
    loop {
        let Some(event) = client.recv().await else {
            return Err("gate: client stopped".to_owned());
        };
        let payload = match event {
            ClientEvent::Connected => {
                *stage = EnterStage::Connected;
                continue;
            }
            ClientEvent::Disconnected(reason) => return Err(format!("gate: {reason:?}")),
            ClientEvent::Message {
                channel: Channel::Unreliable,
                ..
            } => continue,
            ClientEvent::Message { payload, .. } => payload,
        };
        return ServerMsg::decode(&payload).map_err(|_| "gate: undecodable message".to_owned());
    }
}

/// Answers an avatar list: selects the first avatar (`true`), or, the first
/// time the list is empty, asks for a new one.
fn choose_avatar(
    client: &mut ClientConn,
    list: &[AvatarInfo],
    index: usize,
    created: &mut bool,
    stage: &mut EnterStage,
) -> Result<bool, String> {
    let (msg, selected) = if let Some(first) = list.first() {
        *stage = EnterStage::Selected;
        (ClientMsg::Select { avatar: first.id }, true)
    } else if !*created {
        *created = true;
        *stage = EnterStage::Creating;
        let name = bot_avatar_name(index);
        (ClientMsg::CreateAvatar { name }, false)
    } else {
        return Err("gate: avatar list still empty after create".to_owned());
    };
    client
        .send(Channel::Reliable, msg.encode())
        .map_err(|_| "gate: send failed".to_owned())?;
    Ok(selected)
}

/// A client's UDP counters at one moment: payload bytes and datagrams, each
/// way.
#[derive(Clone, Copy, Debug)]
struct WireCounts {
    bytes_up: u64,
    bytes_down: u64,
    datagrams_up: u64,
    datagrams_down: u64,
}

impl WireCounts {
    fn of(stats: &ClientStats) -> Self {
        Self {
            bytes_up: stats.bytes_out.load(Ordering::Relaxed),
            bytes_down: stats.bytes_in.load(Ordering::Relaxed),
            datagrams_up: stats.datagrams_out.load(Ordering::Relaxed),
            datagrams_down: stats.datagrams_in.load(Ordering::Relaxed),
        }
    }

    /// What was counted since `earlier`.
    fn since(self, earlier: Self) -> Self {
        Self {
            bytes_up: self.bytes_up.saturating_sub(earlier.bytes_up),
            bytes_down: self.bytes_down.saturating_sub(earlier.bytes_down),
            datagrams_up: self.datagrams_up.saturating_sub(earlier.datagrams_up),
            datagrams_down: self.datagrams_down.saturating_sub(earlier.datagrams_down),
        }
    }
}

/// A bot in the world.
struct Session {
    client: ClientConn,
    index: usize,
    entered_at: Instant,
    /// The client's UDP counters when the bot entered.
    wire_at_entry: WireCounts,
    /// Message payload bytes sent and received in the world.
    bytes_up: u64,
    bytes_down: u64,
    kicked: Option<String>,
    disconnected: bool,
    /// The world as this bot sees it (its acknowledgements come from here).
    view: WorldView,
    /// The game's `Hp` component, if it has one (the fight skips the down).
    hp_component: Option<usize>,
    /// When the last input went (its acknowledgement with it).
    last_input: Instant,
}

impl Session {
    /// A session for a client that has just entered `placement`.
    fn new(
        client: ClientConn,
        index: usize,
        placement: (u32, u64, u32),
        wire: tessera_proto::GameWire,
        hp_component: Option<usize>,
    ) -> Self {
        let wire_at_entry = WireCounts::of(client.stats());
        let mut view = WorldView::with_game(wire);
        view.enter(placement.0, placement.1, placement.2);
        Self {
            view,
            hp_component,
            last_input: Instant::now(),
            client,
            index,
            entered_at: Instant::now(),
            wire_at_entry,
            bytes_up: 0,
            bytes_down: 0,
            kicked: None,
            disconnected: false,
        }
    }

    /// Sends a message; `false` once the client is gone (a full queue is
    /// counted, not fatal).
    fn send(&mut self, shared: &RunShared, channel: Channel, payload: Vec<u8>) -> bool {
        let len = payload.len() as u64;
        match self.client.send(channel, payload) {
            Ok(()) => {
                self.bytes_up += len;
                true
            }
            Err(ClientSendError::QueueFull) => {
                add(&shared.n.client_queue_drops, 1);
                true
            }
            Err(ClientSendError::Closed) => false,
        }
    }

    /// Plays the configured behaviour until the stay ends.
    async fn play(&mut self, shared: &RunShared, rng: &mut SceneRng, seq: &mut u32) -> Outcome {
        let mut inputs = input_ticker(shared.config.input_hz, rng);
        let mut acks = tokio::time::interval(ACK_EVERY);
        acks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stay = Stay::new(shared, rng);
        let outcome = loop {
            let step = self.step(shared, rng, seq, &mut inputs, &mut acks, &mut stay);
            if let Some(outcome) = step.await {
                break outcome;
            }
        };
        stay.rtts.flush(shared);
        add(&shared.n.rtt_unacked, stay.ring.unacked());
        outcome
    }

    /// Waits for the next thing to do and does it; `Some` ends the stay.
    async fn step(
        &mut self,
        shared: &RunShared,
        rng: &mut SceneRng,
        seq: &mut u32,
        inputs: &mut Interval,
        acks: &mut Interval,
        stay: &mut Stay,
    ) -> Option<Outcome> {
        let behaviour = shared.config.behaviour;
        let settling = shared.settling.load(Ordering::Relaxed);
        if settling && !stay.settling {
            // The view check: stand still, and no more simulated loss.
            stay.settling = true;
            self.client.set_loss(0.0);
        }
        let chat_due = behaviour == Behaviour::Chat && !settling;
        let churning = behaviour == Behaviour::Churn && stay.leaving.is_none() && !settling;
        let leave_at = if churning {
            stay.leave_at(shared, rng)
        } else {
            None
        };
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => Some(Outcome::Stopped),
            event = self.client.recv() => self.on_event(shared, stay, event),
            // Settling, a bot sends one input to stop, then stays idle: its
            // acknowledgements go alone, as an idle player's do.
            _ = inputs.tick(), if stay.leaving.is_none() && !stay.stopped => {
                self.send_input(shared, rng, seq, stay)
            }
            _ = acks.tick() => self.send_ack(shared),
            changed = stay.truth.changed(), if !stay.checked => {
                self.check_view(shared, stay, changed.is_ok());
                None
            }
            () = tokio::time::sleep_until(stay.chat_at), if chat_due => {
                self.send_chat(shared, rng, stay)
            }
            // Wakes the bot to draw its leave time once churn may start.
            () = shared.everyone_in.cancelled(), if churning && leave_at.is_none() => None,
            () = sleep_until(leave_at), if leave_at.is_some() => self.send_leave(shared, stay),
            () = sleep_until(stay.leaving), if stay.leaving.is_some() =>
            {
                // No `Left` within 5 s: the server lost it; count a drop.
                Some(Outcome::Dropped("no answer to Leave".into()))
            }
        }
    }

    /// Handles one event of the gate client; `Some` ends the stay.
    fn on_event(
        &mut self,
        shared: &RunShared,
        stay: &mut Stay,
        event: Option<ClientEvent>,
    ) -> Option<Outcome> {
        let Some(event) = event else {
            return Some(Outcome::client_stopped());
        };
        match event {
            ClientEvent::Message {
                channel: Channel::Unreliable,
                payload,
            } => {
                self.on_state_packet(shared, stay, &payload);
                None
            }
            ClientEvent::Message { payload, .. } => {
                self.on_server_msg(shared, stay.leaving.is_some(), &payload)
            }
            ClientEvent::Connected => None,
            ClientEvent::Disconnected(reason) => {
                Some(self.on_disconnected(stay.leaving.is_some(), reason))
            }
        }
    }

    /// A replication packet: applied to the view (if of the placement the
    /// bot is in, and newer than what it has); its input ack makes inputs
    /// visible (round trips).
    fn on_state_packet(&mut self, shared: &RunShared, stay: &mut Stay, payload: &[u8]) {
        self.bytes_down += payload.len() as u64;
        if let Some((kind, event)) = decode_event_datagram(payload) {
            self.on_game_event(shared, kind, event);
            return;
        }
        match StatePacket::decode_with(payload, self.view.game_wire()) {
            Ok(packet) => {
                add(&shared.n.state_packets, 1);
                if self.view.apply(&packet) == Applied::Applied {
                    stay.rtts.on_ack(shared, &mut stay.ring, packet.ack);
                }
            }
            Err(_) => add(&shared.n.decode_errors, 1),
        }
    }

    /// A game event: counted; a `Hit` or `Death` whose payload starts with
    /// this bot's net id is its hit or kill.
    fn on_game_event(&mut self, shared: &RunShared, kind: u16, payload: &[u8]) {
        add(&shared.n.game_events, 1);
        let Some(desc) = shared.config.game.events.get(kind as usize) else {
            return;
        };
        let mine = self
            .view
            .own()
            .is_some_and(|(id, _)| payload.get(..4) == Some(&id.to_le_bytes()[..]));
        match desc.name.as_str() {
            "Hit" if mine => add(&shared.n.game_hits, 1),
            "Death" if mine => add(&shared.n.game_kills, 1),
            _ => {}
        }
    }

    /// The truth for the view check came (or its sender went): compares
    /// this bot's view with it, once.
    fn check_view(&mut self, shared: &RunShared, stay: &mut Stay, ok: bool) {
        if !ok {
            stay.checked = true;
            return;
        }
        let truth = stay.truth.borrow_and_update().clone();
        if let Some(truth) = truth {
            let mut ids = Vec::new();
            let c = super::view_check::check_listing(&self.view, &truth, &mut ids);
            lock(&shared.view).add(&c);
            if let Some(p) = self.view.placement() {
                let mut seen = lock(&shared.stale_seen);
                // Bounded: past the cap, stale entries stay counted stale.
                let room = STALE_SEEN_CAP.saturating_sub(seen.len());
                seen.extend(ids.into_iter().take(room).map(|id| (p, id)));
            }
            stay.checked = true;
        }
    }

    /// The acknowledgement clock: the state applied since the last input
    /// goes alone.
    fn send_ack(&mut self, shared: &RunShared) -> Option<Outcome> {
        if self.last_input.elapsed() < ACK_EVERY {
            return None;
        }
        let ack = self.view.take_ack_due()?;
        let msg = ClientMsg::Ack(ack).encode();
        if !self.send(shared, Channel::Unreliable, msg) {
            return Some(Outcome::client_stopped());
        }
        add(&shared.n.acks_sent, 1);
        None
    }

    /// A reliable server message in the world; `Left` after the bot's own
    /// `Leave` ends the stay as a churn cycle.
    fn on_server_msg(
        &mut self,
        shared: &RunShared,
        leaving: bool,
        payload: &[u8],
    ) -> Option<Outcome> {
        self.bytes_down += payload.len() as u64;
        match ServerMsg::decode(payload) {
            Ok(ServerMsg::Chat { .. }) => add(&shared.n.chat_received, 1),
            Ok(ServerMsg::Event { kind, payload }) => self.on_game_event(shared, kind, &payload),
            Ok(ServerMsg::Kicked { reason }) => self.kicked = Some(reason),
            Ok(ServerMsg::Error { .. }) => add(&shared.n.server_errors, 1),
            Ok(ServerMsg::Moving { .. }) => add(&shared.n.transfers, 1),
            Ok(ServerMsg::Entered {
                scene_tag,
                epoch,
                net_id,
                ..
            }) => self.view.enter(scene_tag, epoch, net_id),
            Ok(ServerMsg::Left { .. }) if leaving => return Some(Outcome::Cycle),
            Ok(_) => {}
            Err(_) => add(&shared.n.decode_errors, 1),
        }
        None
    }

    /// The connection ended: a churn cycle when the bot was leaving, else a
    /// drop (with the kick's reason if the server sent one).
    fn on_disconnected(&mut self, leaving: bool, reason: ClientDisconnect) -> Outcome {
        self.disconnected = true;
        if leaving {
            return Outcome::Cycle;
        }
        Outcome::Dropped(match self.kicked.take() {
            Some(kick) => format!("kicked: {kick}"),
            None => format!("disconnected: {reason:?}"),
        })
    }

    /// The input clock ticked: turns when due, sends the next input and
    /// notes its send time.
    fn send_input(
        &mut self,
        shared: &RunShared,
        rng: &mut SceneRng,
        seq: &mut u32,
        stay: &mut Stay,
    ) -> Option<Outcome> {
        let now = tokio::time::Instant::now();
        if stay.settling {
            stay.dir = [0.0, 0.0];
            stay.stopped = true;
        } else if shared.config.behaviour == Behaviour::Fight {
            if let Some(outcome) = self.fight(shared, stay, now) {
                return Some(outcome);
            }
        } else if now >= stay.turn_at {
            stay.dir = random_dir(rng);
            stay.turn_at = now + jittered(rng, 2.0, 5.0);
        }
        *seq = seq.wrapping_add(1);
        let dir = stay.dir;
        let input = Input {
            seq: *seq,
            dir,
            mode: MoveMode::Walk,
            heading: dir[1].atan2(dir[0]),
            action: 0,
            mount: 0,
            state_ack: self.view.ack(),
        };
        self.view.ack_sent();
        self.last_input = Instant::now();
        let msg = ClientMsg::Input(input).encode();
        if !self.send(shared, Channel::Unreliable, msg) {
            return Some(Outcome::client_stopped());
        }
        add(&shared.n.inputs_sent, 1);
        stay.ring.sent(*seq, Instant::now());
        None
    }

    /// Whether entity `id`'s replicated `Hp` (if the game has one) is 0.
    fn is_down(&self, id: tessera_proto::NetId) -> bool {
        let wire = self.view.game_wire();
        let Some(i) = self.hp_component else {
            return false;
        };
        self.view
            .game(id)
            .get(i, wire)
            .is_some_and(|b| b.iter().all(|&x| x == 0))
    }

    /// Fight: heads for the nearest player held and, twice a second, sends
    /// the game's `Attack` at it. Without one in view it walks east.
    fn fight(
        &mut self,
        shared: &RunShared,
        stay: &mut Stay,
        now: tokio::time::Instant,
    ) -> Option<Outcome> {
        let Some((_, Some(me))) = self.view.own() else {
            return None;
        };
        let nearest = self
            .view
            .entities()
            .filter(|(id, e)| e.kind == tessera_proto::state::KIND_PC && !self.is_down(*id))
            .map(|(id, e)| {
                let (dx, dy) = (e.q.x as f32 - me.x as f32, e.q.y as f32 - me.y as f32);
                (dx * dx + dy * dy, id, [dx, dy])
            })
            .min_by(|a, b| a.0.total_cmp(&b.0));
        let Some((d2, target, [dx, dy])) = nearest else {
            if now >= stay.turn_at {
                stay.dir = [1.0, 0.0];
                stay.turn_at = now + Duration::from_secs(3);
            }
            return None;
        };
        // Close in (quantized units: a few metres in a 1000 m scene).
        let len = d2.sqrt();
        stay.dir = if len > 150.0 {
            [dx / len, dy / len]
        } else {
            [0.0, 0.0]
        };
        if now < stay.attack_at {
            return None;
        }
        stay.attack_at = now + Duration::from_millis(500);
        let game = &shared.config.game;
        let (kind, desc) = game
            .actions
            .iter()
            .enumerate()
            .find(|(_, a)| a.name == "Attack")?;
        let mut payload = target.to_le_bytes().to_vec();
        payload.resize(desc.width as usize, 0);
        let msg = ClientMsg::Action {
            kind: kind as u16,
            payload,
        };
        if !self.send(shared, Channel::Reliable, msg.encode()) {
            return Some(Outcome::client_stopped());
        }
        add(&shared.n.game_actions, 1);
        None
    }

    /// Chat: says the next line, to the scene or, one time in ten, to all.
    fn send_chat(
        &mut self,
        shared: &RunShared,
        rng: &mut SceneRng,
        stay: &mut Stay,
    ) -> Option<Outcome> {
        stay.chats += 1;
        stay.chat_at = tokio::time::Instant::now() + jittered(rng, 4.0, 6.0);
        let to = if rng.next_f32() < 0.1 {
            ChatTarget::Global
        } else {
            ChatTarget::Scene
        };
        let text = format!("Bot{} says hello #{}", self.index, stay.chats);
        let msg = ClientMsg::Chat { to, text }.encode();
        if !self.send(shared, Channel::Reliable, msg) {
            return Some(Outcome::client_stopped());
        }
        add(&shared.n.chat_sent, 1);
        None
    }

    /// Churn: time to go; sends `Leave` and waits at most 5 s for `Left`.
    fn send_leave(&mut self, shared: &RunShared, stay: &mut Stay) -> Option<Outcome> {
        if !self.send(shared, Channel::Reliable, ClientMsg::Leave.encode()) {
            return Some(Outcome::client_stopped());
        }
        stay.leaving = Some(tokio::time::Instant::now() + Duration::from_secs(5));
        None
    }

    /// Says goodbye (unless already disconnected), closes the client and
    /// adds this stay's traffic to the run's totals.
    fn finish(self, shared: &RunShared) {
        let world = self.entered_at.elapsed();
        let stats = self.client.stats().clone();
        let Session {
            mut client,
            wire_at_entry,
            bytes_up,
            bytes_down,
            disconnected,
            view,
            ..
        } = self;
        if !disconnected {
            // The goodbye goes out now; the socket closes with `client`.
            let _ = client.disconnect();
        }
        drop(client);
        let n = &shared.n;
        add(&n.state_stale, view.counters.stale);
        add(&n.state_foreign, view.counters.foreign);
        add(&n.loss_dropped, stats.loss_dropped.load(Ordering::Relaxed));
        let world_us = u64::try_from(world.as_micros()).unwrap_or(u64::MAX);
        add(&n.world_micros, world_us);
        add(&n.payload_up, bytes_up);
        add(&n.payload_down, bytes_down);
        let wire = WireCounts::of(&stats).since(wire_at_entry);
        add(&n.bytes_up, wire.bytes_up);
        add(&n.bytes_down, wire.bytes_down);
        add(&n.datagrams_up, wire.datagrams_up);
        add(&n.datagrams_down, wire.datagrams_down);
        let dropped_events = stats.events_dropped.load(Ordering::Relaxed);
        add(&n.client_queue_drops, dropped_events);
    }
}

/// A bot's state during one stay in the world.
struct Stay {
    /// Send times of the recent inputs, matched against each packet's ack.
    ring: RttRing,
    rtts: RttBatch,
    /// The walking direction, until `turn_at`.
    dir: [f32; 2],
    turn_at: tokio::time::Instant,
    /// Chat: when the next line is said, and how many were.
    chat_at: tokio::time::Instant,
    chats: u64,
    /// Fight: when the next attack goes.
    attack_at: tokio::time::Instant,
    /// Churn: when to leave, drawn once every bot of the run has entered;
    /// once `Leave` is sent, how long to wait for `Left`.
    leave_at: Option<tokio::time::Instant>,
    leaving: Option<tokio::time::Instant>,
    /// The view check: standing still for it; the truth to compare with;
    /// compared already.
    settling: bool,
    /// Settling: the input that stops the bot went; no more inputs.
    stopped: bool,
    truth: tokio::sync::watch::Receiver<Option<Arc<super::view_check::Truth>>>,
    checked: bool,
}

impl Stay {
    fn new(shared: &RunShared, rng: &mut SceneRng) -> Self {
        let rtts = RttBatch::new(shared.window.get());
        let dir = random_dir(rng);
        let now = tokio::time::Instant::now();
        let turn_at = now + jittered(rng, 2.0, 5.0);
        let chat_at = now + jittered(rng, 1.0, 9.0);
        Self {
            ring: RttRing::new(RTT_RING),
            rtts,
            dir,
            turn_at,
            chat_at,
            chats: 0,
            attack_at: now,
            leave_at: None,
            leaving: None,
            settling: false,
            stopped: false,
            truth: shared.truth.subscribe(),
            checked: false,
        }
    }
}

impl Stay {
    /// Churn: when this stay ends, 5–15 s after every bot of the run has
    /// entered (or after this bot entered, if later); `None` before.
    fn leave_at(&mut self, shared: &RunShared, rng: &mut SceneRng) -> Option<tokio::time::Instant> {
        if self.leave_at.is_none() && shared.everyone_in.is_cancelled() {
            self.leave_at = Some(tokio::time::Instant::now() + jittered(rng, 5.0, 15.0));
        }
        self.leave_at
    }
}

/// Sleeps until `at`; for ever if `None`.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A bot's round trips not yet added to the run's histograms, all taken in
/// one window: a batch never straddles two (the ramp-up, warm-up and
/// measured period are apart).
struct RttBatch {
    samples: Vec<Duration>,
    window: RttWindow,
}

impl RttBatch {
    /// A batch this large goes to the run's histograms.
    const FLUSH_AT: usize = 48;

    fn new(window: RttWindow) -> Self {
        Self {
            samples: Vec::with_capacity(64),
            window,
        }
    }

    /// A packet acknowledged the inputs up to `ack`: their round trips, as
    /// `ring` has them, join the batch.
    fn on_ack(&mut self, shared: &RunShared, ring: &mut RttRing, ack: u32) {
        let window = shared.window.get();
        if window != self.window {
            self.flush(shared);
            self.window = window;
        }
        ring.acked(ack, Instant::now(), |rtt| self.samples.push(rtt));
        if self.samples.len() >= Self::FLUSH_AT {
            self.flush(shared);
        }
    }

    fn flush(&mut self, shared: &RunShared) {
        shared.add_rtts(self.window, &mut self.samples);
    }
}

/// The input clock: `input_hz` ticks a second, from a random phase so bots
/// do not send in lockstep.
fn input_ticker(input_hz: u32, rng: &mut SceneRng) -> Interval {
    let period = Duration::from_secs_f64(1.0 / f64::from(input_hz));
    let first = tokio::time::Instant::now() + period.mul_f32(rng.next_f32());
    let mut inputs = tokio::time::interval_at(first, period);
    inputs.set_missed_tick_behavior(MissedTickBehavior::Delay);
    inputs
}

/// A random walking direction (unit vector).
fn random_dir(rng: &mut SceneRng) -> [f32; 2] {
    let angle = rng.range_f32(0.0, std::f32::consts::TAU);
    [angle.cos(), angle.sin()]
}

fn jittered(rng: &mut SceneRng, lo_s: f32, hi_s: f32) -> Duration {
    Duration::from_secs_f32(rng.range_f32(lo_s, hi_s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bot::config::BotConfig;

    /// A churn bot draws no leave time while bots are still getting in;
    /// once all are in, it leaves 5–15 s later, and keeps that time.
    #[tokio::test]
    async fn churn_waits_until_every_bot_has_entered() {
        let config = BotConfig::new(2, "http://127.0.0.1:1", 30, Behaviour::Churn).expect("valid");
        let shared = RunShared::new(config);
        let mut rng = SceneRng::new(7);
        let mut stay = Stay::new(&shared, &mut rng);
        assert_eq!(stay.leave_at(&shared, &mut rng), None);
        assert_eq!(stay.leave_at(&shared, &mut rng), None);
        let before = tokio::time::Instant::now();
        shared.everyone_in.cancel();
        let at = stay.leave_at(&shared, &mut rng).expect("churn starts");
        assert!(at >= before + Duration::from_secs(5), "{:?}", at - before);
        assert!(at <= tokio::time::Instant::now() + Duration::from_secs(15));
        assert_eq!(stay.leave_at(&shared, &mut rng), Some(at));
    }
}
