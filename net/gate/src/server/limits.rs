//! Per-session limits: what one session may ask of the cluster (chat lines,
//! avatar lists, avatar creations) and how many chat lines it is sent. A
//! request over its limit goes no further than the gate; the client is told
//! once (`rate_limited`) until it may ask again, and every refusal is
//! counted. A chat line over the recipient's limit is shed, counted.

use std::time::Instant;

use crate::bucket::Bucket;

use super::GateLimits;

/// What a session asks that its limits cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Request {
    Chat,
    ListAvatars,
    CreateAvatar,
    /// A chat line to a channel (also a [`Request::Chat`]).
    ChannelChat,
}

/// How many kinds of [`Request`] there are.
const KINDS: usize = 4;

impl Request {
    pub(super) const ALL: [Request; KINDS] = [
        Request::Chat,
        Request::ListAvatars,
        Request::CreateAvatar,
        Request::ChannelChat,
    ];

    /// The label in metrics.
    pub(super) fn name(self) -> &'static str {
        match self {
            Request::Chat => "chat",
            Request::ListAvatars => "list_avatars",
            Request::CreateAvatar => "create_avatar",
            Request::ChannelChat => "channel_chat",
        }
    }

    fn index(self) -> usize {
        match self {
            Request::Chat => 0,
            Request::ListAvatars => 1,
            Request::CreateAvatar => 2,
            Request::ChannelChat => 3,
        }
    }

    /// What the client is told.
    pub(super) fn refusal(self) -> &'static str {
        match self {
            Request::Chat => "too many chat lines: wait a moment",
            Request::ListAvatars => "too many avatar list requests: wait a moment",
            Request::CreateAvatar => "too many avatars created: wait a moment",
            Request::ChannelChat => "too many channel lines: wait a moment",
        }
    }

    /// (per second, burst) of `limits` for this request.
    fn quota(self, limits: &GateLimits) -> (f64, f64) {
        let per_minute = |n: u32| f64::from(n) / 60.0;
        match self {
            Request::Chat => (
                per_minute(limits.chat_per_minute),
                f64::from(limits.chat_burst),
            ),
            Request::ListAvatars => (
                per_minute(limits.avatar_lists_per_minute),
                f64::from(limits.avatar_lists_burst),
            ),
            Request::CreateAvatar => (
                per_minute(limits.avatar_creations_per_minute),
                f64::from(limits.avatar_creations_burst),
            ),
            Request::ChannelChat => (
                f64::from(limits.channel_lines_per_s),
                f64::from(limits.channel_lines_burst),
            ),
        }
    }
}

/// Whether a request may go on, and whether to tell the client it may not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Allowed,
    /// Refused; the first refusal since the last allowed one of its kind,
    /// so the client is told.
    RefusedTell,
    /// Refused, and the client was told already.
    Refused,
}

/// One session's buckets.
#[derive(Debug)]
pub(super) struct SessionLimits {
    requests: [Bucket; KINDS],
    /// Whether the client was told of a refusal since its last allowed
    /// request, by [`Request`].
    told: [bool; KINDS],
    /// Chat lines sent to the client.
    received: Bucket,
    /// Game actions, by kind (grown on first use; at most the game's kinds).
    actions: Vec<Bucket>,
}

impl SessionLimits {
    /// Every bucket full at `now`.
    pub(super) fn new(limits: &GateLimits, now: Instant) -> Self {
        let full = |r: Request| Bucket::full(r.quota(limits).1, now);
        Self {
            requests: Request::ALL.map(full),
            told: [false; KINDS],
            received: Bucket::full(f64::from(limits.chat_received_burst), now),
            actions: Vec::new(),
        }
    }

    /// Takes a token for an action of `kind` (rate and burst from the
    /// game's schema) at `now`.
    pub(super) fn action(
        &mut self,
        kind: usize,
        desc: &tessera_proto::game::ActionDesc,
        now: Instant,
    ) -> bool {
        let (rate, burst) = (f64::from(desc.per_second), f64::from(desc.burst.max(1)));
        if self.actions.len() <= kind {
            self.actions.resize(kind + 1, Bucket::full(burst, now));
        }
        self.actions[kind].take(now, rate, burst)
    }

    /// Takes a token for `request` at `now`.
    pub(super) fn request(
        &mut self,
        limits: &GateLimits,
        request: Request,
        now: Instant,
    ) -> Verdict {
        let i = request.index();
        let (rate, burst) = request.quota(limits);
        let (Some(bucket), Some(told)) = (self.requests.get_mut(i), self.told.get_mut(i)) else {
            return Verdict::Refused;
        };
        if bucket.take(now, rate, burst) {
            *told = false;
            Verdict::Allowed
        } else if *told {
            Verdict::Refused
        } else {
            *told = true;
            Verdict::RefusedTell
        }
    }

    /// Whether one more chat line may be sent to the client at `now`.
    pub(super) fn receive_chat(&mut self, limits: &GateLimits, now: Instant) -> bool {
        self.received.take(
            now,
            f64::from(limits.chat_received_per_s),
            f64::from(limits.chat_received_burst),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_request_over_its_limit_is_refused_and_told_once() {
        let limits = GateLimits {
            chat_per_minute: 60,
            chat_burst: 3,
            ..GateLimits::default()
        };
        let now = Instant::now();
        let mut s = SessionLimits::new(&limits, now);
        let verdicts: Vec<Verdict> = (0..6)
            .map(|_| s.request(&limits, Request::Chat, now))
            .collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Allowed,
                Verdict::Allowed,
                Verdict::Allowed,
                Verdict::RefusedTell,
                Verdict::Refused,
                Verdict::Refused
            ]
        );
        // Each kind has its own bucket.
        assert_eq!(
            s.request(&limits, Request::ListAvatars, now),
            Verdict::Allowed
        );
        // A second later one more line may go, and a refusal after it is told again.
        let later = now + Duration::from_secs(1);
        assert_eq!(s.request(&limits, Request::Chat, later), Verdict::Allowed);
        assert_eq!(
            s.request(&limits, Request::Chat, later),
            Verdict::RefusedTell
        );
    }

    #[test]
    fn channel_lines_have_a_per_second_bucket_of_their_own() {
        let limits = GateLimits {
            channel_lines_per_s: 2,
            channel_lines_burst: 2,
            ..GateLimits::default()
        };
        let now = Instant::now();
        let mut s = SessionLimits::new(&limits, now);
        let allowed = |s: &mut SessionLimits, at| {
            (0..10)
                .filter(|_| s.request(&limits, Request::ChannelChat, at) == Verdict::Allowed)
                .count()
        };
        assert_eq!(allowed(&mut s, now), 2);
        assert_eq!(
            s.request(&limits, Request::Chat, now),
            Verdict::Allowed,
            "other chat is not held up"
        );
        assert_eq!(allowed(&mut s, now + Duration::from_millis(500)), 1);
    }

    #[test]
    fn avatar_creation_is_slower_than_listing() {
        let limits = GateLimits::default();
        let now = Instant::now();
        let mut s = SessionLimits::new(&limits, now);
        let allowed = |s: &mut SessionLimits, r| {
            (0..100)
                .filter(|_| s.request(&limits, r, now) == Verdict::Allowed)
                .count()
        };
        assert_eq!(
            allowed(&mut s, Request::CreateAvatar),
            limits.avatar_creations_burst as usize
        );
        assert_eq!(
            allowed(&mut s, Request::ListAvatars),
            limits.avatar_lists_burst as usize
        );
    }

    #[test]
    fn chat_sent_to_a_client_is_capped() {
        let limits = GateLimits {
            chat_received_per_s: 10,
            chat_received_burst: 4,
            ..GateLimits::default()
        };
        let now = Instant::now();
        let mut s = SessionLimits::new(&limits, now);
        assert_eq!((0..10).filter(|_| s.receive_chat(&limits, now)).count(), 4);
        assert!(s.receive_chat(&limits, now + Duration::from_millis(100)));
    }
}
