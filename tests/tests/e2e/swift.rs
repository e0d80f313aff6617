//! The Swift door (`oss-proxy --http`), with real processes and a plain HTTP client:
//! tempauth tokens and who they reach, Swift's status codes for containers and objects,
//! listings, ranges, conditional requests, metadata and copies, bad input that changes
//! nothing, and door objects being the same objects the native door and the healing paths
//! see. Third-party clients (swift, rclone) are in `swift_clients`.

use std::time::Duration;

use oss_tests::swift::{auth, raw, Swift};
use oss_tests::*;

use crate::util2::{assert_job_complete, wait_job_finished, wait_server_state};

/// A cluster whose proxy also serves the door, with quick failure detection.
pub fn door_cluster(n: usize) -> Cluster {
    Cluster::start_with(ClusterConfig {
        proxy_args: vec![
            "--http".into(),
            "127.0.0.1:0".into(),
            "--offline-after".into(),
            "1s".into(),
            "--check-interval".into(),
            "200ms".into(),
        ],
        ..ClusterConfig::new(n, 64)
    })
}

pub fn admin(c: &Cluster) -> Swift {
    Swift::login_with_key_file(c.proxy.http_addr(), &c.proxy.admin_key())
}

#[test]
fn swift_tokens_come_from_keys_and_reach_what_the_key_reaches() {
    let c = door_cluster(2);
    let door = c.proxy.http_addr();
    let line = std::fs::read_to_string(c.proxy.admin_key()).unwrap();
    let key = line.trim().rsplit_once(':').unwrap().1.to_owned();

    // Wrong key, unknown user, no headers: 401 with Swift's realm, and no token.
    for (u, k) in [("oss:admin", "0".repeat(64)), ("oss:nobody", key.clone())] {
        let a = auth(door, u, &k);
        assert_eq!(a.status, 401, "{u}");
        assert!(a.header("x-auth-token").is_none());
    }
    // The whole key line works too, and plain NAME.
    let a = auth(door, "admin", line.trim());
    assert_eq!(a.status, 200, "{}", a.text());
    let expires: u64 = a.header("x-auth-token-expires").unwrap().parse().unwrap();
    assert!(expires > 3600 && expires <= 86_400, "{expires}");
    assert_eq!(
        a.header("x-storage-url").unwrap(),
        format!("http://{door}/v1/AUTH_oss")
    );

    let s = admin(&c);
    assert_eq!(s.call("PUT", "/alice", &[]).status, 201);
    assert_eq!(s.call("PUT", "/bob", &[]).status, 201);
    assert_eq!(s.send("PUT", "/bob/secret", &[], b"bob's").status, 201);

    // A user's token reaches its own container only; the account is the owner's.
    let out = c.oss(&["user", "add", "alice"]);
    out.assert_ok("user add alice");
    let alice_line = out.stdout_str().trim().to_owned();
    let alice = Swift::login(door, "oss:alice", alice_line.rsplit_once(':').unwrap().1);
    assert_eq!(alice.send("PUT", "/alice/mine", &[], b"hers").status, 201);
    assert_eq!(alice.call("GET", "/alice/mine", &[]).body, b"hers");
    assert_eq!(alice.call("GET", "/bob/secret", &[]).status, 403);
    assert_eq!(alice.send("PUT", "/bob/x", &[], b"no").status, 403);
    assert_eq!(alice.call("DELETE", "/bob/secret", &[]).status, 403);
    assert_eq!(alice.call("GET", "/bob", &[]).status, 403);
    assert_eq!(alice.call("GET", "", &[]).status, 403);
    let copy_out = alice.call("COPY", "/alice/mine", &[("Destination", "bob/stolen")]);
    assert_eq!(copy_out.status, 403);
    assert_eq!(s.call("HEAD", "/bob/stolen", &[]).status, 404);
    assert_eq!(s.call("GET", "/bob/secret", &[]).body, b"bob's");

    // No token, a bogus token, another account: 401 with WWW-Authenticate.
    let no = raw(door, "GET", "/v1/AUTH_oss/alice", &[]);
    assert_eq!(no.status, 401);
    assert_eq!(
        no.header("www-authenticate"),
        Some("Swift realm=\"AUTH_oss\"")
    );
    let bogus = raw(
        door,
        "GET",
        "/v1/AUTH_oss/alice",
        &[("X-Auth-Token", "AUTH_tk0123")],
    );
    assert_eq!(bogus.status, 401);
    assert_eq!(raw(door, "GET", "/v1/AUTH_other", &[]).status, 401);

    // A rotated key ends the user's tokens at once.
    c.oss(&["user", "rotate", "alice"]).assert_ok("rotate");
    assert_eq!(alice.call("GET", "/alice/mine", &[]).status, 401);

    // /info and /healthcheck need no token.
    let info = raw(door, "GET", "/info", &[]);
    assert_eq!(info.status, 200);
    assert_eq!(info.json()["swift"]["max_meta_count"], 90);
    assert_eq!(raw(door, "GET", "/healthcheck", &[]).body, b"OK");
}

#[test]
fn swift_objects_containers_and_listings_answer_as_swift() {
    let c = door_cluster(3);
    let s = admin(&c);

    // Containers: 201 then 202; an object in a missing container is 404.
    assert_eq!(s.send("PUT", "/nope/x", &[], b"x").status, 404);
    assert_eq!(
        s.call("PUT", "/photos", &[("X-Container-Meta-Owner", "me")])
            .status,
        201
    );
    assert_eq!(s.call("PUT", "/photos", &[]).status, 202);
    let h = s.call("HEAD", "/photos", &[]);
    assert_eq!(h.status, 204);
    assert_eq!(h.header("x-container-meta-owner"), Some("me"));
    assert_eq!(h.header("x-container-object-count"), Some("0"));
    // An empty plain listing is 204, JSON is [].
    assert_eq!(s.call("GET", "/photos", &[]).status, 204);
    assert_eq!(s.call("GET", "/photos?format=json", &[]).body, b"[]");

    // PUT with a wrong ETag: 422 and nothing stored.
    let body = b"the quick brown fox jumps over the lazy dog".to_vec();
    let bad = s.send(
        "PUT",
        "/photos/a/fox.txt",
        &[("ETag", &md5_hex(b"something else"))],
        &body,
    );
    assert_eq!(bad.status, 422, "{}", bad.text());
    assert_eq!(s.call("HEAD", "/photos/a/fox.txt", &[]).status, 404);
    assert!(c.find_replicas("photos/a/fox.txt").is_empty());

    // PUT with the right ETag, metadata and a content type.
    let put = s.send(
        "PUT",
        "/photos/a/fox.txt",
        &[
            ("ETag", &md5_hex(&body)),
            ("Content-Type", "text/x-fox"),
            ("X-Object-Meta-Color", "Brown"),
        ],
        &body,
    );
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(put.header("etag"), Some(md5_hex(&body).as_str()));
    let g = s.call("GET", "/photos/a/fox.txt", &[]);
    assert_eq!(g.status, 200);
    assert_eq!(g.body, body);
    assert_eq!(g.header("content-type"), Some("text/x-fox"));
    assert_eq!(g.header("x-object-meta-color"), Some("Brown"));
    assert_eq!(g.header("etag"), Some(md5_hex(&body).as_str()));
    assert!(g.header("x-timestamp").is_some() && g.header("last-modified").is_some());
    let head = s.call("HEAD", "/photos/a/fox.txt", &[]);
    assert_eq!(
        head.header("content-length"),
        Some(body.len().to_string().as_str())
    );
    assert!(head.body.is_empty());
    // The native door sees the same object.
    assert_eq!(c.download_bytes("photos/a/fox.txt").unwrap(), body);

    // Ranges: single, suffix, open, multiple, unsatisfiable, malformed (ignored).
    let r = |range: &str| s.call("GET", "/photos/a/fox.txt", &[("Range", range)]);
    let one = r("bytes=4-8");
    assert_eq!((one.status, one.body.as_slice()), (206, &b"quick"[..]));
    assert_eq!(one.header("content-range"), Some("bytes 4-8/43"));
    assert_eq!(r("bytes=-3").body, b"dog");
    assert_eq!(r("bytes=40-").body, b"dog");
    let multi = r("bytes=0-2,4-8");
    assert_eq!(multi.status, 206);
    assert!(multi
        .header("content-type")
        .unwrap()
        .starts_with("multipart/byteranges"));
    let text = multi.text();
    assert!(
        text.contains("Content-Range: bytes 0-2/43\r\n\r\nthe\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Content-Range: bytes 4-8/43\r\n\r\nquick\r\n"),
        "{text}"
    );
    let none = r("bytes=100-");
    assert_eq!(none.status, 416);
    assert_eq!(none.header("content-range"), Some("bytes */43"));
    assert_eq!(r("parsecs=1-2").status, 200);

    // Conditional requests.
    let etag = md5_hex(&body);
    let lm = g.header("last-modified").unwrap().to_owned();
    let cond = |h: (&str, &str)| s.call("GET", "/photos/a/fox.txt", &[h]).status;
    assert_eq!(cond(("If-None-Match", &etag)), 304);
    assert_eq!(cond(("If-None-Match", "other")), 200);
    assert_eq!(cond(("If-Match", "other")), 412);
    assert_eq!(cond(("If-Match", &format!("\"{etag}\""))), 200);
    assert_eq!(cond(("If-Modified-Since", &lm)), 304);
    assert_eq!(
        cond(("If-Unmodified-Since", "Thu, 01 Jan 1970 00:00:00 GMT")),
        412
    );

    // POST replaces the metadata and keeps the bytes.
    let p = s.call(
        "POST",
        "/photos/a/fox.txt",
        &[("X-Object-Meta-Size", "small")],
    );
    assert_eq!(p.status, 202);
    let g2 = s.call("GET", "/photos/a/fox.txt", &[]);
    assert_eq!(g2.body, body);
    assert_eq!(g2.header("x-object-meta-size"), Some("small"));
    assert_eq!(g2.header("x-object-meta-color"), None);
    assert_eq!(g2.header("content-type"), Some("text/x-fox"));
    assert_eq!(s.call("POST", "/photos/missing", &[]).status, 404);

    // COPY and X-Copy-From: server-side, metadata carried and added to.
    let cp = s.call(
        "COPY",
        "/photos/a/fox.txt",
        &[
            ("Destination", "photos/b/fox2.txt"),
            ("X-Object-Meta-Copy", "1"),
        ],
    );
    assert_eq!(cp.status, 201, "{}", cp.text());
    let g3 = s.call("GET", "/photos/b/fox2.txt", &[]);
    assert_eq!(g3.body, body);
    assert_eq!(g3.header("x-object-meta-size"), Some("small"));
    assert_eq!(g3.header("x-object-meta-copy"), Some("1"));
    let cf = s.send(
        "PUT",
        "/photos/c.txt",
        &[("X-Copy-From", "/photos/a/fox.txt")],
        b"",
    );
    assert_eq!(cf.status, 201, "{}", cf.text());
    assert_eq!(s.call("GET", "/photos/c.txt", &[]).body, body);
    // A ranged copy takes those bytes only (and their own MD5).
    let rc = s.call(
        "COPY",
        "/photos/a/fox.txt",
        &[("Destination", "photos/quick"), ("Range", "bytes=4-8")],
    );
    assert_eq!(rc.status, 201, "{}", rc.text());
    assert_eq!(rc.header("etag"), Some(md5_hex(b"quick").as_str()));
    assert_eq!(s.call("GET", "/photos/quick", &[]).body, b"quick");
    assert_eq!(s.call("DELETE", "/photos/quick", &[]).status, 204);
    assert_eq!(
        s.call("COPY", "/photos/missing", &[("Destination", "photos/x")])
            .status,
        404
    );
    assert_eq!(
        s.call("COPY", "/photos/c.txt", &[("Destination", "nodest")])
            .status,
        412
    );

    // A chunked upload (no Content-Length).
    let big: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    let ch = s.send_chunked("/photos/chunked.bin", &[], big.clone());
    assert_eq!(ch.status, 201, "{}", ch.text());
    assert_eq!(ch.header("etag"), Some(md5_hex(&big).as_str()));
    assert_eq!(s.call("GET", "/photos/chunked.bin", &[]).body, big);
    assert_eq!(
        s.call("GET", "/photos/chunked.bin", &[])
            .header("content-type"),
        Some("application/octet-stream")
    );

    // Listings: pages by marker join up exactly; prefix, delimiter, end_marker, reverse.
    for i in 0..7 {
        assert_eq!(
            s.send("PUT", &format!("/photos/p/{i}.jpg"), &[], b"x")
                .status,
            201
        );
    }
    let mut seen = Vec::new();
    let mut marker = String::new();
    loop {
        let page = s.call(
            "GET",
            &format!("/photos?format=json&limit=3&marker={marker}"),
            &[],
        );
        let items = page.json();
        let items = items.as_array().unwrap();
        if items.is_empty() {
            break;
        }
        assert!(items.len() <= 3);
        for i in items {
            seen.push(i["name"].as_str().unwrap().to_owned());
        }
        marker = seen.last().unwrap().replace('/', "%2F");
    }
    let mut want = vec![
        "a/fox.txt".to_string(),
        "b/fox2.txt".into(),
        "c.txt".into(),
        "chunked.bin".into(),
    ];
    want.extend((0..7).map(|i| format!("p/{i}.jpg")));
    assert_eq!(seen, want);
    let top = s.call("GET", "/photos?delimiter=/", &[]);
    assert_eq!(top.text(), "a/\nb/\nc.txt\nchunked.bin\np/\n");
    let sub = s.call(
        "GET",
        "/photos?format=json&delimiter=/&prefix=p/&limit=2",
        &[],
    );
    assert_eq!(sub.json()[1]["name"], "p/1.jpg");
    let rev = s.call("GET", "/photos?prefix=p/&reverse=true&limit=2", &[]);
    assert_eq!(rev.text(), "p/6.jpg\np/5.jpg\n");
    let end = s.call("GET", "/photos?prefix=p/&end_marker=p/2.jpg", &[]);
    assert_eq!(end.text(), "p/0.jpg\np/1.jpg\n");
    let xml = s.call("GET", "/photos?format=xml&prefix=c.", &[]);
    assert!(xml.text().contains("<name>c.txt</name>"), "{}", xml.text());
    assert_eq!(s.call("GET", "/photos?limit=10001", &[]).status, 412);
    let hc = s.call("HEAD", "/photos", &[]);
    assert_eq!(hc.header("x-container-object-count"), Some("11"));

    // The account lists its containers.
    let acct = s.call("GET", "?format=json", &[]);
    assert_eq!(acct.status, 200);
    let names: Vec<String> = acct
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["photos"]);

    // X-Delete-After: readable until then, absent through both doors after.
    let exp = s.send(
        "PUT",
        "/photos/expiring",
        &[("X-Delete-After", "1"), ("Content-Disposition", "inline")],
        b"soon gone",
    );
    assert_eq!(exp.status, 201, "{}", exp.text());
    let h = s.call("HEAD", "/photos/expiring", &[]);
    assert!(h.header("x-delete-at").is_some(), "{:?}", h.headers);
    assert_eq!(h.header("content-disposition"), Some("inline"));
    wait_until(Duration::from_secs(10), "the object to expire", || {
        s.call("GET", "/photos/expiring", &[]).status == 404
    });
    c.assert_not_found("photos/expiring");
    assert_eq!(
        s.send("PUT", "/photos/past", &[("X-Delete-At", "1000")], b"x")
            .status,
        400
    );
    assert_eq!(s.call("DELETE", "/photos/expiring", &[]).status, 404);

    // Deletes: 204, then 404; a container with objects is 409, empty 204, then 404.
    assert_eq!(s.call("DELETE", "/photos/c.txt", &[]).status, 204);
    assert_eq!(s.call("DELETE", "/photos/c.txt", &[]).status, 404);
    assert_eq!(s.call("GET", "/photos/c.txt", &[]).status, 404);
    assert_eq!(s.call("DELETE", "/photos", &[]).status, 409);
    assert_eq!(s.call("PUT", "/empty", &[]).status, 201);
    assert_eq!(s.call("DELETE", "/empty", &[]).status, 204);
    assert_eq!(s.call("DELETE", "/empty", &[]).status, 404);
    assert_eq!(s.call("HEAD", "/empty", &[]).status, 404);
}

#[test]
fn swift_bad_input_gets_swift_statuses_and_changes_nothing() {
    let c = door_cluster(2);
    let door = c.proxy.http_addr();
    let s = admin(&c);
    assert_eq!(s.call("PUT", "/box", &[]).status, 201);
    let t = s.token.clone();
    let auth_h = [("X-Auth-Token", t.as_str())];
    // Not UTF-8, NUL, version only.
    let bad = raw(door, "PUT", "/v1/AUTH_oss/box/%ff%fe", &auth_h);
    assert_eq!(bad.status, 412);
    assert_eq!(bad.text(), "Invalid UTF8 or contains NULL");
    assert_eq!(
        raw(door, "PUT", "/v1/AUTH_oss/box/a%00b", &auth_h).status,
        412
    );
    let v = raw(door, "PUT", "/v1", &auth_h);
    assert_eq!((v.status, v.text().as_str()), (412, "Bad URL"));
    // No length: 411; an unknown method: 405; a name too long: 400; names the store
    // refuses: 400.
    assert_eq!(raw(door, "PUT", "/v1/AUTH_oss/box/x", &auth_h).status, 411);
    assert_eq!(s.call("LICK", "/box", &[]).status, 405);
    let long = "a".repeat(1025);
    assert_eq!(
        s.send("PUT", &format!("/box/{long}"), &[], b"x").status,
        400
    );
    assert_eq!(s.send("PUT", "/box/a//b", &[], b"x").status, 400);
    // Metadata over Swift's limits: 400 and nothing stored.
    let big = "v".repeat(257);
    assert_eq!(
        s.send("PUT", "/box/m", &[("X-Object-Meta-Big", &big)], b"x")
            .status,
        400
    );
    let many: Vec<(String, String)> = (0..91)
        .map(|i| (format!("X-Object-Meta-K{i}"), "v".into()))
        .collect();
    let many_ref: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(s.send("PUT", "/box/m", &many_ref, b"x").status, 400);
    assert_eq!(s.call("HEAD", "/box/m", &[]).status, 404);
    // A size over the limit is refused before any byte is read.
    let over = raw(
        door,
        "PUT",
        "/v1/AUTH_oss/box/huge",
        &[("X-Auth-Token", &t), ("Content-Length", "5368709123")],
    );
    assert_eq!(over.status, 413);
    // Nothing was stored anywhere.
    for i in 0..c.storage.len() {
        assert!(c.object_files(i).is_empty(), "server {i} holds files");
    }
    // The door still answers well-formed requests.
    assert_eq!(s.send("PUT", "/box/ok", &[], b"fine").status, 201);
}

#[test]
fn swift_objects_and_their_metadata_survive_a_dead_server_and_a_corrupt_replica() {
    let mut c = door_cluster(3);
    let s = admin(&c);
    assert_eq!(s.call("PUT", "/keep", &[]).status, 201);
    let mut rng = XorShift::new(7);
    let mut objects = Vec::new();
    for i in 0..12 {
        let mut data = vec![0u8; 1000 + i * 20_000];
        rng.fill(&mut data);
        let name = format!("dir/obj{i}");
        let put = s.send(
            "PUT",
            &format!("/keep/{name}"),
            &[
                ("X-Object-Meta-Index", &i.to_string()),
                ("Content-Type", "application/x-test"),
            ],
            &data,
        );
        assert_eq!(put.status, 201);
        objects.push((name, data));
    }
    // Kill the server holding the most replicas; wait for the refill.
    let victim = (0..3)
        .max_by_key(|&v| {
            objects
                .iter()
                .filter(|(n, _)| {
                    c.find_replicas(&format!("keep/{n}"))
                        .iter()
                        .any(|(s, _)| *s == v)
                })
                .count()
        })
        .unwrap();
    let addr = c.storage[victim].addr().to_string();
    c.storage[victim].kill();
    wait_server_state(&c, &addr, &[Some("Offline"), None], Duration::from_secs(30));
    let job = wait_job_finished(&c, &format!("refill after {addr}"), Duration::from_secs(60));
    assert_job_complete(&job, "refill");
    // A new server joins: the rebalance moves objects with their metadata.
    let added = c.start_storage();
    let added_addr = c.storage[added].addr().to_string();
    c.oss_timeout(
        &["add-disk", &added_addr, "--wait"],
        Duration::from_secs(120),
    )
    .assert_ok("add-disk --wait");
    assert!(
        objects.iter().any(|(n, _)| c
            .find_replicas(&format!("keep/{n}"))
            .iter()
            .any(|(s, _)| *s == added)),
        "the new server took none of the objects"
    );
    // Corrupt one surviving replica of the first object.
    let (n0, d0) = &objects[0];
    let reps = c.find_replicas(&format!("keep/{n0}"));
    assert_eq!(reps.len(), 2, "{reps:?}");
    let mut bytes = std::fs::read(&reps[0].1).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&reps[0].1, &bytes).unwrap();
    assert_eq!(&s.call("GET", &format!("/keep/{n0}"), &[]).body, d0);
    for (i, (n, d)) in objects.iter().enumerate() {
        let g = s.call("GET", &format!("/keep/{n}"), &[]);
        assert_eq!(g.status, 200, "{n}");
        assert_eq!(&g.body, d, "{n}");
        assert_eq!(
            g.header("x-object-meta-index"),
            Some(i.to_string().as_str())
        );
        assert_eq!(g.header("content-type"), Some("application/x-test"));
        let live = c
            .find_replicas(&format!("keep/{n}"))
            .into_iter()
            .filter(|(s, _)| *s != victim)
            .count();
        assert_eq!(live, 2, "{n}: replicas on live servers");
    }
}
