//! The door's tokens, as tempauth hands them out: `GET /auth/v1.0` with a user's key
//! answers a token that later requests carry in `X-Auth-Token`.
//!
//! A token is self-contained and signed: `AUTH_tk` then, in hex, its expiry (seconds since
//! the epoch, 8 bytes), a 16-byte HMAC-SHA256 tag and the user's name. The tag is keyed by a
//! key derived from the cluster secret and covers the expiry, the name and the user's current
//! verifier, so a token needs no table, survives a proxy restart, and stops working when
//! the user is removed or their key rotated.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oss_proto::auth::{hmac, Key, Verifier};
use oss_proto::name::hex;
use subtle::ConstantTimeEq;

use crate::server::Login;
use crate::users::Users;

const PREFIX: &str = "AUTH_tk";
const TAG: usize = 16;

/// Issues and checks tokens.
pub struct Tokens {
    key: [u8; 32],
    pub life: Duration,
}

/// A token that was issued.
pub struct Issued {
    pub token: String,
    pub expires_in: Duration,
}

impl Tokens {
    pub fn new(cluster_secret: &Key, life: Duration) -> Self {
        Tokens {
            key: hmac(cluster_secret.as_text(), &[b"oss swift door tokens"]),
            life,
        }
    }

    fn tag(&self, expires: u64, user: &str, v: &Verifier) -> [u8; TAG] {
        let t = hmac(
            &self.key,
            &[&expires.to_be_bytes(), &v.stored_key, user.as_bytes()],
        );
        t[..TAG].try_into().expect("a tag is 32 bytes")
    }

    pub fn issue(&self, user: &str, v: &Verifier, now: SystemTime) -> Issued {
        let expires = secs(now) + self.life.as_secs();
        let mut raw = Vec::with_capacity(8 + TAG + user.len());
        raw.extend_from_slice(&expires.to_be_bytes());
        raw.extend_from_slice(&self.tag(expires, user, v));
        raw.extend_from_slice(user.as_bytes());
        Issued {
            token: format!("{PREFIX}{}", hex(&raw)),
            expires_in: self.life,
        }
    }

    /// Who `token` was issued to, if it is genuine, unexpired and the user's key is the one
    /// it was issued under.
    pub fn check(&self, token: &str, users: &Users, now: SystemTime) -> Option<Login> {
        let raw = unhex(token.strip_prefix(PREFIX)?)?;
        if raw.len() <= 8 + TAG {
            return None;
        }
        let expires = u64::from_be_bytes(raw[..8].try_into().ok()?);
        let user = std::str::from_utf8(&raw[8 + TAG..]).ok()?;
        let v = users.verifier(user)?;
        let ok: bool = self.tag(expires, user, &v).ct_eq(&raw[8..8 + TAG]).into();
        (ok && secs(now) < expires).then(|| Login::new(user.to_owned(), v))
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The key of `X-Auth-Key`: the key line `NAME:HEX` as `oss user add` prints it, or just its
/// `HEX` part.
pub fn key_of(user: &str, given: &str) -> Option<Key> {
    let line = if given.starts_with(&format!("{user}:")) {
        given.to_owned()
    } else {
        format!("{user}:{given}")
    };
    Key::from_text(line.as_bytes()).ok()
}

/// `X-Auth-User`: `oss:NAME` (tempauth's `ACCOUNT:USER`) or just `NAME`.
pub fn user_of(given: &str) -> &str {
    given.strip_prefix("oss:").unwrap_or(given)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_user_until_they_expire_or_the_key_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (users, _) = Users::open(dir.path()).unwrap();
        let line = users.add("alice").unwrap();
        let secret = Key::from_text(&[b's'; 40]).unwrap();
        let tokens = Tokens::new(&secret, Duration::from_secs(60));
        let v = users.verifier("alice").unwrap();
        let now = SystemTime::now();
        let t = tokens.issue("alice", &v, now).token;
        assert_eq!(tokens.check(&t, &users, now).unwrap().user, "alice");
        assert!(tokens
            .check(&t, &users, now + Duration::from_secs(61))
            .is_none());
        // Another secret, a changed byte, garbage: refused.
        let other = Tokens::new(&Key::from_text(&[b'o'; 40]).unwrap(), tokens.life);
        assert!(other.check(&t, &users, now).is_none());
        let mut bad = t.clone().into_bytes();
        let i = PREFIX.len() + 20;
        bad[i] = if bad[i] == b'0' { b'1' } else { b'0' };
        assert!(tokens
            .check(std::str::from_utf8(&bad).unwrap(), &users, now)
            .is_none());
        assert!(tokens.check("AUTH_tkzz", &users, now).is_none());
        assert!(tokens.check("", &users, now).is_none());
        // A rotated key ends the token.
        users.rotate("alice").unwrap();
        assert!(tokens.check(&t, &users, now).is_none());
        // Keys are taken whole or without their name.
        let key = line.split_once(':').unwrap().1;
        assert_eq!(key_of("alice", key), key_of("alice", &line));
        assert_eq!(user_of("oss:alice"), "alice");
        assert_eq!(user_of("alice"), "alice");
    }
}
