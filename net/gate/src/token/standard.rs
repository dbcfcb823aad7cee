//! The netcode 1.02 standard serialization of a connect token: the 2,048
//! bytes every standard netcode client (the C reference, C#, Go) reads.
//!
//! renetcode 2.0.0's own `ConnectToken::write` differs from the standard: it
//! prepends the client id (8 bytes), writes IPv6 addresses as 16 octets
//! instead of eight `u16`s, and stops after the keys (1,172 bytes for one
//! IPv4 address) instead of padding to 2,048 — so standard clients refuse it.
//! Only the public, outer layout is redone here: the encrypted private token
//! (1,024 bytes) is copied as renetcode made it, so the gate's renetcode
//! server decrypts it as before.
//!
//! Layout (all integers little-endian), see `docs/protocol-token.md`:
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 13 | version info `"NETCODE 1.02\0"` |
//! | 13 | 8 | protocol id |
//! | 21 | 8 | create timestamp (Unix seconds) |
//! | 29 | 8 | expire timestamp (Unix seconds) |
//! | 37 | 24 | connect token nonce |
//! | 61 | 1024 | encrypted private connect token |
//! | 1085 | 4 | timeout seconds (i32) |
//! | 1089 | 4 | number of server addresses, 1 to 32 |
//! | 1093 | 7 or 19 each | address: type 1 = IPv4 (4 octets, port u16), 2 = IPv6 (8 × u16, port u16) |
//! | … | 32 | client-to-server key |
//! | … | 32 | server-to-client key |
//! | … | to 2048 | zero padding |
//!
//! The standard form does not carry renetcode's client id (the server takes
//! it from the encrypted part): [`read_standard`] gives `client_id` 0.
//!
//! **Invariant:** [`read_standard`] never panics, on any input
//! (property-tested): the length, version, timestamps, address count and
//! address types are all checked, and every read is bounds-checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use renetcode::{ConnectToken, NETCODE_KEY_BYTES};

/// The size of a standard connect token.
pub const CONNECT_TOKEN_BYTES: usize = 2048;
/// The version info every netcode 1.02 token starts with.
pub const TOKEN_VERSION_INFO: &[u8; 13] = b"NETCODE 1.02\0";
/// The size of the encrypted private connect token.
pub const PRIVATE_TOKEN_BYTES: usize = 1024;
/// The size of the connect token nonce (XChaCha20).
pub const TOKEN_NONCE_BYTES: usize = 24;
/// The most server addresses a token lists.
pub const MAX_SERVER_ADDRESSES: usize = 32;

/// Offsets of the fixed-position fields.
pub mod offset {
    pub const VERSION_INFO: usize = 0;
    pub const PROTOCOL_ID: usize = 13;
    pub const CREATE_TIMESTAMP: usize = 21;
    pub const EXPIRE_TIMESTAMP: usize = 29;
    pub const NONCE: usize = 37;
    pub const PRIVATE_DATA: usize = 61;
    pub const TIMEOUT_SECONDS: usize = 1085;
    pub const NUM_SERVER_ADDRESSES: usize = 1089;
    /// The first address; the keys follow the last one.
    pub const SERVER_ADDRESSES: usize = 1093;
}

const ADDRESS_IPV4: u8 = 1;
const ADDRESS_IPV6: u8 = 2;

/// Why bytes are not a standard connect token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StandardTokenError {
    #[error("a connect token is {CONNECT_TOKEN_BYTES} bytes, not {0}")]
    WrongLength(usize),
    #[error("the version info is not \"NETCODE 1.02\"")]
    BadVersion,
    #[error("the token is created after it expires")]
    CreatedAfterExpiry,
    #[error("a token lists 1 to {MAX_SERVER_ADDRESSES} server addresses, not {0}")]
    BadAddressCount(u32),
    #[error("unknown server address type {0}")]
    BadAddressType(u8),
    #[error("the token's fields run past its end")]
    Truncated,
}

/// Writes `token` in the standard layout, zero padded to 2,048 bytes.
/// Infallible: even 32 IPv6 addresses take 1,765 bytes.
pub fn write_standard(token: &ConnectToken) -> [u8; CONNECT_TOKEN_BYTES] {
    let mut out = [0u8; CONNECT_TOKEN_BYTES];
    let mut w = Writer {
        out: &mut out,
        at: 0,
    };
    w.put(&token.version_info);
    w.put(&token.protocol_id.to_le_bytes());
    w.put(&token.create_timestamp.to_le_bytes());
    w.put(&token.expire_timestamp.to_le_bytes());
    w.put(&token.xnonce);
    w.put(&token.private_data);
    w.put(&token.timeout_seconds.to_le_bytes());
    let addresses = token.server_addresses.iter().flatten();
    // At most 32: the array has 32 slots.
    let count = u32::try_from(addresses.clone().count()).unwrap_or(u32::MAX);
    w.put(&count.to_le_bytes());
    for addr in addresses {
        match addr.ip() {
            IpAddr::V4(ip) => {
                w.put(&[ADDRESS_IPV4]);
                w.put(&ip.octets());
            }
            IpAddr::V6(ip) => {
                w.put(&[ADDRESS_IPV6]);
                for segment in ip.segments() {
                    w.put(&segment.to_le_bytes());
                }
            }
        }
        w.put(&addr.port().to_le_bytes());
    }
    w.put(&token.client_to_server_key);
    w.put(&token.server_to_client_key);
    // The rest stays zero: the padding.
    out
}

/// Reads a token written in the standard layout (by [`write_standard`] or
/// any netcode 1.02 implementation). Like the reference implementation, the
/// padding is not checked. `client_id` is 0: the standard form does not
/// carry it.
pub fn read_standard(bytes: &[u8]) -> Result<ConnectToken, StandardTokenError> {
    if bytes.len() != CONNECT_TOKEN_BYTES {
        return Err(StandardTokenError::WrongLength(bytes.len()));
    }
    let mut r = Reader { bytes, at: 0 };
    let version_info: [u8; 13] = r.array()?;
    if &version_info != TOKEN_VERSION_INFO {
        return Err(StandardTokenError::BadVersion);
    }
    let protocol_id = u64::from_le_bytes(r.array()?);
    let create_timestamp = u64::from_le_bytes(r.array()?);
    let expire_timestamp = u64::from_le_bytes(r.array()?);
    if create_timestamp > expire_timestamp {
        return Err(StandardTokenError::CreatedAfterExpiry);
    }
    let xnonce: [u8; TOKEN_NONCE_BYTES] = r.array()?;
    let private_data: [u8; PRIVATE_TOKEN_BYTES] = r.array()?;
    let timeout_seconds = i32::from_le_bytes(r.array()?);
    let count = u32::from_le_bytes(r.array()?);
    let n = usize::try_from(count).unwrap_or(usize::MAX);
    if n == 0 || n > MAX_SERVER_ADDRESSES {
        return Err(StandardTokenError::BadAddressCount(count));
    }
    let mut server_addresses = [None; MAX_SERVER_ADDRESSES];
    for slot in server_addresses.iter_mut().take(n) {
        let [kind] = r.array()?;
        let ip = match kind {
            ADDRESS_IPV4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
            ADDRESS_IPV6 => {
                let mut segments = [0u16; 8];
                for segment in &mut segments {
                    *segment = u16::from_le_bytes(r.array()?);
                }
                IpAddr::V6(Ipv6Addr::from(segments))
            }
            other => return Err(StandardTokenError::BadAddressType(other)),
        };
        let port = u16::from_le_bytes(r.array()?);
        *slot = Some(SocketAddr::new(ip, port));
    }
    let client_to_server_key: [u8; NETCODE_KEY_BYTES] = r.array()?;
    let server_to_client_key: [u8; NETCODE_KEY_BYTES] = r.array()?;
    Ok(ConnectToken {
        client_id: 0,
        version_info,
        protocol_id,
        create_timestamp,
        expire_timestamp,
        xnonce,
        server_addresses,
        client_to_server_key,
        server_to_client_key,
        private_data,
        timeout_seconds,
    })
}

/// Writes into a fixed buffer; bytes past its end are dropped (never
/// happens: the largest token fits, see [`write_standard`]).
struct Writer<'a> {
    out: &'a mut [u8; CONNECT_TOKEN_BYTES],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.at.saturating_add(bytes.len());
        if let Some(dst) = self.out.get_mut(self.at..end) {
            dst.copy_from_slice(bytes);
        }
        self.at = end;
    }
}

/// Reads fixed-size fields, bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], StandardTokenError> {
        let end = self.at.saturating_add(N);
        let field = self
            .bytes
            .get(self.at..end)
            .ok_or(StandardTokenError::Truncated)?;
        let mut out = [0u8; N];
        out.copy_from_slice(field);
        self.at = end;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn token(addresses: Vec<SocketAddr>) -> ConnectToken {
        ConnectToken::generate(
            Duration::from_secs(1_800_000_000),
            0x1122_3344_5566_7788,
            20,
            99,
            -1,
            addresses,
            Some(&[0xAB; 256]),
            &KEY,
        )
        .unwrap()
    }

    fn le_u64(bytes: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn layout_byte_by_byte() {
        let v4: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        let v6: SocketAddr = "[fe80::202:b3ff:fe1e:8329]:5001".parse().unwrap();
        let t = token(vec![v4, v6]);
        let b = write_standard(&t);

        assert_eq!(b.len(), 2048);
        assert_eq!(&b[offset::VERSION_INFO..13], b"NETCODE 1.02\0");
        assert_eq!(le_u64(&b, offset::PROTOCOL_ID), 0x1122_3344_5566_7788);
        assert_eq!(le_u64(&b, offset::CREATE_TIMESTAMP), 1_800_000_000);
        assert_eq!(le_u64(&b, offset::EXPIRE_TIMESTAMP), 1_800_000_020);
        assert_eq!(&b[offset::NONCE..offset::NONCE + 24], &t.xnonce);
        assert_eq!(
            &b[offset::PRIVATE_DATA..offset::PRIVATE_DATA + 1024],
            &t.private_data
        );
        assert_eq!(&b[1085..1089], &(-1i32).to_le_bytes());
        assert_eq!(&b[1085..1089], &[0xFF; 4]);
        assert_eq!(&b[offset::NUM_SERVER_ADDRESSES..1093], &2u32.to_le_bytes());
        // IPv4: type 1, a.b.c.d, port LE.
        assert_eq!(&b[1093..1100], &[1, 10, 1, 2, 3, 0xA0, 0x0F]);
        // IPv6: type 2, eight u16 LE (fe80, 0, 0, 0, 0202, b3ff, fe1e, 8329), port LE.
        let v6_bytes: [u8; 19] = [
            2, 0x80, 0xFE, 0, 0, 0, 0, 0, 0, 0x02, 0x02, 0xFF, 0xB3, 0x1E, 0xFE, 0x29, 0x83, 0x89,
            0x13,
        ];
        assert_eq!(&b[1100..1119], &v6_bytes);
        assert_eq!(&b[1119..1151], &t.client_to_server_key);
        assert_eq!(&b[1151..1183], &t.server_to_client_key);
        assert!(b[1183..].iter().all(|&x| x == 0), "zero padding to 2048");
    }

    #[test]
    fn round_trip_keeps_all_but_the_client_id() {
        let t = token(vec![
            "127.0.0.1:4000".parse().unwrap(),
            "[::1]:4001".parse().unwrap(),
        ]);
        let back = read_standard(&write_standard(&t)).unwrap();
        assert_eq!(back.client_id, 0);
        assert_eq!(ConnectToken { client_id: 0, ..t }, back);
    }

    #[test]
    fn thirty_two_ipv6_addresses_fit() {
        let many: Vec<SocketAddr> = (0..32)
            .map(|i| SocketAddr::new(Ipv6Addr::new(0xffff, i, 2, 3, 4, 5, 6, 7).into(), i))
            .collect();
        let t = token(many);
        let b = write_standard(&t);
        assert_eq!(
            read_standard(&b).unwrap().server_addresses,
            t.server_addresses
        );
        // The keys end at 1093 + 32 × 19 + 64 = 1765.
        assert!(b[1765..].iter().all(|&x| x == 0));
        assert_ne!(b[1764], 0, "the server-to-client key ends here");
    }

    #[test]
    fn refuses_bad_tokens() {
        let good = write_standard(&token(vec!["127.0.0.1:4000".parse().unwrap()]));
        use StandardTokenError::*;
        assert_eq!(read_standard(&good[..2047]), Err(WrongLength(2047)));
        assert_eq!(read_standard(&[]), Err(WrongLength(0)));
        let mut long = good.to_vec();
        long.push(0);
        assert_eq!(read_standard(&long), Err(WrongLength(2049)));

        let edit = |at: usize, bytes: &[u8]| {
            let mut b = good;
            b[at..at + bytes.len()].copy_from_slice(bytes);
            read_standard(&b)
        };
        assert_eq!(edit(11, b"1"), Err(BadVersion));
        assert_eq!(
            edit(offset::CREATE_TIMESTAMP, &u64::MAX.to_le_bytes()),
            Err(CreatedAfterExpiry)
        );
        assert_eq!(
            edit(offset::NUM_SERVER_ADDRESSES, &[0; 4]),
            Err(BadAddressCount(0))
        );
        assert_eq!(
            edit(offset::NUM_SERVER_ADDRESSES, &[33, 0, 0, 0]),
            Err(BadAddressCount(33))
        );
        assert_eq!(
            edit(offset::NUM_SERVER_ADDRESSES, &u32::MAX.to_le_bytes()),
            Err(BadAddressCount(u32::MAX))
        );
        assert_eq!(edit(offset::SERVER_ADDRESSES, &[0]), Err(BadAddressType(0)));
        assert_eq!(edit(offset::SERVER_ADDRESSES, &[3]), Err(BadAddressType(3)));
        // More addresses claimed than written: the next "address" is the
        // first key byte, here 9, an unknown type.
        let mut b = good;
        b[offset::NUM_SERVER_ADDRESSES] = 2;
        b[offset::SERVER_ADDRESSES + 7] = 9;
        assert_eq!(read_standard(&b), Err(BadAddressType(9)));
    }

    /// The reader's bounds checks, with every field as large as allowed
    /// past where the buffer could hold them, still answer an error.
    #[test]
    fn reader_reports_truncation() {
        let mut r = Reader {
            bytes: &[1, 2, 3],
            at: 0,
        };
        assert_eq!(r.array::<2>(), Ok([1, 2]));
        assert_eq!(r.array::<2>(), Err(StandardTokenError::Truncated));
        assert_eq!(r.array::<1>(), Ok([3]));
    }

    proptest! {
        /// Any bytes: an answer, never a panic.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2100)) {
            let _ = read_standard(&bytes);
        }

        /// A valid token with any suffix of its bytes replaced by garbage:
        /// reaches the deeper checks (address types, counts), never panics.
        #[test]
        fn corrupted_tokens_never_panic(
            from in 0usize..2048,
            noise in proptest::collection::vec(any::<u8>(), 2048),
            count in 0u32..40,
            kinds in proptest::collection::vec(0u8..4, 40),
        ) {
            let mut b = write_standard(&token(vec!["127.0.0.1:4000".parse().unwrap()]));
            b[offset::NUM_SERVER_ADDRESSES..offset::SERVER_ADDRESSES]
                .copy_from_slice(&count.to_le_bytes());
            // Plausible address types at the first few address positions.
            let mut at = offset::SERVER_ADDRESSES;
            for kind in kinds {
                if at >= 2048 { break; }
                b[at] = kind;
                at += if kind == 2 { 19 } else { 7 };
            }
            b[from..].copy_from_slice(&noise[from..]);
            if let Ok(t) = read_standard(&b) {
                // Whatever parses writes back to the same fields.
                prop_assert_eq!(read_standard(&write_standard(&t)), Ok(t));
            }
        }
    }
}
