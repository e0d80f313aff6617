//! Cluster administration: `add-disk`, `remove-disk`, `status`, `repair`, `audit`, `user`,
//! and the `--wait` loop they share.

use std::io::Write;
use std::time::Duration;

use anyhow::Result;

use oss_proto::wire::{now_micros, ClusterStatus, Progress};

use crate::args::{validate_addr, UserCmd};
use crate::error::CliError;
use crate::fmt::{self, Align};
use crate::io::{emit, stderr_is_tty};
use crate::Ctx;

/// `oss user add|list|remove|rotate`. A new key is printed once, alone on its line, so that
/// `oss user add bob > bob.key` makes a key file.
pub async fn user(ctx: &Ctx, cmd: &UserCmd) -> Result<()> {
    let check = |name: &str| {
        oss_proto::name::validate_user(name).map_err(|e| crate::error::invalid_name(&e))
    };
    match cmd {
        UserCmd::Add { name } => {
            check(name)?;
            let key = ctx
                .client
                .user_add(name)
                .await
                .map_err(|e| ctx.fail(&e, name))?;
            emit(&format!("{key}\n"))
        }
        UserCmd::Rotate { name } => {
            check(name)?;
            let key = ctx
                .client
                .user_rotate(name)
                .await
                .map_err(|e| ctx.fail(&e, name))?;
            emit(&format!("{key}\n"))
        }
        UserCmd::Remove { name } => {
            check(name)?;
            ctx.client
                .user_remove(name)
                .await
                .map_err(|e| ctx.fail(&e, name))?;
            Ok(())
        }
        UserCmd::List => {
            let names = ctx.client.user_list().await.map_err(|e| ctx.fail(&e, ""))?;
            let mut out = String::new();
            for n in names {
                out.push_str(&n);
                out.push('\n');
            }
            emit(&out)
        }
    }
}

/// How often `--wait` asks the proxy: quick enough to feel live, rare enough to be free.
const POLL: Duration = Duration::from_millis(200);

/// Which ring change `add-disk` / `remove-disk` asks for.
#[derive(Debug, Clone, Copy)]
pub enum DiskChange {
    Add,
    Remove,
}

/// `oss add-disk` and `oss remove-disk`: the proxy plans the moves and answers at once;
/// `--wait` follows the jobs until they end.
pub async fn change_disk(ctx: &Ctx, change: DiskChange, addr: &str, wait: bool) -> Result<()> {
    validate_addr(addr).map_err(CliError::new)?;
    let t0 = now_micros();
    let asked = match change {
        DiskChange::Add => ctx.client.add_disk(addr).await,
        DiskChange::Remove => ctx.client.remove_disk(addr).await,
    };
    asked.map_err(|e| ctx.fail(&e, addr))?;
    if wait {
        return wait_jobs(ctx, t0).await;
    }
    emit(&match change {
        DiskChange::Add => {
            format!("added {addr}; partitions move in the background (see `oss status`)\n")
        }
        DiskChange::Remove => {
            format!("removing {addr}; it drains in the background (see `oss status`)\n")
        }
    })
}

pub async fn repair(ctx: &Ctx, wait: bool) -> Result<()> {
    let t0 = now_micros();
    ctx.client.repair().await.map_err(|e| ctx.fail(&e, ""))?;
    if wait {
        wait_jobs(ctx, t0).await
    } else {
        emit("repair started (see `oss status`)\n")
    }
}

/// How long `audit` waits for the proxy's periodic disk checks to bring in the new counts.
const AUDIT_STATS_WAIT: Duration = Duration::from_secs(5);

pub async fn audit(ctx: &Ctx) -> Result<()> {
    let before = ctx.client.status().await.map_err(|e| ctx.fail(&e, ""))?;
    // The proxy answers once every storage server finished its pass.
    ctx.client.audit().await.map_err(|e| ctx.fail(&e, ""))?;
    // The status carries each server's stats as of the proxy's last disk check, which may
    // predate the pass: wait (briefly) until every server that reported before shows it.
    let deadline = tokio::time::Instant::now() + AUDIT_STATS_WAIT;
    loop {
        let st = ctx.client.status().await.map_err(|e| ctx.fail(&e, ""))?;
        if audits_reported(&before, &st) || tokio::time::Instant::now() >= deadline {
            return emit(&audit_report(&st));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Every server with audit stats in `before` shows a pass more in `after`.
fn audits_reported(before: &ClusterStatus, after: &ClusterStatus) -> bool {
    before.servers.iter().all(|b| {
        let Some(old) = &b.stats else { return true };
        after
            .servers
            .iter()
            .find(|a| a.addr == b.addr)
            .and_then(|a| a.stats.as_ref())
            .is_none_or(|new| new.audit.passes > old.audit.passes)
    })
}

pub fn audit_report(st: &ClusterStatus) -> String {
    let mut rows = vec![vec![
        "SERVER".to_string(),
        "PASSES".into(),
        "OBJECTS".into(),
        "BYTES".into(),
        "QUARANTINED".into(),
    ]];
    for s in &st.servers {
        match &s.stats {
            Some(d) => rows.push(vec![
                s.addr.clone(),
                d.audit.passes.to_string(),
                d.audit.last_pass_objects.to_string(),
                fmt::bytes(d.audit.last_pass_bytes),
                d.audit.quarantined_total.to_string(),
            ]),
            None => rows.push(vec![s.addr.clone(), format!("({})", s.state)]),
        }
    }
    fmt::table(
        &rows,
        &[
            Align::Left,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
        ],
    )
}

pub async fn status(ctx: &Ctx, json: bool) -> Result<()> {
    let st = ctx.client.status().await.map_err(|e| ctx.fail(&e, ""))?;
    if json {
        let mut s = serde_json::to_string_pretty(&st)?;
        s.push('\n');
        emit(&s)
    } else {
        emit(&status_report(&st, now_micros()))
    }
}

/// Share of the ring's partition replicas a server holds, in percent.
pub fn share(partitions: u32, st: &ClusterStatus) -> f64 {
    let slots = u64::from(st.partitions) * u64::from(st.replicas);
    if slots == 0 {
        0.0
    } else {
        f64::from(partitions) * 100.0 / slots as f64
    }
}

pub fn status_report(st: &ClusterStatus, now: u64) -> String {
    let mut out = format!(
        "ring: epoch {}, {} partitions, {} replicas, {} servers\n\n",
        st.epoch,
        st.partitions,
        st.replicas,
        st.servers.len()
    );
    let mut rows = vec![vec![
        "SERVER".to_string(),
        "STATE".into(),
        "SINCE".into(),
        "PARTITIONS".into(),
        "SHARE".into(),
        "OBJECTS".into(),
        "BYTES".into(),
        "DISK FREE".into(),
        "LAST AUDIT".into(),
    ]];
    for s in &st.servers {
        let (objects, bytes, free, audit) = match &s.stats {
            Some(d) => (
                d.objects.to_string(),
                fmt::bytes(d.bytes),
                if d.disk_total > 0 {
                    format!(
                        "{} of {}",
                        fmt::bytes(d.disk_free),
                        fmt::bytes(d.disk_total)
                    )
                } else {
                    "-".into()
                },
                match d.audit.quarantined_total {
                    0 => fmt::ago(now, d.audit.last_pass_end),
                    q => format!("{} ({q} quarantined)", fmt::ago(now, d.audit.last_pass_end)),
                },
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        rows.push(vec![
            s.addr.clone(),
            s.state.to_string(),
            fmt::ago(now, s.since),
            s.partitions.to_string(),
            format!("{:.1}%", share(s.partitions, st)),
            objects,
            bytes,
            free,
            audit,
        ]);
    }
    use Align::{Left as L, Right as R};
    out.push_str(&fmt::table(&rows, &[L, L, L, R, R, R, R, R, L]));

    out.push('\n');
    out.push_str(&replicator_line(&st.replicator, now));
    if st.jobs.is_empty() {
        out.push_str("jobs: none\n");
        return out;
    }
    out.push_str("jobs:\n");
    let mut rows = Vec::new();
    for j in &st.jobs {
        let when = if j.running {
            format!("started {}", fmt::ago(now, j.started))
        } else {
            format!("finished {}", fmt::ago(now, j.finished))
        };
        rows.push(vec![
            format!("  {}", j.what),
            if j.running { "running" } else { "done" }.to_string(),
            fmt::fraction(j.done, j.total),
            fmt::bytes(j.bytes),
            format!("{} error{}", j.errors, if j.errors == 1 { "" } else { "s" }),
            when,
        ]);
    }
    out.push_str(&fmt::table(&rows, &[L, L, R, R, R, L]));
    out
}

/// `replicator: last pass 3s ago (12 ms), 0 partitions out of sync, 0 stray copies pending;
/// since start 5 handed back, 2 synced (17 versions copied)`.
pub fn replicator_line(r: &oss_proto::wire::ReplicatorStatus, now: u64) -> String {
    let pass = if r.passes == 0 {
        "no pass yet".to_string()
    } else {
        format!(
            "last pass {} ({} ms)",
            fmt::ago(now, r.last_pass_end),
            r.last_pass_micros / 1000
        )
    };
    format!(
        "replicator: {pass}, {} partition{} out of sync, {} stray cop{} pending; \
         since start {} handed back, {} synced ({} versions copied)\n",
        r.out_of_sync,
        if r.out_of_sync == 1 { "" } else { "s" },
        r.pending,
        if r.pending == 1 { "y" } else { "ies" },
        r.handed_back,
        r.synced,
        r.versions_copied
    )
}

/// A job this wait is about: running now, or started after the request was sent.
fn relevant(j: &Progress, t0: u64, seen: &[(String, u64)]) -> bool {
    j.running || j.started >= t0 || seen.iter().any(|(w, s)| *w == j.what && *s == j.started)
}

/// Polls `status` until no job runs; fails if one of the jobs it watched reports errors.
async fn wait_jobs(ctx: &Ctx, t0: u64) -> Result<()> {
    let tty = stderr_is_tty();
    // Jobs seen running while we waited, by (what, started).
    let mut seen: Vec<(String, u64)> = Vec::new();
    let result = loop {
        let st = ctx.client.status().await.map_err(|e| ctx.fail(&e, ""))?;
        for j in st.jobs.iter().filter(|j| j.running) {
            if !seen.iter().any(|(w, s)| *w == j.what && *s == j.started) {
                seen.push((j.what.clone(), j.started));
            }
        }
        let running: Vec<&Progress> = st.jobs.iter().filter(|j| j.running).collect();
        if running.is_empty() {
            break st;
        }
        if tty {
            let line = running
                .iter()
                .map(|j| format!("{} {}", j.what, fmt::fraction(j.done, j.total)))
                .collect::<Vec<_>>()
                .join(", ");
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\rwaiting: {line}\x1b[K");
            let _ = err.flush();
        }
        tokio::time::sleep(POLL).await;
    };
    if tty {
        let _ = write!(std::io::stderr(), "\r\x1b[K");
    }
    let failed: Vec<String> = result
        .jobs
        .iter()
        .filter(|j| relevant(j, t0, &seen) && j.errors > 0)
        .map(|j| format!("{} ({} errors)", j.what, j.errors))
        .collect();
    if failed.is_empty() {
        let done: Vec<String> = result
            .jobs
            .iter()
            .filter(|j| relevant(j, t0, &seen))
            .map(|j| format!("{}: {} done", j.what, fmt::fraction(j.done, j.total)))
            .collect();
        if done.is_empty() {
            emit("done\n")
        } else {
            emit(&format!("{}\n", done.join("\n")))
        }
    } else {
        Err(CliError::new(format!("finished with errors: {}", failed.join(", "))).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oss_proto::wire::{AuditStats, DiskStats, ServerState, ServerStatus};

    fn status() -> ClusterStatus {
        let now = 1_000_000_000_000_000;
        ClusterStatus {
            epoch: 3,
            partitions: 64,
            replicas: 2,
            servers: vec![
                ServerStatus {
                    id: Some(0),
                    addr: "127.0.0.1:7001".into(),
                    state: ServerState::Online,
                    since: now - 300_000_000,
                    partitions: 64,
                    stats: Some(DiskStats {
                        objects: 12,
                        bytes: 3 << 20,
                        disk_total: 100 << 30,
                        disk_free: 50 << 30,
                        audit: AuditStats {
                            passes: 2,
                            last_pass_end: now - 12_000_000,
                            last_pass_objects: 12,
                            last_pass_bytes: 3 << 20,
                            quarantined_total: 0,
                        },
                    }),
                },
                ServerStatus {
                    id: Some(1),
                    addr: "127.0.0.1:7002".into(),
                    state: ServerState::Offline,
                    since: now - 12_000_000,
                    partitions: 64,
                    stats: None,
                },
            ],
            jobs: vec![Progress {
                what: "rebalance".into(),
                done: 10,
                total: 40,
                bytes: 1 << 20,
                running: true,
                started: now - 3_000_000,
                finished: 0,
                errors: 0,
            }],
            replicator: oss_proto::wire::ReplicatorStatus {
                passes: 4,
                last_pass_end: now - 2_000_000,
                last_pass_micros: 12_000,
                pending: 1,
                handed_back: 5,
                out_of_sync: 0,
                synced: 2,
                versions_copied: 17,
            },
        }
    }

    #[test]
    fn shares() {
        let st = status();
        assert_eq!(share(64, &st), 50.0);
        assert_eq!(share(32, &st), 25.0);
        let empty = ClusterStatus {
            partitions: 0,
            ..st
        };
        assert_eq!(share(5, &empty), 0.0);
    }

    #[test]
    fn status_table() {
        let r = status_report(&status(), 1_000_000_000_000_000);
        assert!(
            r.starts_with("ring: epoch 3, 64 partitions, 2 replicas, 2 servers\n"),
            "{r}"
        );
        let lines: Vec<&str> = r.lines().collect();
        assert!(lines[2].starts_with("SERVER"), "{r}");
        assert!(
            lines[3].starts_with("127.0.0.1:7001  online   5m ago"),
            "{r}"
        );
        assert!(
            lines[3].contains("50.0%") && lines[3].ends_with("12s ago"),
            "{r}"
        );
        assert!(
            lines[4].starts_with("127.0.0.1:7002  offline  12s ago"),
            "{r}"
        );
        assert!(
            r.contains(
                "replicator: last pass 2s ago (12 ms), 0 partitions out of sync, \
                 1 stray copy pending; since start 5 handed back, 2 synced (17 versions copied)\n"
            ),
            "{r}"
        );
        assert!(r.contains("rebalance  running  10/40 (25.0%)"), "{r}");
        assert!(r.contains("started 3s ago"), "{r}");
    }

    #[test]
    fn json_status_round_trips() {
        let st = status();
        let j = serde_json::to_string(&st).unwrap();
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["epoch"], 3);
        assert_eq!(v["servers"][0]["addr"], "127.0.0.1:7001");
        assert_eq!(v["servers"][1]["state"], "Offline");
    }

    #[test]
    fn relevant_jobs() {
        let mut j = Progress {
            what: "repair".into(),
            started: 5,
            ..Default::default()
        };
        assert!(!relevant(&j, 10, &[]));
        assert!(relevant(&j, 5, &[]));
        assert!(relevant(&j, 10, &[("repair".into(), 5)]));
        j.running = true;
        assert!(relevant(&j, 10, &[]));
    }

    #[test]
    fn audit_waits_for_new_passes() {
        let before = status();
        let mut after = status();
        assert!(!audits_reported(&before, &after));
        after.servers[0].stats.as_mut().unwrap().audit.passes += 1;
        assert!(audits_reported(&before, &after));
    }

    #[test]
    fn audit_table() {
        let r = audit_report(&status());
        assert!(r.contains("127.0.0.1:7001"), "{r}");
        assert!(r.contains("127.0.0.1:7002  (offline)"), "{r}");
    }
}
