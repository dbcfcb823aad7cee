//! Counters of a listener's or a client's links.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by every link of one [`LinkConfig`](crate::LinkConfig)
/// (one listener, or one client and its reconnects). All relaxed atomics:
/// cheap to bump from any task, read as a [`LinkStatsSnapshot`].
#[derive(Debug, Default)]
pub struct LinkStats {
    links_opened: AtomicU64,
    links_closed: AtomicU64,
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    keepalives_in: AtomicU64,
    keepalives_out: AtomicU64,
    decode_errors: AtomicU64,
    oversized: AtomicU64,
    handshakes_refused: AtomicU64,
    handshake_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
    queue_full_drops: AtomicU64,
    send_too_large: AtomicU64,
    io_errors: AtomicU64,
    connect_failures: AtomicU64,
    accept_errors: AtomicU64,
}

/// A point-in-time copy of [`LinkStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkStatsSnapshot {
    /// Links that completed a handshake.
    pub links_opened: u64,
    /// Established links that have since closed, for any reason.
    pub links_closed: u64,
    /// Frames received on established links (handshake frames excluded).
    pub frames_in: u64,
    /// Frames written to established links.
    pub frames_out: u64,
    /// Bytes received on established links, headers included.
    pub bytes_in: u64,
    /// Bytes written to established links, headers included.
    pub bytes_out: u64,
    /// Keepalive frames received (not counted in `frames_in`/`bytes_in`).
    pub keepalives_in: u64,
    /// Keepalive frames written when a link had nothing else to send for
    /// [`LinkConfig::keepalive`](crate::LinkConfig::keepalive) (not counted
    /// in `frames_out`/`bytes_out`).
    pub keepalives_out: u64,
    /// Frames that did not decode (a bad message, a bad handshake frame, or a
    /// stream cut inside a frame); each closed its link.
    pub decode_errors: u64,
    /// Frames whose declared length exceeded the cap; each closed its link.
    pub oversized: u64,
    /// Handshakes refused by this side (version, secret, role, malformed), or
    /// refusals received from the peer on the connecting side.
    pub handshakes_refused: u64,
    /// Peers that did not complete the handshake in time.
    pub handshake_timeouts: u64,
    /// Established links closed for silence (`LinkConfig::idle_timeout`).
    pub idle_timeouts: u64,
    /// Messages dropped because the link's send queue was full (`try_send`).
    pub queue_full_drops: u64,
    /// Messages refused on send for exceeding the frame cap.
    pub send_too_large: u64,
    /// Links closed by an I/O error.
    pub io_errors: u64,
    /// Failed connection attempts (connect or handshake) by a client.
    pub connect_failures: u64,
    /// Failed `accept` calls on a listener.
    pub accept_errors: u64,
}

/// Which counter to bump.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    LinksOpened,
    LinksClosed,
    KeepalivesIn,
    KeepalivesOut,
    DecodeErrors,
    Oversized,
    HandshakesRefused,
    HandshakeTimeouts,
    IdleTimeouts,
    QueueFullDrops,
    SendTooLarge,
    IoErrors,
    ConnectFailures,
    AcceptErrors,
}

impl LinkStats {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn snapshot(&self) -> LinkStatsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LinkStatsSnapshot {
            links_opened: r(&self.links_opened),
            links_closed: r(&self.links_closed),
            frames_in: r(&self.frames_in),
            frames_out: r(&self.frames_out),
            bytes_in: r(&self.bytes_in),
            bytes_out: r(&self.bytes_out),
            keepalives_in: r(&self.keepalives_in),
            keepalives_out: r(&self.keepalives_out),
            decode_errors: r(&self.decode_errors),
            oversized: r(&self.oversized),
            handshakes_refused: r(&self.handshakes_refused),
            handshake_timeouts: r(&self.handshake_timeouts),
            idle_timeouts: r(&self.idle_timeouts),
            queue_full_drops: r(&self.queue_full_drops),
            send_too_large: r(&self.send_too_large),
            io_errors: r(&self.io_errors),
            connect_failures: r(&self.connect_failures),
            accept_errors: r(&self.accept_errors),
        }
    }

    pub(crate) fn bump(&self, c: Counter) {
        let a = match c {
            Counter::LinksOpened => &self.links_opened,
            Counter::LinksClosed => &self.links_closed,
            Counter::KeepalivesIn => &self.keepalives_in,
            Counter::KeepalivesOut => &self.keepalives_out,
            Counter::DecodeErrors => &self.decode_errors,
            Counter::Oversized => &self.oversized,
            Counter::HandshakesRefused => &self.handshakes_refused,
            Counter::HandshakeTimeouts => &self.handshake_timeouts,
            Counter::IdleTimeouts => &self.idle_timeouts,
            Counter::QueueFullDrops => &self.queue_full_drops,
            Counter::SendTooLarge => &self.send_too_large,
            Counter::IoErrors => &self.io_errors,
            Counter::ConnectFailures => &self.connect_failures,
            Counter::AcceptErrors => &self.accept_errors,
        };
        a.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn frame_in(&self, payload: usize) {
        self.frames_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(
            (payload + crate::frame::HEADER_LEN) as u64,
            Ordering::Relaxed,
        );
    }

    pub(crate) fn frames_out(&self, frames: u64, bytes: u64) {
        self.frames_out.fetch_add(frames, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl LinkStatsSnapshot {
    /// Links currently established.
    pub fn links_open(&self) -> u64 {
        self.links_opened.saturating_sub(self.links_closed)
    }

    /// Writes these counters as `tessera_link_*` samples labelled `node`
    /// (this process's role) and `link` (which listener or client).
    pub fn collect(&self, node: &str, link: &str, out: &mut tessera_metrics::Exposition) {
        let l = [("node", node), ("link", link)];
        out.gauge(
            "tessera_link_open",
            "Links established now.",
            &l,
            self.links_open() as f64,
        );
        out.counter(
            "tessera_link_opened_total",
            "Links that completed a handshake.",
            &l,
            self.links_opened,
        );
        for (dir, frames, bytes) in [
            ("in", self.frames_in, self.bytes_in),
            ("out", self.frames_out, self.bytes_out),
        ] {
            let l = [l[0], l[1], ("direction", dir)];
            out.counter(
                "tessera_link_frames_total",
                "Frames on established links.",
                &l,
                frames,
            );
            out.counter(
                "tessera_link_bytes_total",
                "Bytes on established links, frame headers included.",
                &l,
                bytes,
            );
        }
        for (dir, n) in [("in", self.keepalives_in), ("out", self.keepalives_out)] {
            out.counter(
                "tessera_link_keepalives_total",
                "Keepalive frames on established links (sent when a link is otherwise quiet).",
                &[l[0], l[1], ("direction", dir)],
                n,
            );
        }
        for (reason, v) in [
            ("decode_error", self.decode_errors),
            ("oversized", self.oversized),
            ("handshake_refused", self.handshakes_refused),
            ("handshake_timeout", self.handshake_timeouts),
            ("idle_timeout", self.idle_timeouts),
            ("io_error", self.io_errors),
            ("connect_failure", self.connect_failures),
            ("accept_error", self.accept_errors),
        ] {
            out.counter(
                "tessera_link_errors_total",
                "Links refused or closed, and failed connects or accepts, by reason.",
                &[l[0], l[1], ("reason", reason)],
                v,
            );
        }
        for (reason, v) in [
            ("queue_full", self.queue_full_drops),
            ("too_large", self.send_too_large),
        ] {
            out.counter(
                "tessera_link_sends_dropped_total",
                "Messages not sent: the link's queue was full, or the frame too large.",
                &[l[0], l[1], ("reason", reason)],
                v,
            );
        }
    }
}

/// Adds one to a counter. Counters are statistics, never synchronisation:
/// relaxed ordering is enough.
pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Locks `m`, recovering the data if a holder panicked: every value shared
/// this way stays consistent between statements, so a panic elsewhere must
/// not take the whole process down with it.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
