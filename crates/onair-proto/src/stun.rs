//! The one STUN exchange the WHEP bridge makes itself (RFC 8489): a Binding request to learn
//! the server-reflexive address of a socket, when the user names a STUN server. ICE's own
//! connectivity checks are the WebRTC library's business, not this module's.
//!
//! Invariants: parsing never panics on any input; only a success response carrying the
//! transaction id we sent is accepted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const MAGIC: u32 = 0x2112_a442;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const MAPPED_ADDRESS: u16 = 0x0001;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;

/// A Binding request with no attributes.
pub fn encode_binding_request(transaction: [u8; 12]) -> [u8; 20] {
    let mut out = [0u8; 20];
    out[..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
    // Length 0: no attributes.
    out[4..8].copy_from_slice(&MAGIC.to_be_bytes());
    out[8..].copy_from_slice(&transaction);
    out
}

/// The mapped address of a Binding success response to `transaction`, if `msg` is one.
pub fn parse_binding_response(msg: &[u8], transaction: [u8; 12]) -> Option<SocketAddr> {
    if msg.len() < 20 {
        return None;
    }
    let kind = u16::from_be_bytes([msg[0], msg[1]]);
    let len = usize::from(u16::from_be_bytes([msg[2], msg[3]]));
    if kind != BINDING_SUCCESS || msg[4..8] != MAGIC.to_be_bytes() || msg[8..20] != transaction {
        return None;
    }
    let body = msg.get(20..20 + len)?;
    let mut plain = None;
    let mut at = 0;
    while at + 4 <= body.len() {
        let attr = u16::from_be_bytes([body[at], body[at + 1]]);
        let alen = usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]]));
        let value = body.get(at + 4..at + 4 + alen)?;
        match attr {
            XOR_MAPPED_ADDRESS => return parse_address(value, Some(&msg[4..20])),
            MAPPED_ADDRESS => plain = parse_address(value, None),
            _ => {}
        }
        // Attributes are padded to 4 bytes.
        at += 4 + alen.div_ceil(4) * 4;
    }
    plain
}

/// `xor` is the magic cookie followed by the transaction id, for XOR-MAPPED-ADDRESS.
fn parse_address(value: &[u8], xor: Option<&[u8]>) -> Option<SocketAddr> {
    let family = *value.get(1)?;
    let mut port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]);
    let mask = |i: usize| xor.map_or(0, |x| x[i]);
    if xor.is_some() {
        port ^= (MAGIC >> 16) as u16;
    }
    let ip = match family {
        0x01 => {
            let b = value.get(4..8)?;
            IpAddr::V4(Ipv4Addr::new(
                b[0] ^ mask(0),
                b[1] ^ mask(1),
                b[2] ^ mask(2),
                b[3] ^ mask(3),
            ))
        }
        0x02 => {
            let b = value.get(4..20)?;
            let mut octets = [0u8; 16];
            for (i, o) in octets.iter_mut().enumerate() {
                *o = b[i] ^ mask(i);
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TX: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    fn response(attr: u16, value: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
        let padded = value.len().div_ceil(4) * 4;
        m.extend_from_slice(&((4 + padded) as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC.to_be_bytes());
        m.extend_from_slice(&TX);
        m.extend_from_slice(&attr.to_be_bytes());
        m.extend_from_slice(&(value.len() as u16).to_be_bytes());
        m.extend_from_slice(value);
        m.resize(20 + 4 + padded, 0);
        m
    }

    #[test]
    fn request_has_the_fixed_header() {
        let r = encode_binding_request(TX);
        assert_eq!(&r[..8], &[0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42]);
        assert_eq!(&r[8..], &TX);
    }

    #[test]
    fn xor_mapped_ipv4_is_unmasked() {
        // 192.0.2.1:32853 XORed with the cookie.
        let port = 32853u16 ^ 0x2112;
        let ip = [192 ^ 0x21, 0x12, 2 ^ 0xa4, 1 ^ 0x42];
        let mut v = vec![0, 1];
        v.extend_from_slice(&port.to_be_bytes());
        v.extend_from_slice(&ip);
        let got = parse_binding_response(&response(XOR_MAPPED_ADDRESS, &v), TX);
        assert_eq!(got, Some("192.0.2.1:32853".parse().unwrap()));
    }

    #[test]
    fn plain_mapped_address_and_wrong_transaction() {
        let v = [0, 1, 0x13, 0x88, 10, 0, 0, 7];
        let msg = response(MAPPED_ADDRESS, &v);
        assert_eq!(
            parse_binding_response(&msg, TX),
            Some("10.0.0.7:5000".parse().unwrap())
        );
        assert_eq!(parse_binding_response(&msg, [0; 12]), None);
    }

    #[test]
    fn truncated_input_is_none_not_a_panic() {
        let v = [0, 1, 0x13, 0x88, 10, 0, 0, 7];
        let msg = response(MAPPED_ADDRESS, &v);
        for n in 0..msg.len() {
            let _ = parse_binding_response(&msg[..n], TX);
        }
    }
}
