//! `oss delete` and `oss check` (`oss list` is in [`super::tree`]).

use anyhow::Result;

use oss_proto::name::hex;
use oss_proto::wire::{now_micros, ReplicaState};
use oss_proto::{ObjectName, WireError};

use crate::error::{self, CliError};
use crate::fmt;
use crate::io::emit;
use crate::Ctx;

pub async fn delete(ctx: &Ctx, name: &str) -> Result<()> {
    let name = ObjectName::parse(name).map_err(|e| error::invalid_name(&e))?;
    match ctx.client.delete(&name).await {
        Ok(true) => Ok(()),
        // Like `rm`: deleting what is not there is reported, though nothing is left either way.
        Ok(false) => Err(ctx
            .fail(
                &oss_proto::Error::Remote(WireError::NotFound),
                name.as_str(),
            )
            .into()),
        Err(e) => Err(ctx.fail(&e, name.as_str()).into()),
    }
}

pub async fn check(ctx: &Ctx, name: &str) -> Result<()> {
    let name = ObjectName::parse(name).map_err(|e| error::invalid_name(&e))?;
    let replicas = ctx
        .client
        .check(&name)
        .await
        .map_err(|e| ctx.fail(&e, name.as_str()))?;
    emit(&check_report(&replicas, now_micros()))?;
    check_verdict(&name, &replicas)
}

/// One line per replica: server, state, then what is known of the version it holds.
pub fn check_report(replicas: &[(String, ReplicaState)], now: u64) -> String {
    let rows: Vec<Vec<String>> = replicas
        .iter()
        .map(|(addr, st)| match st {
            ReplicaState::Good(m) => vec![
                addr.clone(),
                "good".into(),
                format!("{} bytes", m.size),
                hex(&m.md5),
                fmt::iso_utc(m.timestamp),
            ],
            ReplicaState::Missing => vec![addr.clone(), "missing".into()],
            ReplicaState::Deleted(m) => vec![
                addr.clone(),
                "deleted".into(),
                format!(
                    "at {} ({})",
                    fmt::iso_utc(m.timestamp),
                    fmt::ago(now, m.timestamp)
                ),
            ],
            ReplicaState::Corrupt(why) => vec![addr.clone(), "corrupt".into(), why.clone()],
        })
        .collect();
    fmt::table(&rows, &[])
}

/// Ok only if every replica is good; a name with no live replica at all is "not found".
pub fn check_verdict(name: &ObjectName, replicas: &[(String, ReplicaState)]) -> Result<()> {
    // Lines describing a replica as it was before the proxy repaired it are history.
    let replicas: Vec<(String, ReplicaState)> = replicas
        .iter()
        .filter(|(label, _)| !label.ends_with("(before repair)"))
        .cloned()
        .collect();
    let replicas = &replicas[..];
    let good = replicas
        .iter()
        .filter(|(_, s)| matches!(s, ReplicaState::Good(_)))
        .count();
    if good == replicas.len() && good > 0 {
        return Ok(());
    }
    let none_live = replicas
        .iter()
        .all(|(_, s)| matches!(s, ReplicaState::Missing | ReplicaState::Deleted(_)));
    if none_live {
        return Err(CliError::new(format!("not found: {name}")).into());
    }
    Err(CliError::new(format!(
        "{name}: {} of {} replicas not good after repair",
        replicas.len() - good,
        replicas.len()
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oss_proto::ObjectMeta;

    fn meta(file: &str, size: u64, ts: u64) -> ObjectMeta {
        ObjectMeta {
            name: ObjectName::new("alice", file).unwrap(),
            size,
            md5: [0xab; 16],
            timestamp: ts,
            deleted: false,
            attrs: Default::default(),
        }
    }

    #[test]
    fn check_verdicts() {
        let n = ObjectName::parse("alice/a").unwrap();
        let good = ReplicaState::Good(meta("a", 1, 1));
        let ok = vec![
            ("s1".to_string(), good.clone()),
            ("s2".into(), good.clone()),
        ];
        assert!(check_verdict(&n, &ok).is_ok());
        let bad = vec![
            ("s1".to_string(), good.clone()),
            ("s2".into(), ReplicaState::Corrupt("block 3".into())),
        ];
        let e = check_verdict(&n, &bad).unwrap_err();
        assert_eq!(
            e.downcast_ref::<CliError>().unwrap().msg,
            "alice/a: 1 of 2 replicas not good after repair"
        );
        let gone = vec![
            ("s1".to_string(), ReplicaState::Missing),
            ("s2".into(), ReplicaState::Deleted(meta("a", 0, 1))),
        ];
        let e = check_verdict(&n, &gone).unwrap_err();
        assert_eq!(
            e.downcast_ref::<CliError>().unwrap().msg,
            "not found: alice/a"
        );
        assert!(check_verdict(&n, &[]).is_err());
        let repaired = vec![
            (
                "s2 (before repair)".to_string(),
                ReplicaState::Corrupt("block 3".into()),
            ),
            ("s1".to_string(), good.clone()),
            ("s2".into(), good.clone()),
        ];
        assert!(check_verdict(&n, &repaired).is_ok());
        let report = check_report(&bad, 2);
        assert!(report.starts_with("s1  good     1 bytes"), "{report}");
        assert!(report.contains("s2  corrupt  block 3"), "{report}");
    }
}
