//! Challenge-response authentication in the style of SCRAM (RFC 5802), with HMAC-SHA256.
//!
//! A *key* is a byte string of at least [`MIN_KEY_LEN`] bytes: a user's key (64 hex digits
//! that `oss user add` prints) or the cluster secret shared by the proxy and the storage
//! servers. The side that checks a key keeps only its [`Verifier`] (a salt and two hashes
//! derived from the key): a copy of the verifier does not let anyone log in, because the
//! proof a client sends needs the key itself.
//!
//! One login, four messages (framing and transport are the caller's):
//!
//! ```text
//! client → server   user, client nonce (32 random bytes)
//! server → client   salt, server nonce (32 random bytes)
//! client → server   proof  = ClientKey xor HMAC(StoredKey, auth)
//! server → client   signature = HMAC(ServerKey, auth)
//!
//! salted    = HMAC(key, "oss salted key" || salt)
//! ClientKey = HMAC(salted, "Client Key");  StoredKey = SHA-256(ClientKey)
//! ServerKey = HMAC(salted, "Server Key")
//! auth      = "oss-auth-1" || u32 len(user) || user || client nonce || server nonce || salt
//! ```
//!
//! The server recovers ClientKey from the proof, hashes it and compares with StoredKey (in
//! constant time); the client checks the server's signature, so a server that does not hold
//! the verifier (a fake storage server) is caught too. Neither the key nor anything that
//! can stand in for it crosses the wire, and since both nonces enter `auth`, a recorded
//! proof is worthless in any later login. For a user it does not know, a server answers with
//! a salt derived from its own secret and the name, so probing names learns nothing.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Shortest key accepted: 32 bytes (256 bits when random).
pub const MIN_KEY_LEN: usize = 32;
/// Bytes of a nonce.
pub const NONCE_LEN: usize = 32;
/// Bytes of a salt.
pub const SALT_LEN: usize = 16;

pub type Nonce = [u8; NONCE_LEN];
pub type Salt = [u8; SALT_LEN];
pub type Tag = [u8; 32];

/// Why a key was refused before any login was tried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a key must be at least {MIN_KEY_LEN} bytes, this one has {0}")]
    TooShort(usize),
    #[error("not a key line (NAME:KEY, as `oss user add` prints it)")]
    Malformed,
}

/// A key: the bytes of a key file's text, without its trailing newline.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A key from text as read from a file: one trailing newline (and carriage return) is
    /// ignored.
    pub fn from_text(text: &[u8]) -> Result<Key, KeyError> {
        let mut t = text;
        if let Some(rest) = t.strip_suffix(b"\n") {
            t = rest;
        }
        if let Some(rest) = t.strip_suffix(b"\r") {
            t = rest;
        }
        if t.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort(t.len()));
        }
        Ok(Key(t.to_vec()))
    }

    /// A new random key, as the 64 lower-case hex digits of 32 random bytes.
    pub fn generate() -> Key {
        let bytes: [u8; 32] = random();
        Key(crate::name::hex(&bytes).into_bytes())
    }

    /// The key's text (what a key file holds, without the newline).
    pub fn as_text(&self) -> &[u8] {
        &self.0
    }
}

/// Slows down logins from an address that keeps failing, so guessing keys over the network
/// is impractical: after `n` failures in a row (forgotten a minute after the last one) each
/// new login from that address waits 100 ms × 2^(n−1), at most 5 s, before it is answered.
#[derive(Debug, Default)]
pub struct Throttle {
    failures:
        std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (u32, std::time::Instant)>>,
}

impl Throttle {
    /// Addresses remembered at most; the oldest are forgotten first beyond this.
    const MAX_PEERS: usize = 10_000;
    const FORGET_AFTER: std::time::Duration = std::time::Duration::from_secs(60);
    const BASE: std::time::Duration = std::time::Duration::from_millis(100);
    const MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(5);

    fn table(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<std::net::IpAddr, (u32, std::time::Instant)>,
    > {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long a new login from `ip` waits before it is answered.
    pub fn delay(&self, ip: std::net::IpAddr, now: std::time::Instant) -> std::time::Duration {
        match self.table().get(&ip) {
            Some(&(n, last)) if now.duration_since(last) < Self::FORGET_AFTER && n > 0 => {
                let factor = 1u32 << (n - 1).min(6);
                (Self::BASE * factor).min(Self::MAX_DELAY)
            }
            _ => std::time::Duration::ZERO,
        }
    }

    pub fn failed(&self, ip: std::net::IpAddr, now: std::time::Instant) {
        let mut t = self.table();
        if t.len() >= Self::MAX_PEERS && !t.contains_key(&ip) {
            t.retain(|_, (_, last)| now.duration_since(*last) < Self::FORGET_AFTER);
            if t.len() >= Self::MAX_PEERS {
                if let Some(oldest) = t.iter().min_by_key(|(_, (_, l))| *l).map(|(k, _)| *k) {
                    t.remove(&oldest);
                }
            }
        }
        let e = t.entry(ip).or_insert((0, now));
        if now.duration_since(e.1) >= Self::FORGET_AFTER {
            e.0 = 0;
        }
        e.0 = e.0.saturating_add(1);
        e.1 = now;
    }

    pub fn succeeded(&self, ip: std::net::IpAddr) {
        self.table().remove(&ip);
    }
}

/// Why a daemon's secret file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("cannot read the secret file {0}: {1}")]
    Read(std::path::PathBuf, std::io::Error),
    #[error("the secret file {0} is readable by group or others (mode {1:o}); chmod 600 it")]
    Exposed(std::path::PathBuf, u32),
    #[error("the secret file {0} is not usable: {1} (write at least {MIN_KEY_LEN} random bytes as text, e.g. `openssl rand -hex 32`)")]
    Weak(std::path::PathBuf, KeyError),
}

/// Reads the cluster secret: a file of at least [`MIN_KEY_LEN`] bytes of text (a trailing
/// newline is ignored) that neither group nor others may access.
pub fn read_secret_file(path: &std::path::Path) -> Result<Key, SecretFileError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| SecretFileError::Read(path.to_path_buf(), e))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::Exposed(path.to_path_buf(), mode));
    }
    let text = std::fs::read(path).map_err(|e| SecretFileError::Read(path.to_path_buf(), e))?;
    Key::from_text(&text).map_err(|e| SecretFileError::Weak(path.to_path_buf(), e))
}

/// Random bytes from the operating system.
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system provides random bytes");
    b
}

/// HMAC-SHA256 of the concatenation of `parts`.
pub fn hmac(key: &[u8], parts: &[&[u8]]) -> Tag {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// What a server keeps to check a key: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verifier {
    pub salt: Salt,
    pub stored_key: Tag,
    pub server_key: Tag,
}

struct Derived {
    client_key: Tag,
    stored_key: Tag,
    server_key: Tag,
}

fn derive(key: &Key, salt: &Salt) -> Derived {
    let salted = hmac(&key.0, &[b"oss salted key", salt]);
    let client_key = hmac(&salted, &[b"Client Key"]);
    Derived {
        client_key,
        stored_key: Sha256::digest(client_key).into(),
        server_key: hmac(&salted, &[b"Server Key"]),
    }
}

impl Verifier {
    /// The verifier of `key` with a fresh random salt.
    pub fn new(key: &Key) -> Verifier {
        Self::with_salt(key, random())
    }

    pub fn with_salt(key: &Key, salt: Salt) -> Verifier {
        let d = derive(key, &salt);
        Verifier {
            salt,
            stored_key: d.stored_key,
            server_key: d.server_key,
        }
    }

    /// A stand-in for a user that does not exist: same shape, derived from the server's
    /// own secret so that it is stable per name, and no key matches it.
    pub fn decoy(server_secret: &Key, user: &str) -> Verifier {
        let salt_full = hmac(&server_secret.0, &[b"oss decoy salt", user.as_bytes()]);
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&salt_full[..SALT_LEN]);
        Verifier {
            salt,
            stored_key: hmac(&server_secret.0, &[b"oss decoy stored", user.as_bytes()]),
            server_key: hmac(&server_secret.0, &[b"oss decoy server", user.as_bytes()]),
        }
    }

    /// Checks a key given in full (the Swift door's `X-Auth-Key`), in constant time.
    pub fn matches(&self, key: &Key) -> bool {
        derive(key, &self.salt)
            .stored_key
            .ct_eq(&self.stored_key)
            .into()
    }

    /// Checks a client's proof (constant time).
    pub fn check_proof(&self, auth: &AuthMessage, proof: &Tag) -> bool {
        let sig = hmac(&self.stored_key, &[&auth.0]);
        let mut client_key = [0u8; 32];
        for i in 0..32 {
            client_key[i] = proof[i] ^ sig[i];
        }
        let stored: Tag = Sha256::digest(client_key).into();
        stored.ct_eq(&self.stored_key).into()
    }

    /// The server's answer that proves it holds this verifier.
    pub fn server_signature(&self, auth: &AuthMessage) -> Tag {
        hmac(&self.server_key, &[&auth.0])
    }
}

/// The bytes both sides sign: everything said in the first two messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthMessage(Vec<u8>);

impl AuthMessage {
    pub fn new(user: &str, client_nonce: &Nonce, server_nonce: &Nonce, salt: &Salt) -> Self {
        let mut v = Vec::with_capacity(16 + user.len() + 2 * NONCE_LEN + SALT_LEN);
        v.extend_from_slice(b"oss-auth-1");
        v.extend_from_slice(&(user.len() as u32).to_be_bytes());
        v.extend_from_slice(user.as_bytes());
        v.extend_from_slice(client_nonce);
        v.extend_from_slice(server_nonce);
        v.extend_from_slice(salt);
        AuthMessage(v)
    }
}

/// The client's proof that it holds `key`, for the salt the server sent.
pub fn client_proof(key: &Key, salt: &Salt, auth: &AuthMessage) -> Tag {
    let d = derive(key, salt);
    let sig = hmac(&d.stored_key, &[&auth.0]);
    let mut proof = [0u8; 32];
    for i in 0..32 {
        proof[i] = d.client_key[i] ^ sig[i];
    }
    proof
}

/// Checks the server's signature on the client side (constant time).
pub fn check_server_signature(key: &Key, salt: &Salt, auth: &AuthMessage, sig: &Tag) -> bool {
    let d = derive(key, salt);
    hmac(&d.server_key, &[&auth.0]).ct_eq(sig).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: char) -> Key {
        Key::from_text(c.to_string().repeat(40).as_bytes()).unwrap()
    }

    /// One login: (server accepts, client accepts the server).
    fn login(client_key: &Key, server: &Verifier, user: &str) -> (bool, bool) {
        let (cn, sn): (Nonce, Nonce) = (random(), random());
        let auth = AuthMessage::new(user, &cn, &sn, &server.salt);
        let proof = client_proof(client_key, &server.salt, &auth);
        let ok = server.check_proof(&auth, &proof);
        let sig = server.server_signature(&auth);
        (
            ok,
            check_server_signature(client_key, &server.salt, &auth, &sig),
        )
    }

    #[test]
    fn the_right_key_logs_in_both_ways() {
        let k = key('a');
        let v = Verifier::new(&k);
        assert_eq!(login(&k, &v, "alice"), (true, true));
        assert!(v.matches(&k));
        assert!(!v.matches(&key('b')));
    }

    #[test]
    fn a_wrong_key_is_refused_and_a_fake_server_is_caught() {
        let (k, other) = (key('a'), key('b'));
        let v = Verifier::new(&k);
        assert_eq!(login(&other, &v, "alice"), (false, false));
        // A server holding another key's verifier cannot sign for this one.
        let fake = Verifier::with_salt(&other, v.salt);
        assert!(!login(&k, &fake, "alice").1);
    }

    #[test]
    fn a_recorded_proof_does_not_work_again() {
        let k = key('a');
        let v = Verifier::new(&k);
        let cn: Nonce = random();
        let auth = AuthMessage::new("alice", &cn, &random(), &v.salt);
        let proof = client_proof(&k, &v.salt, &auth);
        assert!(v.check_proof(&auth, &proof));
        // Replayed against a new server nonce (or for another user): refused.
        let later = AuthMessage::new("alice", &cn, &random(), &v.salt);
        assert!(!v.check_proof(&later, &proof));
        let other_user = AuthMessage::new("bob", &cn, &random(), &v.salt);
        assert!(!v.check_proof(&other_user, &proof));
        // A flipped bit anywhere in the proof: refused.
        for i in 0..32 {
            let mut p = proof;
            p[i] ^= 1;
            assert!(!v.check_proof(&auth, &p));
        }
    }

    #[test]
    fn the_verifier_is_not_the_key() {
        let k = key('a');
        let v = Verifier::new(&k);
        // Using anything stored in the verifier as the key does not log in.
        for stolen in [&v.stored_key[..], &v.server_key[..]] {
            let fake = Key::from_text(crate::name::hex(stolen).as_bytes()).unwrap();
            assert!(!login(&fake, &v, "alice").0);
        }
        assert_ne!(Verifier::new(&k).salt, v.salt, "fresh salts");
    }

    #[test]
    fn unknown_users_get_a_stable_decoy() {
        let secret = key('s');
        let a = Verifier::decoy(&secret, "mallory");
        assert_eq!(a, Verifier::decoy(&secret, "mallory"));
        assert_ne!(a.salt, Verifier::decoy(&secret, "eve").salt);
        assert!(!login(&key('a'), &a, "mallory").0);
    }

    #[test]
    fn secret_files_must_be_private_and_long() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, format!("{}\n", "ab".repeat(32))).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            read_secret_file(&p),
            Err(SecretFileError::Exposed(_, 0o644))
        ));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_secret_file(&p).unwrap().as_text(),
            "ab".repeat(32).as_bytes()
        );
        std::fs::write(&p, "short").unwrap();
        assert!(matches!(
            read_secret_file(&p),
            Err(SecretFileError::Weak(..))
        ));
        assert!(matches!(
            read_secret_file(&dir.path().join("missing")),
            Err(SecretFileError::Read(..))
        ));
    }

    #[test]
    fn repeated_failures_slow_an_address_down() {
        use std::time::{Duration, Instant};
        let t = Throttle::default();
        let (ip, other): (std::net::IpAddr, std::net::IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let now = Instant::now();
        assert_eq!(t.delay(ip, now), Duration::ZERO);
        t.failed(ip, now);
        assert_eq!(t.delay(ip, now), Duration::from_millis(100));
        for _ in 0..10 {
            t.failed(ip, now);
        }
        assert_eq!(t.delay(ip, now), Duration::from_secs(5));
        assert_eq!(t.delay(other, now), Duration::ZERO, "per address");
        assert_eq!(t.delay(ip, now + Duration::from_secs(61)), Duration::ZERO);
        t.succeeded(ip);
        assert_eq!(t.delay(ip, now), Duration::ZERO);
    }

    #[test]
    fn key_text_rules() {
        assert_eq!(
            Key::from_text(b"short\n").unwrap_err(),
            KeyError::TooShort(5)
        );
        let k = Key::from_text(format!("{}\n", "x".repeat(32)).as_bytes()).unwrap();
        assert_eq!(k.as_text(), "x".repeat(32).as_bytes());
        let g = Key::generate();
        assert_eq!(g.as_text().len(), 64);
        assert!(g.as_text().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(g, Key::generate());
    }
}
