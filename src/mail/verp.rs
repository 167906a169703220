//! The envelope sender of each message. With VERP (`verp = true`, the default) it is
//! `local+TOKEN@domain`, where TOKEN names the send (its journal row id) and carries an HMAC so
//! that a bounce cannot be forged to flag somebody; tokens are lower-case hex so that mail servers
//! that fold case keep them intact. Without VERP (`verp = false`, for servers such as Exchange
//! Online that refuse a plus-addressed sender) it is the bounce address itself, and bounces are
//! tied to sends by the Message-ID they return instead. Pure: no I/O.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Hex characters of HMAC kept in a token (40 bits: guessing one takes a trillion tries).
const MAC_HEX: usize = 10;
/// The longest token: 16 hex digits of id, a dash, the MAC.
pub const TOKEN_MAX_LEN: usize = 16 + 1 + MAC_HEX;

fn mac(secret: &[u8], send_id: i64) -> String {
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    m.update(&send_id.to_be_bytes());
    let full = hex::encode(m.finalize().into_bytes());
    full[..MAC_HEX].to_string()
}

/// The token for journal row `send_id`.
pub fn token(secret: &[u8], send_id: i64) -> String {
    format!("{:x}-{}", send_id, mac(secret, send_id))
}

/// The envelope sender for `send_id` given the bounce address `local@domain`.
pub fn address(bounce_address: &str, secret: &[u8], send_id: i64) -> String {
    match bounce_address.rsplit_once('@') {
        Some((local, domain)) => format!("{local}+{}@{domain}", token(secret, send_id)),
        None => bounce_address.to_string(),
    }
}

/// The envelope sender for `send_id`: its VERP address when `verp` is on, the bounce address
/// itself when it is off.
pub fn envelope_sender(bounce_address: &str, secret: &[u8], send_id: i64, verp: bool) -> String {
    if verp {
        address(bounce_address, secret, send_id)
    } else {
        bounce_address.to_string()
    }
}

/// The send id in a token, if the token is genuine.
pub fn verify(secret: &[u8], token: &str) -> Option<i64> {
    let token = token.trim().to_ascii_lowercase();
    let (id_hex, given) = token.split_once('-')?;
    if id_hex.is_empty() || id_hex.len() > 16 {
        return None;
    }
    let id = i64::from_str_radix(id_hex, 16).ok()?;
    let expected = mac(secret, id);
    // Constant-time comparison is not needed for a 40-bit tag checked offline, but it is cheap.
    let same = expected.len() == given.len()
        && expected
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    same.then_some(id)
}

/// The token in an address like `moped-bounces+1f-abc@austintexas.gov`, if any.
pub fn token_in(address: &str) -> Option<&str> {
    let local = address.rsplit_once('@')?.0;
    local.split_once('+').map(|(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_forgery() {
        let secret = b"k3y";
        let a = address("moped-bounces@austintexas.gov", secret, 4242);
        assert!(a.starts_with("moped-bounces+1092-"), "{a}");
        assert!(a.split('@').next().unwrap().len() <= 64);
        let t = token_in(&a).unwrap();
        assert_eq!(verify(secret, t), Some(4242));
        assert_eq!(verify(secret, &t.to_uppercase()), Some(4242));
        assert_eq!(verify(b"other", t), None);
        assert_eq!(verify(secret, "1093-0000000000"), None);
        assert_eq!(verify(secret, "garbage"), None);
    }

    #[test]
    fn without_verp_the_envelope_sender_is_the_bounce_address() {
        let on = envelope_sender("moped-bounces@austintexas.gov", b"k", 31, true);
        assert_eq!(on, address("moped-bounces@austintexas.gov", b"k", 31));
        assert!(token_in(&on).is_some());
        let off = envelope_sender("moped-bounces@austintexas.gov", b"k", 31, false);
        assert_eq!(off, "moped-bounces@austintexas.gov");
        assert_eq!(token_in(&off), None);
    }
}
