//! When a renet ack packet goes: riding on data early, alone only when long
//! due. Shared by the gate's listeners and the client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long an ack packet that would go alone (a datagram of its own) waits
/// after the last ack; one goes at least this often while there is
/// something to ack. renet appends an ack to every collection of packets,
/// so without this each message would cost two datagrams; its acks are
/// cumulative ranges, so a skipped one is said by the next. Below the
/// reliable channel's resend time ([`connection_config`]), so a deferred ack
/// never makes the peer resend.
///
/// [`connection_config`]: crate::connection_config
pub const ACK_INTERVAL: Duration = Duration::from_millis(150);

/// How long after the last ack one goes that can ride in a packed datagram
/// with other packets (costing no datagram of its own). Well under
/// [`ACK_INTERVAL`], so acks ride on the data of a peer that sends at least
/// that often (a client's inputs, a scene's state) rather than racing the
/// lone-ack timer.
pub const ACK_RIDE_AFTER: Duration = Duration::from_millis(50);

/// renet's packet type byte for an ack packet (`Packet::Ack`, renet 2.0).
pub(crate) const RENET_ACK_PACKET: u8 = 4;

/// Whether to ask renet for a peer's packets now (both ends): when it has
/// messages of its own, when an ack is due alone ([`ACK_INTERVAL`] since the
/// last), or when one can ride with unreliable messages going outside renet
/// — after half that, not after [`ACK_RIDE_AFTER`] (one 20 Hz tick: renet
/// would be asked every tick just to build an ack). Unreliable messages
/// alone cost renet nothing.
pub(crate) fn renet_due(renet_dirty: bool, direct: bool, since_ack: Duration) -> bool {
    renet_dirty || since_ack >= ACK_INTERVAL || (direct && since_ack >= ACK_INTERVAL / 2)
}

/// Drops from `packets` (one renet collection) an ack packet that is not
/// due, and says whether one stays. An ack is due [`ACK_INTERVAL`] after the
/// last one; when it `rides` (other data goes in the same packed datagram,
/// so it costs no datagram of its own), already [`ACK_RIDE_AFTER`] after it,
/// so acks ride on data rather than wait for the next update and go alone.
pub(crate) fn keep_due_ack(
    packets: &mut Vec<Vec<u8>>,
    rides: bool,
    last_ack: Instant,
    now: Instant,
    deferred: &AtomicU64,
) -> bool {
    let is_ack = |p: &Vec<u8>| p.first() == Some(&RENET_ACK_PACKET);
    let Some(at) = packets.iter().position(is_ack) else {
        return false;
    };
    let since = now.saturating_duration_since(last_ack);
    let due = if rides {
        since >= ACK_RIDE_AFTER
    } else {
        since >= ACK_INTERVAL
    };
    if !due {
        packets.remove(at);
        deferred.fetch_add(1, Ordering::Relaxed);
    }
    due
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renet_is_asked_for_its_own_messages_or_a_due_ack_only() {
        let ms = Duration::from_millis;
        // Its own messages: at once.
        assert!(renet_due(true, false, ms(0)));
        // Unreliable messages alone: not before half the ack interval.
        assert!(!renet_due(false, true, ACK_INTERVAL / 2 - ms(1)));
        assert!(renet_due(false, true, ACK_INTERVAL / 2));
        // Nothing to send: only for an ack alone.
        assert!(!renet_due(false, false, ACK_INTERVAL - ms(1)));
        assert!(renet_due(false, false, ACK_INTERVAL));
    }

    #[test]
    fn an_ack_rides_on_data_early_and_goes_alone_only_when_long_due() {
        let ack = vec![RENET_ACK_PACKET, 1, 2];
        let data = vec![1u8, 9, 9];
        let t0 = Instant::now();
        let deferred = AtomicU64::new(0);
        let run = |packets: &[&Vec<u8>], packed: bool, since: Duration| {
            let mut p: Vec<Vec<u8>> = packets.iter().map(|v| (*v).clone()).collect();
            // As the transports call it: the ack rides if other packets
            // share its packed datagram.
            let rides = packed && p.len() > 1;
            let kept = keep_due_ack(&mut p, rides, t0, t0 + since, &deferred);
            (kept, p.iter().any(|v| v[0] == RENET_ACK_PACKET), p.len())
        };
        let ride = ACK_RIDE_AFTER;
        // With data to ride on (packed): due after ACK_RIDE_AFTER.
        assert_eq!(run(&[&data, &ack], true, ride), (true, true, 2));
        assert_eq!(run(&[&data, &ack], true, ride / 2), (false, false, 1));
        // Alone: not before ACK_INTERVAL, however packed.
        assert_eq!(run(&[&ack], true, ride), (false, false, 0));
        assert_eq!(run(&[&ack], true, ACK_INTERVAL), (true, true, 1));
        // Not packed: every ack costs a datagram, so ACK_INTERVAL applies.
        assert_eq!(run(&[&data, &ack], false, ride), (false, false, 1));
        assert_eq!(run(&[&data, &ack], false, ACK_INTERVAL), (true, true, 2));
        // No ack in the collection: nothing kept, nothing dropped.
        assert_eq!(run(&[&data], true, ACK_INTERVAL), (false, false, 1));
        assert_eq!(deferred.load(Ordering::Relaxed), 3);
        // The ride threshold is below the lone one, and both under the
        // reliable channel's resend time (else a deferred ack means a resend).
        assert!(ACK_RIDE_AFTER < ACK_INTERVAL);
        let config = crate::connection_config(1, 1);
        for channels in [config.server_channels_config, config.client_channels_config] {
            for c in channels {
                if let renet::SendType::ReliableOrdered { resend_time } = c.send_type {
                    assert!(ACK_INTERVAL < resend_time, "{resend_time:?}");
                }
            }
        }
    }
}
