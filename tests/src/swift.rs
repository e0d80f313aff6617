//! A small blocking HTTP client for the Swift door's end-to-end tests: every answer, error
//! statuses included, as (status, headers, body).

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

/// One answer of the door.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// Lower-case header names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A logged-in client: the storage URL and token `GET /auth/v1.0` gave.
pub struct Swift {
    pub url: String,
    pub token: String,
    agent: ureq::Agent,
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .redirects(0)
        .build()
}

fn answer(r: Result<ureq::Response, ureq::Error>) -> Answer {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("HTTP request failed: {e}"),
    };
    let status = resp.status();
    let mut headers = BTreeMap::new();
    for n in resp.headers_names() {
        if let Some(v) = resp.header(&n) {
            headers.insert(n.to_ascii_lowercase(), v.to_owned());
        }
    }
    let mut body = Vec::new();
    resp.into_reader()
        .read_to_end(&mut body)
        .expect("read the body");
    Answer {
        status,
        headers,
        body,
    }
}

/// `GET /auth/v1.0` with these credentials.
pub fn auth(door: SocketAddr, user: &str, key: &str) -> Answer {
    answer(
        agent()
            .get(&format!("http://{door}/auth/v1.0"))
            .set("X-Auth-User", user)
            .set("X-Auth-Key", key)
            .call(),
    )
}

/// An unauthenticated request to the door (`path` from `/`).
pub fn raw(door: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut r = agent().request(method, &format!("http://{door}{path}"));
    for (k, v) in headers {
        r = r.set(k, v);
    }
    answer(r.call())
}

impl Swift {
    /// Logs in as `user` (e.g. `oss:admin`) with the key text after `NAME:` in a key file.
    pub fn login(door: SocketAddr, user: &str, key: &str) -> Swift {
        let a = auth(door, user, key);
        assert_eq!(a.status, 200, "login as {user}: {}", a.text());
        Swift {
            url: a.header("x-storage-url").expect("a storage URL").to_owned(),
            token: a.header("x-auth-token").expect("a token").to_owned(),
            agent: agent(),
        }
    }

    /// Logs in with a key file's line `NAME:HEX`.
    pub fn login_with_key_file(door: SocketAddr, key_file: &std::path::Path) -> Swift {
        let line = std::fs::read_to_string(key_file).expect("read the key file");
        let (name, key) = line.trim().rsplit_once(':').expect("a key line");
        Swift::login(door, &format!("oss:{name}"), key)
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> ureq::Request {
        let mut r = self
            .agent
            .request(method, &format!("{}{path}", self.url))
            .set("X-Auth-Token", &self.token);
        for (k, v) in headers {
            r = r.set(k, v);
        }
        r
    }

    /// `METHOD URL/PATH` (path from the account: `""`, `/c`, `/c/o?x=y`), no body.
    pub fn call(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        answer(self.request(method, path, headers).call())
    }

    /// With a body of known length.
    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        answer(self.request(method, path, headers).send_bytes(body))
    }

    /// With a body sent chunked (no Content-Length).
    pub fn send_chunked(&self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
        answer(
            self.request("PUT", path, headers)
                .send(std::io::Cursor::new(body)),
        )
    }
}
