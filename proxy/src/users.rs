//! Who may log in to the proxy: one verifier per user (never a key), persisted crash-safely
//! in `STATE_DIR/users.json`, and the admin key created on first use.
//!
//! `users.json` (format 1) holds, per user name, the [`Verifier`] of that user's key: a
//! random salt and two HMAC-SHA256 values derived from the key. None of it lets anyone log
//! in; only the key does, and the proxy keeps no key. The exception is `admin.key`, the admin
//! key the first start writes for the operator (mode 0600, one line): remove it once it is
//! stored elsewhere, the proxy does not need it.
//!
//! A connection remembers which user logged in and the verifier it logged in with; every
//! request checks that this is still the user's current verifier, so removing or rotating a
//! user stops their open (pooled) connections too, at once.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use oss_proto::auth::{Key, Verifier};
use oss_proto::name::validate_user;
use oss_proto::WireError;
use serde::{Deserialize, Serialize};

use crate::state::{write_durably, StateError};

pub use oss_proto::wire::ADMIN_USER as ADMIN;
const USERS_FILE: &str = "users.json";
const USERS_FORMAT: u32 = 1;
pub const ADMIN_KEY_FILE: &str = "admin.key";

#[derive(Debug, Serialize, Deserialize)]
struct UsersFile {
    format: u32,
    users: BTreeMap<String, Verifier>,
}

/// The user table.
#[derive(Debug)]
pub struct Users {
    dir: PathBuf,
    users: RwLock<BTreeMap<String, Verifier>>,
}

/// A new key, and where it was written (the admin key at first start).
pub struct Created {
    pub admin_key_file: Option<PathBuf>,
}

impl Users {
    /// Loads `users.json`; if there is none, creates the admin key, writes it to
    /// `admin.key` and stores its verifier.
    pub fn open(dir: &Path) -> Result<(Users, Created), StateError> {
        let path = dir.join(USERS_FILE);
        let users = match fs::read_to_string(&path) {
            Ok(text) => {
                let f: UsersFile =
                    serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
                        path: path.clone(),
                        why: e.to_string(),
                    })?;
                if f.format != USERS_FORMAT {
                    return Err(StateError::Format {
                        path,
                        found: f.format,
                    });
                }
                f.users
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let table = Users {
            dir: dir.to_path_buf(),
            users: RwLock::new(users),
        };
        let mut created = Created {
            admin_key_file: None,
        };
        if !table.read().contains_key(ADMIN) {
            let key = Key::generate();
            let line = key_line(ADMIN, &key);
            let key_path = dir.join(ADMIN_KEY_FILE);
            write_durably(dir, ADMIN_KEY_FILE, format!("{line}\n").as_bytes(), 0o600)?;
            let mut next = table.read().clone();
            next.insert(ADMIN.to_owned(), Verifier::new(&line_key(&line)));
            table.commit(next)?;
            created.admin_key_file = Some(key_path);
        }
        Ok((table, created))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Verifier>> {
        self.users.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The verifier a login as `user` is checked against.
    pub fn verifier(&self, user: &str) -> Option<Verifier> {
        self.read().get(user).cloned()
    }

    /// True while `user` still logs in with the verifier `v` (not removed, not rotated).
    pub fn still_valid(&self, user: &str, v: &Verifier) -> bool {
        self.read().get(user) == Some(v)
    }

    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// A new user with a new key; returns the key line to show once.
    pub fn add(&self, name: &str) -> Result<String, WireError> {
        check_name(name)?;
        if self.read().contains_key(name) {
            return Err(WireError::Refused(format!("user {name} exists already")));
        }
        self.set_new_key(name)
    }

    /// A new key for an existing user; the old one stops working at once.
    pub fn rotate(&self, name: &str) -> Result<String, WireError> {
        if name != ADMIN {
            check_name(name)?;
        }
        if !self.read().contains_key(name) {
            return Err(WireError::NotFound);
        }
        self.set_new_key(name)
    }

    /// Removes a user (their files stay); their key stops working at once.
    pub fn remove(&self, name: &str) -> Result<(), WireError> {
        check_name(name)?;
        let mut next = self.read().clone();
        if next.remove(name).is_none() {
            return Err(WireError::NotFound);
        }
        self.commit(next).map_err(|e| WireError::Io(e.to_string()))
    }

    fn set_new_key(&self, name: &str) -> Result<String, WireError> {
        let line = key_line(name, &Key::generate());
        let mut next = self.read().clone();
        next.insert(name.to_owned(), Verifier::new(&line_key(&line)));
        self.commit(next)
            .map_err(|e| WireError::Io(e.to_string()))?;
        Ok(line)
    }

    /// Writes the table (temp file, fsync, rename, fsync dir), then makes it current. Two
    /// admin changes at once are serialized by the write lock, taken for the whole step.
    fn commit(&self, next: BTreeMap<String, Verifier>) -> Result<(), StateError> {
        let mut cur = self.users.write().unwrap_or_else(|p| p.into_inner());
        let text = serde_json::to_vec_pretty(&UsersFile {
            format: USERS_FORMAT,
            users: next.clone(),
        })
        .expect("users serialize");
        write_durably(&self.dir, USERS_FILE, &text, 0o600)?;
        *cur = next;
        Ok(())
    }
}

/// `NAME:HEX`, the line `oss user add` prints and a key file holds.
fn key_line(name: &str, key: &Key) -> String {
    format!(
        "{name}:{}",
        String::from_utf8(key.as_text().to_vec()).expect("generated keys are hex")
    )
}

fn line_key(line: &str) -> Key {
    Key::from_text(line.as_bytes()).expect("a key line is long enough")
}

fn check_name(name: &str) -> Result<(), WireError> {
    validate_user(name).map_err(WireError::InvalidName)?;
    if name == ADMIN {
        return Err(WireError::Refused(format!(
            "the user name {ADMIN} is reserved"
        )));
    }
    if name == oss_proto::wire::CLUSTER_USER {
        return Err(WireError::Refused(format!(
            "the user name {name} is reserved"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oss_proto::wire::Credentials;
    use std::os::unix::fs::PermissionsExt;

    fn logs_in(users: &Users, line: &str) -> bool {
        let c = Credentials::from_key_line(line.as_bytes()).unwrap();
        let Some(v) = users.verifier(&c.user) else {
            return false;
        };
        let (cn, sn) = (oss_proto::auth::random(), oss_proto::auth::random());
        let msg = oss_proto::auth::AuthMessage::new(&c.user, &cn, &sn, &v.salt);
        v.check_proof(&msg, &oss_proto::auth::client_proof(&c.key, &v.salt, &msg))
    }

    #[test]
    fn first_start_writes_the_admin_key_and_keeps_only_verifiers() {
        let dir = tempfile::tempdir().unwrap();
        let (u, created) = Users::open(dir.path()).unwrap();
        let key_file = created.admin_key_file.unwrap();
        let mode = fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let line = fs::read_to_string(&key_file).unwrap();
        assert!(line.starts_with("admin:") && line.ends_with('\n'));
        assert!(logs_in(&u, line.trim_end()));
        // The table on disk holds no key.
        let table = fs::read_to_string(dir.path().join(USERS_FILE)).unwrap();
        assert!(!table.contains(line.trim_end().strip_prefix("admin:").unwrap()));
        // A second start keeps the admin key.
        drop(u);
        let (u, created) = Users::open(dir.path()).unwrap();
        assert!(created.admin_key_file.is_none());
        assert!(logs_in(&u, line.trim_end()));
    }

    #[test]
    fn add_rotate_remove() {
        let dir = tempfile::tempdir().unwrap();
        let (u, _) = Users::open(dir.path()).unwrap();
        let k1 = u.add("alice").unwrap();
        assert!(logs_in(&u, &k1));
        assert!(matches!(u.add("alice"), Err(WireError::Refused(_))));
        assert!(matches!(u.add("admin"), Err(WireError::Refused(_))));
        assert!(matches!(u.add("a/b"), Err(WireError::InvalidName(_))));
        let v1 = u.verifier("alice").unwrap();
        let k2 = u.rotate("alice").unwrap();
        assert!(!logs_in(&u, &k1), "the old key stops working");
        assert!(!u.still_valid("alice", &v1));
        assert!(logs_in(&u, &k2));
        // Persisted: a restart sees the same table.
        let (u2, _) = Users::open(dir.path()).unwrap();
        assert!(logs_in(&u2, &k2));
        u.remove("alice").unwrap();
        assert!(!logs_in(&u, &k2));
        assert!(matches!(u.remove("alice"), Err(WireError::NotFound)));
        assert_eq!(u.names(), ["admin"]);
    }
}
