//! Keys and the cluster secret (issue 9), with real processes: per-user keys reach only
//! their own files, the admin key reaches everything, a removed or rotated key stops at
//! once, storage servers serve only the proxy, and daemons refuse a missing or exposed
//! secret.

use std::path::{Path, PathBuf};

use oss_tests::*;

/// Runs `oss --key-file KEY ARGS...` against the cluster.
fn as_key(c: &Cluster, key: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--key-file", path_str(key)];
    all.extend_from_slice(args);
    c.oss(&all)
}

/// `oss user add NAME` as the admin; the printed key written to a 0600 file.
fn add_user(c: &Cluster, name: &str) -> PathBuf {
    let out = c.oss(&["user", "add", name]);
    out.assert_ok("user add");
    let line = out.stdout_str();
    assert_eq!(line.lines().count(), 1, "one line: {line:?}");
    assert!(line.starts_with(&format!("{name}:")), "{line:?}");
    let path = c.work().join(format!("{name}.key"));
    write_private(&path, line.as_bytes());
    path
}

fn denied(out: &std::process::Output, what: &str) {
    let line = out.assert_fails_one_line(what);
    assert!(line.contains("permission denied"), "{what}: {line}");
}

#[test]
fn keys_users_reach_only_their_own_files() {
    let c = Cluster::start(2, 16);
    let alice = add_user(&c, "alice");
    let bob = add_user(&c, "bob");
    let src = c.work().join("src");
    std::fs::write(&src, b"alice's data").unwrap();
    as_key(&c, &alice, &["upload", "alice/docs/a.txt", path_str(&src)]).assert_ok("own upload");
    let out = as_key(&c, &alice, &["download", "alice/docs/a.txt", "-"]);
    out.assert_ok("own download");
    assert_eq!(out.stdout, b"alice's data");
    as_key(&c, &alice, &["list", "alice", "-r"]).assert_ok("own list");
    as_key(&c, &alice, &["copy", "alice/docs/a.txt", "alice/b.txt"]).assert_ok("own copy");

    // Bob can do none of it to alice's files, and nothing changes.
    let dst = c.work().join("stolen");
    denied(
        &as_key(&c, &bob, &["download", "alice/docs/a.txt", path_str(&dst)]),
        "read",
    );
    assert!(!dst.exists());
    denied(&as_key(&c, &bob, &["list", "alice"]), "list");
    denied(
        &as_key(&c, &bob, &["list", "alice/docs/"]),
        "list a directory",
    );
    denied(
        &as_key(&c, &bob, &["upload", "alice/docs/a.txt", path_str(&src)]),
        "overwrite",
    );
    denied(&as_key(&c, &bob, &["delete", "alice/docs/a.txt"]), "delete");
    denied(
        &as_key(&c, &bob, &["copy", "alice/docs/a.txt", "bob/x"]),
        "copy out",
    );
    denied(
        &as_key(&c, &bob, &["move", "alice/b.txt", "bob/y"]),
        "move out",
    );
    c.assert_content("alice/docs/a.txt", b"alice's data");
    c.assert_content("alice/b.txt", b"alice's data");
    c.assert_not_found("bob/x");
    // A user's key is not an admin's.
    for args in [
        vec!["status"],
        vec!["repair"],
        vec!["audit"],
        vec!["check", "alice/b.txt"],
        vec!["add-disk", "127.0.0.1:9"],
        vec!["remove-disk", "127.0.0.1:9"],
        vec!["user", "list"],
        vec!["user", "add", "eve"],
    ] {
        denied(&as_key(&c, &alice, &args), &format!("{args:?}"));
    }
    let users = c.oss(&["user", "list"]);
    users.assert_ok("user list");
    assert_eq!(users.stdout_str(), "admin\nalice\nbob\n");
}

#[test]
fn keys_removed_or_rotated_keys_stop_working_at_once() {
    let c = Cluster::start(2, 16);
    let alice = add_user(&c, "alice");
    c.upload_bytes("alice/f", b"kept");
    as_key(&c, &alice, &["list", "alice"]).assert_ok("before the rotation");
    let out = c.oss(&["user", "rotate", "alice"]);
    out.assert_ok("rotate");
    let new = c.work().join("alice-new.key");
    write_private(&new, out.stdout_str().as_bytes());
    let line = as_key(&c, &alice, &["list", "alice"]).assert_fails_one_line("the old key");
    assert!(line.contains("authentication failed"), "{line}");
    as_key(&c, &new, &["download", "alice/f", "-"]).assert_ok("the new key");
    c.oss(&["user", "remove", "alice"]).assert_ok("remove");
    as_key(&c, &new, &["list", "alice"]).assert_fails_one_line("a removed user's key");
    // Their files stay.
    c.assert_content("alice/f", b"kept");
    // The reserved name, and unknown users.
    c.oss(&["user", "add", "admin"])
        .assert_fails_one_line("admin is reserved");
    c.oss(&["user", "remove", "nobody"])
        .assert_fails_one_line("unknown user");
    c.oss(&["user", "add", "a/b"])
        .assert_fails_one_line("a bad name");
}

#[test]
fn keys_the_first_start_writes_a_private_admin_key() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::start(2, 16);
    let key = c.proxy.admin_key();
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", key.display());
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(text.starts_with("admin:") && text.ends_with('\n') && text.lines().count() == 1);
    // The rest of the state directory holds no key.
    for f in files_under(c.proxy.state_dir()) {
        if f != key {
            let body = std::fs::read(&f).unwrap();
            let secret = text.trim_end().split(':').nth(1).unwrap().as_bytes();
            assert!(
                !body.windows(secret.len()).any(|w| w == secret),
                "{} holds the admin key",
                f.display()
            );
        }
    }
}

#[test]
fn keys_a_client_that_dials_a_storage_server_is_refused() {
    let c = Cluster::start(2, 16);
    c.upload_bytes("u/f", b"data");
    let storage = c.storage[0].addr().to_string();
    let admin = c.proxy.admin_key();
    for args in [vec!["delete", "u/f"], vec!["list", "u"], vec!["status"]] {
        let mut all = vec!["--proxy", storage.as_str(), "--key-file", path_str(&admin)];
        all.extend(&args);
        let out = oss_at(&storage, &all, None, OSS_TIMEOUT);
        out.assert_fails_one_line(&format!("{args:?} straight to a storage server"));
    }
    c.assert_content("u/f", b"data");
    assert_eq!(c.find_replicas("u/f").len(), 2);
}

#[test]
fn keys_a_storage_server_with_another_secret_is_refused() {
    let mut c = Cluster::start(2, 16);
    let other = c.work().join("other-secret");
    write_private(&other, format!("{}\n", "9".repeat(64)).as_bytes());
    let data = c.root().join("stranger");
    std::fs::create_dir(&data).unwrap();
    let stranger = Storaged::try_start_with_secret(&data, &other).expect("starts");
    let addr = stranger.addr().to_string();
    let line = c
        .oss(&["add-disk", &addr])
        .assert_fails_one_line("add-disk of a stranger");
    assert!(line.contains("secret mismatch"), "{line}");
    let st = c.status_json();
    assert!(
        !st.to_string().contains(&addr),
        "the stranger got into the ring: {st}"
    );
    // At start: a proxy whose ring names a server with another secret does not use it.
    let state = c.root().join("proxy2");
    std::fs::create_dir(&state).unwrap();
    let good = c.storage[0].addr().to_string();
    let p = Proxy::start(
        &state,
        &[
            "--partitions",
            "16",
            "--replicas",
            "1",
            "--disk",
            &good,
            "--disk",
            &addr,
        ],
    );
    let paddr = p.addr().to_string();
    let status = || {
        let out = oss_at(&paddr, &["status", "--json"], None, OSS_TIMEOUT);
        out.assert_ok("status of the second proxy");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["servers"].as_array().unwrap().clone()
    };
    let server =
        |all: &[serde_json::Value], a: &str| all.iter().find(|s| s["addr"] == a).cloned().unwrap();
    // Once the good server has answered a disk check, the stranger has not: it is never
    // online, and nothing is written to it.
    wait_until(
        std::time::Duration::from_secs(20),
        "a disk check of the good server",
        || !server(&status(), &good)["stats"].is_null(),
    );
    for i in 0..12 {
        let name = format!("u/f{i}");
        let out = oss_at(
            &paddr,
            &["upload", &name, "-"],
            Some(b"x".to_vec()),
            OSS_TIMEOUT,
        );
        out.assert_ok("upload with a stranger in the ring");
    }
    let all = status();
    let s = server(&all, &addr);
    assert!(
        s["stats"].is_null(),
        "the stranger answered a disk check: {s}"
    );
    assert_ne!(s["state"], "Online", "{s}");
    assert!(
        object_files(&data).is_empty(),
        "the proxy wrote to a server that does not share its secret"
    );
    c.storage.push(stranger);
}

#[test]
fn keys_daemons_refuse_a_missing_or_exposed_secret() {
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("d");
    let state = work.path().join("p");
    let exposed = work.path().join("exposed");
    std::fs::write(&exposed, "7".repeat(64)).unwrap();
    std::fs::set_permissions(&exposed, std::fs::Permissions::from_mode(0o644)).unwrap();
    let short = work.path().join("short");
    write_private(&short, b"tooshort\n");
    for (what, extra) in [
        ("no secret file", vec![]),
        (
            "a world-readable one",
            vec!["--secret-file", path_str(&exposed)],
        ),
        ("a short one", vec!["--secret-file", path_str(&short)]),
    ] {
        for (bin_name, mut args) in [
            (
                "oss-storaged",
                vec!["--listen", "127.0.0.1:0", "--data", path_str(&data)],
            ),
            (
                "oss-proxy",
                vec![
                    "--listen",
                    "127.0.0.1:0",
                    "--state",
                    path_str(&state),
                    "--disk",
                    "127.0.0.1:9",
                ],
            ),
        ] {
            args.extend(&extra);
            let mut cmd = std::process::Command::new(bin(bin_name));
            cmd.args(&args);
            let out = run(cmd, None, std::time::Duration::from_secs(30));
            let line = out.assert_fails_one_line(&format!("{bin_name} with {what}"));
            assert!(line.contains("secret"), "{bin_name} with {what}: {line}");
        }
    }
    assert!(
        !state.join("admin.key").exists(),
        "a refused proxy wrote no key"
    );
}

/// On the mount, a user's key sees only its own directory; other users' paths are EACCES;
/// a rotated key stops working on the mounted (already connected) ossfs at once.
#[test]
fn keys_a_users_mount_sees_only_its_own_directory() {
    use crate::fuse::{errno_of, fuse_available, Mount};
    if !fuse_available("keys_mount") {
        return;
    }
    let c = Cluster::start(2, 16);
    let alice = add_user(&c, "alice");
    c.upload_bytes("bob/secret.txt", b"bob's");
    c.upload_bytes("alice/mine.txt", b"alice's");
    let m = Mount::start_with_key(&c, "keys_mount", &alice);
    let top: Vec<String> = std::fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(top, ["alice"], "a user's key lists only its own directory");
    assert_eq!(
        std::fs::read(m.mnt.join("alice/mine.txt")).unwrap(),
        b"alice's"
    );
    for p in ["bob", "bob/secret.txt"] {
        let e = std::fs::metadata(m.mnt.join(p)).unwrap_err();
        assert_eq!(errno_of(&e), libc::EACCES, "{p}: {e}");
    }
    let e = std::fs::write(m.mnt.join("bob/new.txt"), b"x").unwrap_err();
    assert_eq!(errno_of(&e), libc::EACCES, "write into bob: {e}");
    let e = std::fs::create_dir(m.mnt.join("carol")).unwrap_err();
    assert_eq!(errno_of(&e), libc::EACCES, "mkdir carol: {e}");
    std::fs::write(m.mnt.join("alice/new.txt"), b"ok").unwrap();
    c.assert_content("alice/new.txt", b"ok");
    c.assert_content("bob/secret.txt", b"bob's");
    c.assert_not_found("bob/new.txt");

    // Rotating the key cuts the mount off at once, although its connections are open.
    c.oss(&["user", "rotate", "alice"]).assert_ok("rotate");
    std::thread::sleep(std::time::Duration::from_millis(1200)); // past the listing cache
    let e = std::fs::read(m.mnt.join("alice/new.txt")).unwrap_err();
    assert_eq!(errno_of(&e), libc::EACCES, "read after the rotation: {e}");
}

/// `oss` finds its key in `--key-file`, else `$OSS_KEY_FILE`, else
/// `$XDG_CONFIG_HOME/oss/key`, else `~/.config/oss/key`.
#[test]
fn keys_the_key_file_is_found_where_the_contract_says() {
    let c = Cluster::start(2, 16);
    let alice = add_user(&c, "alice");
    let bob = add_user(&c, "bob");
    c.upload_bytes("alice/f", b"a");
    let home = c.work().join("home");
    let xdg = c.work().join("xdg");
    for d in [home.join(".config/oss"), xdg.join("oss")] {
        std::fs::create_dir_all(&d).unwrap();
    }
    // `oss list alice` with exactly these variables set (and nothing else of ours).
    let list = |env: &[(&str, &Path)], flag: Option<&Path>| {
        let mut cmd = std::process::Command::new(bin("oss"));
        cmd.env_remove("OSS_KEY_FILE")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("OSS_PROXY")
            .env("HOME", "/nonexistent")
            .arg("--proxy")
            .arg(c.proxy_addr());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(f) = flag {
            cmd.arg("--key-file").arg(f);
        }
        cmd.args(["list", "alice"]);
        run(cmd, None, OSS_TIMEOUT)
    };
    let is_alice = |out: &std::process::Output| out.status.success();
    let copy = |from: &Path, to: &Path| write_private(to, &std::fs::read(from).unwrap());
    copy(&bob, &home.join(".config/oss/key"));
    assert!(
        !is_alice(&list(&[("HOME", &home)], None)),
        "~/.config/oss/key is bob's"
    );
    copy(&alice, &xdg.join("oss/key"));
    assert!(
        is_alice(&list(&[("HOME", &home), ("XDG_CONFIG_HOME", &xdg)], None)),
        "$XDG_CONFIG_HOME/oss/key beats ~/.config"
    );
    assert!(
        !is_alice(&list(
            &[
                ("HOME", &home),
                ("XDG_CONFIG_HOME", &xdg),
                ("OSS_KEY_FILE", &bob)
            ],
            None
        )),
        "$OSS_KEY_FILE beats $XDG_CONFIG_HOME"
    );
    assert!(
        is_alice(&list(&[("OSS_KEY_FILE", &bob)], Some(&alice))),
        "--key-file beats $OSS_KEY_FILE"
    );
    let none = list(&[], None);
    let line = none.assert_fails_one_line("no key anywhere");
    assert!(line.contains("no key"), "{line}");
}
