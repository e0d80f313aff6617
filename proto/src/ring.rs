//! The ring: which storage devices hold which partitions.
//!
//! An object name hashes to a 32-bit value whose top `part_power` bits pick one of
//! `2^part_power` *partitions* (see `name::partition_of`). The ring maps every partition to
//! `replicas` distinct devices (storage servers). It is pure data plus pure functions: no I/O,
//! no clocks, no randomness. The proxy persists it (see [`Ring::to_json`]) and every change
//! produces a new ring with a higher [`Ring::epoch`]; the old and new ring are compared with
//! [`Ring::moves`] to know which partition replicas must be copied before the ring flips.
//!
//! # Invariants (checked by [`Ring::validate`])
//!
//! - `format == RING_FORMAT`, `part_power <= MAX_PART_POWER`, `replicas >= 1`, and there are at
//!   least `replicas` devices.
//! - `devices` is sorted by strictly increasing id, every id is `< next_id` (ids are never
//!   reused, so an id in an old ring, a log line or a move always means the same server), and
//!   addresses are non-empty and unique.
//! - `assignment` has one row per partition, each row has `replicas` entries, and the entries of
//!   a row are distinct known device ids: two replicas of a partition never share a device.
//!
//! Rings built by this module are also *balanced* ([`Ring::is_balanced`]): with `P`
//! partitions, `R` replicas and `N` devices, every device holds `floor(P*R/N)` or
//! `ceil(P*R/N)` partition replicas, i.e. its fair share within one partition replica.
//! `validate` does not demand balance, because a ring in the middle of a rebalance
//! ([`Ring::staging`]) is valid but not balanced.
//!
//! # Placement algorithm
//!
//! - [`Ring::new`] fills partitions one by one, giving each the `R` least-loaded devices; ties
//!   are broken by a per-partition hash of the device id ([`mix`]), so the pairs (triples) of
//!   devices sharing partitions are well mixed: when one device dies, its partitions' surviving
//!   replicas are spread over all other devices, and so is the re-replication work.
//! - [`Ring::with_device_added`] moves exactly `floor(P*R/N')` partition replicas to the new
//!   device (the theoretical minimum), each from an old device that is above its new fair
//!   share, at most one replica per partition, and nothing between old devices.
//! - [`Ring::with_device_removed`] moves exactly the removed device's replicas, each to a
//!   device that does not yet hold that partition, filling devices up to their new fair share.
//!
//! Both changes are a bounded bipartite assignment (partitions on one side, devices on the
//! other, each device taking between a lower and an upper count): a greedy pass in hash order
//! does nearly all of the work and augmenting paths (re-routing earlier choices, the "swap"
//! that un-sticks a device whose only candidate partitions are taken) finish it. The augmenting
//! search is complete, so it finds a movement-minimal solution whenever one exists. Only when
//! none exists (a pathological or hand-built ring, e.g. all of a removed device's partitions
//! shared with one other device) does it fall back to placing the rest anywhere legal and then
//! moving replicas from the fullest to the emptiest device until balanced; balance and
//! distinctness are never given up.
//!
//! # Determinism
//!
//! The same inputs always give the same ring, on every machine: the only tie-breaker is
//! [`mix`], a fixed integer hash of `(partition, device id)`.

use std::cmp::Reverse;
use std::collections::{HashSet, VecDeque};

use serde::{Deserialize, Serialize};

/// Identifier of a device (storage server). Assigned from [`Ring::next_id`], never reused.
pub type DevId = u32;

/// Format version of the persisted ring (bump when the serialized shape changes).
///
/// [`Ring::from_json`] refuses any other value, so an old binary never misreads a newer ring.
pub const RING_FORMAT: u32 = 1;

/// Largest accepted partition power.
///
/// `2^20` partitions (1,048,576, Swift's documented upper example) is ample for ~10,000
/// devices at the usual ~100 partitions per device, while keeping the ring (one small row per
/// partition, persisted as JSON and held by the proxy) in the tens of megabytes at most.
pub const MAX_PART_POWER: u8 = 20;

/// One storage device (server) in the ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Stable identifier, never reused after the device is removed.
    pub id: DevId,
    /// Where to reach the server (e.g. `host:port`); unique within a ring.
    pub addr: String,
}

/// The ring: `2^part_power` partitions, each mapped to `replicas` distinct devices.
///
/// See the [module documentation](self) for the invariants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    /// Serialized shape version, always [`RING_FORMAT`].
    pub format: u32,
    /// Bumped by every change (add, remove); a new ring starts at 1.
    pub epoch: u64,
    /// Partitions = `2^part_power`, `0..=MAX_PART_POWER`.
    pub part_power: u8,
    /// Replicas per partition, `>= 1`.
    pub replicas: u8,
    /// Devices sorted by id.
    pub devices: Vec<Device>,
    /// Id the next added device gets; greater than every id ever used in this ring.
    pub next_id: DevId,
    /// `[partition][replica index]` -> device id; distinct within a partition.
    pub assignment: Vec<Vec<DevId>>,
}

/// Why a ring could not be built, changed or loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// Fewer devices than replicas: replicas of a partition could not be distinct.
    #[error("too few devices: have {have}, need at least {need} (one per replica)")]
    TooFewDevices { have: usize, need: usize },
    /// Two devices with the same address.
    #[error("duplicate device address {0:?}")]
    DuplicateAddr(String),
    /// No device with this id in the ring.
    #[error("unknown device id {0}")]
    UnknownDevice(DevId),
    /// Partition power above [`MAX_PART_POWER`].
    #[error("partition power {0} is out of range 0..={max}", max = MAX_PART_POWER)]
    BadPartPower(u8),
    /// Zero replicas.
    #[error("replica count {0} is invalid (must be at least 1)")]
    BadReplicas(u8),
    /// A persisted ring of another format version.
    #[error("unsupported ring format {found} (this build reads format {RING_FORMAT})")]
    UnsupportedFormat { found: u32 },
    /// Anything else that breaks an invariant, or unparsable JSON.
    #[error("invalid ring: {0}")]
    Invalid(String),
}

/// One partition replica changing device: `assignment[part][replica]` goes `from` -> `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub part: u32,
    pub replica: u8,
    pub from: DevId,
    pub to: DevId,
}

impl Ring {
    /// A new balanced ring over `addrs` (ids `0..addrs.len()` in that order), epoch 1.
    ///
    /// Refuses a bad partition power or replica count, empty or duplicate addresses, and fewer
    /// devices than replicas.
    pub fn new(part_power: u8, replicas: u8, addrs: &[String]) -> Result<Ring, RingError> {
        check_shape(part_power, replicas)?;
        let mut seen = HashSet::new();
        for addr in addrs {
            check_addr(addr)?;
            if !seen.insert(addr.as_str()) {
                return Err(RingError::DuplicateAddr(addr.clone()));
            }
        }
        let r = usize::from(replicas);
        if addrs.len() < r {
            return Err(RingError::TooFewDevices {
                have: addrs.len(),
                need: r,
            });
        }
        let n = DevId::try_from(addrs.len())
            .map_err(|_| RingError::Invalid("too many devices".into()))?;
        let devices: Vec<Device> = (0..n)
            .zip(addrs)
            .map(|(id, addr)| Device {
                id,
                addr: addr.clone(),
            })
            .collect();
        let parts = 1u32 << part_power;
        let mut load = vec![0u32; devices.len()];
        let mut order: Vec<usize> = (0..devices.len()).collect();
        let mut assignment = Vec::with_capacity(parts as usize);
        for p in 0..parts {
            // Least-loaded first; the hash tie-break varies with the partition, so which
            // devices end up sharing partitions is well mixed. Taking the R least-loaded
            // devices keeps all loads within one of each other after every partition.
            order.sort_by_key(|&i| (load[i], mix(p, devices[i].id)));
            let row: Vec<DevId> = order[..r]
                .iter()
                .map(|&i| {
                    load[i] += 1;
                    devices[i].id
                })
                .collect();
            assignment.push(row);
        }
        Ok(Ring {
            format: RING_FORMAT,
            epoch: 1,
            part_power,
            replicas,
            devices,
            next_id: n,
            assignment,
        })
    }

    /// Number of partitions, `2^part_power`.
    pub fn partitions(&self) -> u32 {
        1u32.checked_shl(u32::from(self.part_power)).unwrap_or(0)
    }

    /// Devices holding `part`, by replica index (empty if `part` is out of range).
    pub fn replicas_of(&self, part: u32) -> &[DevId] {
        self.assignment
            .get(part as usize)
            .map_or(&[][..], |row| row.as_slice())
    }

    /// The device with this id.
    pub fn device(&self, id: DevId) -> Option<&Device> {
        self.devices.iter().find(|d| d.id == id)
    }

    /// The device with this address.
    pub fn device_by_addr(&self, addr: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.addr == addr)
    }

    /// Partition replicas held per device, in device order; every device is listed (0 if none).
    pub fn shares(&self) -> Vec<(DevId, u32)> {
        self.devices
            .iter()
            .map(|d| d.id)
            .zip(self.loads())
            .collect()
    }

    /// Whether every device holds `floor` or `ceil` of `partitions * replicas / devices`.
    pub fn is_balanced(&self) -> bool {
        if self.devices.is_empty() {
            return false;
        }
        let (lo, hi) = self.fair_share();
        self.loads().iter().all(|&l| l == lo || l == hi)
    }

    /// The fair share per device: (`floor`, `ceil`) of `partitions * replicas / devices`.
    pub fn fair_share(&self) -> (u32, u32) {
        let n = self.devices.len().max(1) as u64;
        let total = self.total_slots();
        let lo = total / n;
        let hi = lo + u64::from(!total.is_multiple_of(n));
        (lo as u32, hi as u32)
    }

    /// A new ring with one more device at `addr` (id `next_id`), epoch + 1.
    ///
    /// The new device takes `floor(P*R/N')` partition replicas (its fair share, the minimum
    /// movement), only from old devices above their new fair share, at most one replica of a
    /// given partition; no replica moves between two old devices. Refuses an empty or
    /// duplicate address.
    pub fn with_device_added(&self, addr: &str) -> Result<Ring, RingError> {
        self.validate()?;
        check_addr(addr)?;
        if self.device_by_addr(addr).is_some() {
            return Err(RingError::DuplicateAddr(addr.to_string()));
        }
        let new_id = self.next_id;
        let next_id = new_id
            .checked_add(1)
            .ok_or_else(|| RingError::Invalid("device ids exhausted".into()))?;
        let epoch = self.next_epoch()?;
        let n_old = self.devices.len();
        let target = (self.total_slots() / (n_old as u64 + 1)) as u32;
        let loads = self.loads();
        // An old device must end within [target, target + 1]: it gives between lo and hi.
        let lo: Vec<u32> = loads
            .iter()
            .map(|&l| l.saturating_sub(target + 1))
            .collect();
        let hi: Vec<u32> = loads.iter().map(|&l| l.saturating_sub(target)).collect();
        // Items are partitions (each can give at most one replica); a partition's candidate
        // givers are the devices holding it.
        let item_devs: Vec<Vec<u32>> = self
            .assignment
            .iter()
            .map(|row| row.iter().map(|&id| self.index(id) as u32).collect())
            .collect();
        let mut order: Vec<u32> = (0..self.partitions()).collect();
        order.sort_by_key(|&p| mix(p, new_id));
        let (giver, _exact) =
            bounded_assign(&item_devs, n_old, &order, &lo, &hi, target, |p, d| {
                mix(p, self.devices[d as usize].id)
            });

        let mut assignment = self.assignment.clone();
        for (row, g) in assignment.iter_mut().zip(&giver) {
            if let Some(d) = *g {
                let from = self.devices[d as usize].id;
                if let Some(slot) = row.iter_mut().find(|x| **x == from) {
                    *slot = new_id;
                }
            }
        }
        let mut devices = self.devices.clone();
        devices.push(Device {
            id: new_id,
            addr: addr.to_string(),
        });
        let mut ring = Ring {
            format: RING_FORMAT,
            epoch,
            part_power: self.part_power,
            replicas: self.replicas,
            devices,
            next_id,
            assignment,
        };
        ring.repair_balance();
        Ok(ring)
    }

    /// A new ring without device `id`, epoch + 1.
    ///
    /// Exactly the removed device's partition replicas move, each to a device that does not
    /// already hold that partition, filling the others up to their new fair share. Refuses an
    /// unknown id, and a removal that would leave fewer devices than replicas (removing down to
    /// exactly `replicas` devices is allowed).
    pub fn with_device_removed(&self, id: DevId) -> Result<Ring, RingError> {
        self.validate()?;
        let x = index_of(&self.devices, id).ok_or(RingError::UnknownDevice(id))?;
        let n_rest = self.devices.len() - 1;
        let r = usize::from(self.replicas);
        if n_rest < r {
            return Err(RingError::TooFewDevices {
                have: n_rest,
                need: r,
            });
        }
        let epoch = self.next_epoch()?;
        let mut devices = self.devices.clone();
        devices.remove(x);
        let mut loads = self.loads();
        loads.remove(x);
        let target = (self.total_slots() / n_rest as u64) as u32;
        // A remaining device must end within [target, target + 1]: it takes between lo and hi.
        let lo: Vec<u32> = loads.iter().map(|&l| target.saturating_sub(l)).collect();
        let hi: Vec<u32> = loads
            .iter()
            .map(|&l| (target + 1).saturating_sub(l))
            .collect();
        // Items are the removed device's (partition, replica index) slots; a slot's candidate
        // receivers are the remaining devices not already holding that partition.
        let items: Vec<(u32, usize)> = self
            .assignment
            .iter()
            .enumerate()
            .filter_map(|(p, row)| row.iter().position(|&d| d == id).map(|ri| (p as u32, ri)))
            .collect();
        let item_devs: Vec<Vec<u32>> = items
            .iter()
            .map(|&(p, _)| {
                let row = &self.assignment[p as usize];
                (0..devices.len() as u32)
                    .filter(|&d| !row.contains(&devices[d as usize].id))
                    .collect()
            })
            .collect();
        let mut order: Vec<u32> = (0..items.len() as u32).collect();
        order.sort_by_key(|&i| mix(items[i as usize].0, id));
        let (receiver, exact) = bounded_assign(
            &item_devs,
            devices.len(),
            &order,
            &lo,
            &hi,
            items.len() as u32,
            |i, d| mix(items[i as usize].0, devices[d as usize].id),
        );

        let mut assignment = self.assignment.clone();
        let mut running = loads;
        for (i, &(p, ri)) in items.iter().enumerate() {
            if let Some(d) = receiver[i] {
                assignment[p as usize][ri] = devices[d as usize].id;
                running[d as usize] += 1;
            }
        }
        if !exact {
            // No movement-minimal solution exists: place the rest on the least-loaded legal
            // device, then let repair_balance even things out.
            for (i, &(p, ri)) in items.iter().enumerate() {
                if receiver[i].is_none() {
                    let row = &assignment[p as usize];
                    let d = (0..devices.len())
                        .filter(|&d| !row.contains(&devices[d].id))
                        .min_by_key(|&d| (running[d], mix(p, devices[d].id)))
                        .expect("n_rest >= replicas leaves a device without this partition");
                    assignment[p as usize][ri] = devices[d].id;
                    running[d] += 1;
                }
            }
        }
        let mut ring = Ring {
            format: RING_FORMAT,
            epoch,
            part_power: self.part_power,
            replicas: self.replicas,
            devices,
            next_id: self.next_id,
            assignment,
        };
        ring.repair_balance();
        Ok(ring)
    }

    /// The partition replicas whose device differs between `old` and `new`, in
    /// (partition, replica index) order. Only the partitions and replica indices both rings
    /// have are compared.
    pub fn moves(old: &Ring, new: &Ring) -> Vec<Move> {
        let mut out = Vec::new();
        for (p, (a, b)) in old.assignment.iter().zip(&new.assignment).enumerate() {
            for (r, (&from, &to)) in a.iter().zip(b).enumerate() {
                if from != to {
                    out.push(Move {
                        part: p as u32,
                        replica: r as u8,
                        from,
                        to,
                    });
                }
            }
        }
        out
    }

    /// A copy with one partition replica flipped (see [`Ring::apply_move`]); the epoch is
    /// unchanged, the caller decides when the flipped ring becomes a new epoch.
    pub fn with_move_applied(&self, m: &Move) -> Ring {
        let mut ring = self.clone();
        ring.apply_move(m);
        ring
    }

    /// Flips `assignment[m.part][m.replica]` from `m.from` to `m.to` in place; returns whether
    /// it changed. A stale move (the slot no longer holds `m.from`, e.g. applied twice) or one
    /// out of range is a no-op. Cheaper than [`Ring::with_move_applied`] for many moves.
    ///
    /// Start from [`Ring::staging`] so that both the old and the new devices are known.
    /// Add and remove never move two replicas of one partition (unless they had to fall back,
    /// see the module docs); if [`Ring::moves`] lists several for one partition, apply them
    /// together before validating.
    pub fn apply_move(&mut self, m: &Move) -> bool {
        match self
            .assignment
            .get_mut(m.part as usize)
            .and_then(|row| row.get_mut(usize::from(m.replica)))
        {
            Some(slot) if *slot == m.from => {
                *slot = m.to;
                true
            }
            _ => false,
        }
    }

    /// The ring to flip partition by partition from `old` to `new`: `old`'s assignment and
    /// epoch with the devices of both (so a device being added or removed is known while its
    /// partitions move). After applying every [`Ring::moves`]`(old, new)` its assignment equals
    /// `new`'s; then switch to `new`.
    pub fn staging(old: &Ring, new: &Ring) -> Ring {
        let mut devices = old.devices.clone();
        for d in &new.devices {
            if index_of(&devices, d.id).is_none() {
                devices.push(d.clone());
                devices.sort_by_key(|d| d.id);
            }
        }
        Ring {
            devices,
            next_id: old.next_id.max(new.next_id),
            ..old.clone()
        }
    }

    /// A deterministic stand-in device for `part`: not in `exclude` and not already holding
    /// `part`, or `None` if there is no such device.
    ///
    /// Prefers the least-loaded candidates, where loads within one partition replica of the
    /// lightest candidate count as equal (the ring's own balance tolerance; otherwise a
    /// balanced ring would send every handoff to the few devices at `floor`), then a stable
    /// per-partition hash order, so concurrent callers agree and the handoffs of a failed
    /// device spread over all others. The order of `exclude` does not matter.
    ///
    /// Counts loads on each call (`O(partitions * replicas)`); fine for the sizes used here,
    /// but call it per request, not per byte.
    pub fn handoff(&self, part: u32, exclude: &[DevId]) -> Option<DevId> {
        let row = self.replicas_of(part);
        let loads = self.loads();
        let candidates: Vec<(DevId, u32)> = self
            .devices
            .iter()
            .zip(loads)
            .filter(|(d, _)| !exclude.contains(&d.id) && !row.contains(&d.id))
            .map(|(d, l)| (d.id, l))
            .collect();
        let lightest = candidates.iter().map(|&(_, l)| l).min()?;
        candidates
            .iter()
            .filter(|&&(_, l)| l <= lightest + 1)
            .min_by_key(|&&(id, _)| mix(part, id))
            .map(|&(id, _)| id)
    }

    /// Checks the invariants listed in the module documentation.
    pub fn validate(&self) -> Result<(), RingError> {
        if self.format != RING_FORMAT {
            return Err(RingError::UnsupportedFormat { found: self.format });
        }
        check_shape(self.part_power, self.replicas)?;
        let r = usize::from(self.replicas);
        if self.devices.len() < r {
            return Err(RingError::TooFewDevices {
                have: self.devices.len(),
                need: r,
            });
        }
        let mut addrs = HashSet::new();
        for (i, d) in self.devices.iter().enumerate() {
            if i > 0 && self.devices[i - 1].id >= d.id {
                return Err(RingError::Invalid(format!(
                    "devices not sorted by unique id at device {}",
                    d.id
                )));
            }
            if d.id >= self.next_id {
                return Err(RingError::Invalid(format!(
                    "device id {} is not below next_id {}",
                    d.id, self.next_id
                )));
            }
            check_addr(&d.addr)?;
            if !addrs.insert(d.addr.as_str()) {
                return Err(RingError::DuplicateAddr(d.addr.clone()));
            }
        }
        if self.assignment.len() != self.partitions() as usize {
            return Err(RingError::Invalid(format!(
                "{} assignment rows for {} partitions",
                self.assignment.len(),
                self.partitions()
            )));
        }
        for (p, row) in self.assignment.iter().enumerate() {
            if row.len() != r {
                return Err(RingError::Invalid(format!(
                    "partition {p} has {} replicas, want {r}",
                    row.len()
                )));
            }
            for (i, &id) in row.iter().enumerate() {
                if index_of(&self.devices, id).is_none() {
                    return Err(RingError::Invalid(format!(
                        "partition {p} replica {i} is on unknown device {id}"
                    )));
                }
                if row[..i].contains(&id) {
                    return Err(RingError::Invalid(format!(
                        "partition {p} has two replicas on device {id}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The ring as compact JSON (the persisted form).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a ring always serializes")
    }

    /// Parses and validates a persisted ring; refuses an unknown `format` before reading the
    /// rest, so a future shape is reported as such rather than as garbage.
    pub fn from_json(s: &str) -> Result<Ring, RingError> {
        #[derive(Deserialize)]
        struct Probe {
            format: u32,
        }
        let bad = |e: serde_json::Error| RingError::Invalid(format!("ring JSON: {e}"));
        let probe: Probe = serde_json::from_str(s).map_err(bad)?;
        if probe.format != RING_FORMAT {
            return Err(RingError::UnsupportedFormat {
                found: probe.format,
            });
        }
        let ring: Ring = serde_json::from_str(s).map_err(bad)?;
        ring.validate()?;
        Ok(ring)
    }

    // ----- internals -----

    /// `partitions * replicas`.
    fn total_slots(&self) -> u64 {
        u64::from(self.partitions()) * u64::from(self.replicas)
    }

    fn next_epoch(&self) -> Result<u64, RingError> {
        self.epoch
            .checked_add(1)
            .ok_or_else(|| RingError::Invalid("epoch overflow".into()))
    }

    /// Index in `devices` of a device known to be there (validated rings only).
    fn index(&self, id: DevId) -> usize {
        index_of(&self.devices, id).expect("validated ring: every assigned device is known")
    }

    /// Partition replicas per device, aligned with `devices`; unknown ids are ignored.
    fn loads(&self) -> Vec<u32> {
        let mut loads = vec![0u32; self.devices.len()];
        for row in &self.assignment {
            for &id in row {
                if let Some(i) = index_of(&self.devices, id) {
                    loads[i] += 1;
                }
            }
        }
        loads
    }

    /// Fallback: moves replicas from the fullest to the emptiest device until every load is
    /// within one of every other. Always possible: a device holding more partitions than
    /// another holds at least one partition the other does not. A no-op on a balanced ring.
    fn repair_balance(&mut self) {
        loop {
            let loads = self.loads();
            let Some(s) = (0..loads.len()).max_by_key(|&i| (loads[i], Reverse(i))) else {
                return;
            };
            let t = (0..loads.len())
                .min_by_key(|&i| (loads[i], i))
                .expect("non-empty");
            if loads[s] <= loads[t] + 1 {
                return;
            }
            let (sid, tid) = (self.devices[s].id, self.devices[t].id);
            let p = (0..self.partitions())
                .filter(|&p| {
                    let row = &self.assignment[p as usize];
                    row.contains(&sid) && !row.contains(&tid)
                })
                .min_by_key(|&p| mix(p, tid))
                .expect("a fuller device holds a partition the emptier one does not");
            let row = &mut self.assignment[p as usize];
            if let Some(slot) = row.iter_mut().find(|x| **x == sid) {
                *slot = tid;
            }
        }
    }
}

/// The stable tie-breaker: a fixed 64-bit mix (SplitMix64's finalizer) of
/// `(partition, device id)`. Changing it changes where new rings place partitions and which
/// device a handoff picks, so it is part of the placement contract.
pub fn mix(part: u32, dev: DevId) -> u64 {
    let mut z = ((u64::from(part) << 32) | u64::from(dev)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn check_shape(part_power: u8, replicas: u8) -> Result<(), RingError> {
    if part_power > MAX_PART_POWER {
        return Err(RingError::BadPartPower(part_power));
    }
    if replicas == 0 {
        return Err(RingError::BadReplicas(replicas));
    }
    Ok(())
}

fn check_addr(addr: &str) -> Result<(), RingError> {
    if addr.is_empty() {
        return Err(RingError::Invalid("empty device address".into()));
    }
    Ok(())
}

fn index_of(devices: &[Device], id: DevId) -> Option<usize> {
    devices.binary_search_by_key(&id, |d| d.id).ok()
}

/// Bounded bipartite assignment: give up to `total` items (each at most once) to devices so
/// that device `d` gets between `lo[d]` and `hi[d]` items, an item only going to a device in
/// `item_devs[item]`.
///
/// A greedy pass over `order` (first towards `lo`, then towards `hi`, each item to the
/// candidate furthest from its bound, ties by `tie`) does most of the work; augmenting paths
/// finish it (a device takes an item from another device, which takes another item, ...,
/// until a free item is reached). The reachable count vectors form a polymatroid, so growing
/// towards `lo` first and then towards `hi` finds a solution whenever one exists.
///
/// Returns the owner of each item and whether all bounds and `total` were met (if not, the
/// assignment is as large as possible but some lower bound or the total may be missed).
fn bounded_assign(
    item_devs: &[Vec<u32>],
    n_devs: usize,
    order: &[u32],
    lo: &[u32],
    hi: &[u32],
    total: u32,
    tie: impl Fn(u32, u32) -> u64,
) -> (Vec<Option<u32>>, bool) {
    let mut dev_items: Vec<Vec<u32>> = vec![Vec::new(); n_devs];
    for (i, ds) in item_devs.iter().enumerate() {
        for &d in ds {
            dev_items[d as usize].push(i as u32);
        }
    }
    let mut owner: Vec<Option<u32>> = vec![None; item_devs.len()];
    let mut count = vec![0u32; n_devs];
    let mut assigned = 0u32;
    let mut exact = lo.iter().map(|&l| u64::from(l)).sum::<u64>() <= u64::from(total);

    // Phase 1: reach every lower bound. Greedy, then augmenting paths.
    for &i in order {
        if assigned >= total {
            break;
        }
        let best = item_devs[i as usize]
            .iter()
            .copied()
            .filter(|&d| count[d as usize] < lo[d as usize])
            .max_by_key(|&d| (lo[d as usize] - count[d as usize], Reverse(tie(i, d))));
        if let Some(d) = best {
            owner[i as usize] = Some(d);
            count[d as usize] += 1;
            assigned += 1;
        }
    }
    for d in 0..n_devs {
        while count[d] < lo[d] && assigned < total {
            if augment(d, &dev_items, &mut owner) {
                count[d] += 1;
                assigned += 1;
            } else {
                exact = false;
                break;
            }
        }
    }

    // Phase 2: reach `total` within the upper bounds. Greedy, then augmenting paths.
    for &i in order {
        if assigned >= total {
            break;
        }
        if owner[i as usize].is_some() {
            continue;
        }
        let best = item_devs[i as usize]
            .iter()
            .copied()
            .filter(|&d| count[d as usize] < hi[d as usize])
            .max_by_key(|&d| (hi[d as usize] - count[d as usize], Reverse(tie(i, d))));
        if let Some(d) = best {
            owner[i as usize] = Some(d);
            count[d as usize] += 1;
            assigned += 1;
        }
    }
    if assigned < total {
        let mut devs: Vec<usize> = (0..n_devs).collect();
        devs.sort_by_key(|&d| (Reverse(hi[d].saturating_sub(count[d])), d));
        for d in devs {
            // A failed augmentation stays failed (the feasible set is down-closed), so one
            // pass over the devices is enough.
            while assigned < total && count[d] < hi[d] {
                if augment(d, &dev_items, &mut owner) {
                    count[d] += 1;
                    assigned += 1;
                } else {
                    break;
                }
            }
        }
    }
    (owner, exact && assigned == total)
}

/// Breadth-first search for an augmenting path from device `start`: `start` takes an item
/// owned by `e1`, `e1` takes one owned by `e2`, ..., the last takes a free item. Applies it
/// and returns true, or returns false if no such path exists. Other devices' counts are
/// unchanged; `start` gains one item.
fn augment(start: usize, dev_items: &[Vec<u32>], owner: &mut [Option<u32>]) -> bool {
    let n = dev_items.len();
    let mut visited = vec![false; n];
    // parent[e] = (device that takes the item, item currently owned by e)
    let mut parent: Vec<Option<(usize, u32)>> = vec![None; n];
    let mut queue = VecDeque::from([start]);
    visited[start] = true;
    while let Some(x) = queue.pop_front() {
        for &i in &dev_items[x] {
            match owner[i as usize] {
                None => {
                    owner[i as usize] = Some(x as u32);
                    let mut cur = x;
                    while let Some((prev, item)) = parent[cur] {
                        owner[item as usize] = Some(prev as u32);
                        cur = prev;
                    }
                    debug_assert_eq!(cur, start);
                    return true;
                }
                Some(e) => {
                    let e = e as usize;
                    if !visited[e] {
                        visited[e] = true;
                        parent[e] = Some((x, i));
                        queue.push_back(e);
                    }
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:7000")).collect()
    }

    /// xorshift64*: a tiny deterministic PRNG for property tests.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Valid, balanced, and every device listed in shares.
    fn assert_good(r: &Ring) {
        r.validate().unwrap();
        let (lo, hi) = r.fair_share();
        let shares = r.shares();
        assert_eq!(shares.len(), r.devices.len());
        for (id, s) in &shares {
            assert!(
                *s == lo || *s == hi,
                "device {id} holds {s}, fair share is {lo}..={hi} (P={} R={} N={})",
                r.partitions(),
                r.replicas,
                r.devices.len()
            );
        }
        assert_eq!(
            shares.iter().map(|s| u64::from(s.1)).sum::<u64>(),
            r.total_slots()
        );
        assert!(r.is_balanced());
    }

    /// Add: only moves to the new device, the minimum number, at most one per partition.
    fn assert_add_minimal(old: &Ring, new: &Ring) {
        let new_id = old.next_id;
        assert_eq!(new.epoch, old.epoch + 1);
        assert_eq!(new.devices.last().unwrap().id, new_id);
        let moves = Ring::moves(old, new);
        for m in &moves {
            assert_eq!(m.to, new_id, "move between old devices: {m:?}");
        }
        let min = old.total_slots() / new.devices.len() as u64;
        assert!(moves.len() as f64 <= 1.05 * min as f64 + 1e-9);
        assert_eq!(moves.len() as u64, min);
        let mut parts: Vec<u32> = moves.iter().map(|m| m.part).collect();
        parts.dedup();
        assert_eq!(parts.len(), moves.len(), "a partition moved two replicas");
    }

    /// Remove: exactly the removed device's replicas move, onto devices not holding them.
    fn assert_remove_exact(old: &Ring, new: &Ring, id: DevId) {
        assert_eq!(new.epoch, old.epoch + 1);
        assert!(new.device(id).is_none());
        let moves = Ring::moves(old, new);
        let held = old.shares().iter().find(|s| s.0 == id).unwrap().1;
        assert_eq!(moves.len() as u32, held);
        for m in &moves {
            assert_eq!(m.from, id, "a replica of another device moved: {m:?}");
            assert!(!old.replicas_of(m.part).contains(&m.to));
        }
    }

    #[test]
    fn new_is_valid_and_balanced() {
        for pp in 0..=10 {
            for r in 1..=3u8 {
                for n in usize::from(r)..=12 {
                    let ring = Ring::new(pp, r, &addrs(n)).unwrap();
                    assert_eq!(ring.epoch, 1);
                    assert_eq!(ring.format, RING_FORMAT);
                    assert_eq!(ring.partitions(), 1 << pp);
                    assert_eq!(ring.next_id, n as u32);
                    assert_good(&ring);
                }
            }
        }
    }

    #[test]
    fn new_refuses_bad_input() {
        assert_eq!(
            Ring::new(4, 3, &addrs(2)),
            Err(RingError::TooFewDevices { have: 2, need: 3 })
        );
        let mut dup = addrs(3);
        dup.push(dup[1].clone());
        assert_eq!(
            Ring::new(4, 2, &dup),
            Err(RingError::DuplicateAddr(dup[1].clone()))
        );
        assert_eq!(
            Ring::new(21, 1, &addrs(2)),
            Err(RingError::BadPartPower(21))
        );
        assert_eq!(Ring::new(4, 0, &addrs(2)), Err(RingError::BadReplicas(0)));
        assert!(matches!(
            Ring::new(4, 1, &[String::new()]),
            Err(RingError::Invalid(_))
        ));
        assert!(Ring::new(MAX_PART_POWER, 1, &addrs(1)).is_ok());
    }

    #[test]
    fn part_power_zero_is_one_partition() {
        let ring = Ring::new(0, 2, &addrs(3)).unwrap();
        assert_eq!(ring.partitions(), 1);
        assert_eq!(ring.replicas_of(0).len(), 2);
        assert!(ring.replicas_of(1).is_empty());
        assert_good(&ring);
        let added = ring.with_device_added("new:1").unwrap();
        assert_good(&added);
        assert_add_minimal(&ring, &added);
        let removed = added.with_device_removed(ring.replicas_of(0)[0]).unwrap();
        assert_good(&removed);
        assert_eq!(
            removed.shares().iter().filter(|s| s.1 == 0).count(),
            1,
            "3 devices, 2 replicas of 1 partition: one device holds nothing but is listed"
        );
    }

    #[test]
    fn same_inputs_same_ring() {
        let a = Ring::new(8, 2, &addrs(5)).unwrap();
        let b = Ring::new(8, 2, &addrs(5)).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.with_device_added("x:1").unwrap(),
            b.with_device_added("x:1").unwrap()
        );
        assert_eq!(
            a.with_device_removed(2).unwrap(),
            b.with_device_removed(2).unwrap()
        );
        assert_eq!(a.handoff(7, &[1]), b.handoff(7, &[1]));
    }

    #[test]
    fn pairs_are_well_mixed() {
        // With 4 devices and 2 replicas every pair co-holds partitions, so a dead device's
        // re-replication reads from all survivors.
        for pp in 3..=10 {
            let ring = Ring::new(pp, 2, &addrs(4)).unwrap();
            let mut pair = [[0u32; 4]; 4];
            for p in 0..ring.partitions() {
                let row = ring.replicas_of(p);
                pair[row[0] as usize][row[1] as usize] += 1;
                pair[row[1] as usize][row[0] as usize] += 1;
            }
            for (a, partners) in pair.iter().enumerate() {
                for (b, &c) in partners.iter().enumerate() {
                    assert!(a == b || c > 0, "pp={pp}: devices {a},{b} share nothing");
                }
            }
        }
        // At scale the spread is even: each partner gets at least a third of its fair part.
        for n in 3..=12 {
            let ring = Ring::new(10, 2, &addrs(n)).unwrap();
            let mut pair = vec![vec![0u32; n]; n];
            for p in 0..ring.partitions() {
                let row = ring.replicas_of(p);
                pair[row[0] as usize][row[1] as usize] += 1;
                pair[row[1] as usize][row[0] as usize] += 1;
            }
            for (a, partners) in pair.iter().enumerate() {
                let held: u32 = partners.iter().sum();
                let fair = f64::from(held) / (n - 1) as f64;
                for (b, &c) in partners.iter().enumerate() {
                    if a != b {
                        assert!(f64::from(c) >= fair / 3.0, "n={n} {a},{b}: {c} < {fair}/3");
                    }
                }
            }
        }
    }

    #[test]
    fn add_moves_only_its_fair_share() {
        for pp in 0..=10 {
            for r in 1..=3u8 {
                for n in usize::from(r)..=11 {
                    let old = Ring::new(pp, r, &addrs(n)).unwrap();
                    let new = old.with_device_added("new:1").unwrap();
                    assert_good(&new);
                    assert_add_minimal(&old, &new);
                }
            }
        }
    }

    #[test]
    fn remove_moves_exactly_the_removed_replicas() {
        for pp in 4..=10 {
            for r in 1..=3u8 {
                for n in usize::from(r) + 1..=12 {
                    let old = Ring::new(pp, r, &addrs(n)).unwrap();
                    for id in [0, (n / 2) as u32, n as u32 - 1] {
                        let new = old.with_device_removed(id).unwrap();
                        assert_good(&new);
                        assert_remove_exact(&old, &new, id);
                        assert_eq!(new.next_id, old.next_id);
                    }
                }
            }
        }
    }

    #[test]
    fn remove_down_to_replicas_but_not_below() {
        let ring = Ring::new(6, 3, &addrs(5)).unwrap();
        let four = ring.with_device_removed(4).unwrap();
        let three = four.with_device_removed(0).unwrap();
        assert_good(&three);
        assert_remove_exact(&four, &three, 0);
        // Every device now holds every partition.
        assert!(three.shares().iter().all(|s| s.1 == 64));
        assert_eq!(
            three.with_device_removed(1),
            Err(RingError::TooFewDevices { have: 2, need: 3 })
        );
    }

    #[test]
    fn refuses_unknown_id_and_duplicate_addr() {
        let ring = Ring::new(4, 2, &addrs(3)).unwrap();
        assert_eq!(
            ring.with_device_removed(3),
            Err(RingError::UnknownDevice(3))
        );
        assert_eq!(
            ring.with_device_added(&addrs(3)[2]),
            Err(RingError::DuplicateAddr(addrs(3)[2].clone()))
        );
        assert!(matches!(
            ring.with_device_added(""),
            Err(RingError::Invalid(_))
        ));
        let two = Ring::new(4, 2, &addrs(2)).unwrap();
        assert_eq!(
            two.with_device_removed(1),
            Err(RingError::TooFewDevices { have: 1, need: 2 })
        );
        let removed = ring
            .with_device_added("d:1")
            .unwrap()
            .with_device_removed(1)
            .unwrap();
        assert_eq!(
            removed.with_device_removed(1),
            Err(RingError::UnknownDevice(1))
        );
    }

    #[test]
    fn ids_are_never_reused() {
        let ring = Ring::new(5, 2, &addrs(3)).unwrap();
        let added = ring.with_device_added("d:3").unwrap();
        assert_eq!(added.device_by_addr("d:3").unwrap().id, 3);
        let removed = added.with_device_removed(3).unwrap();
        assert_eq!(removed.next_id, 4);
        // The same address comes back as a new device.
        let back = removed.with_device_added("d:3").unwrap();
        assert_eq!(back.device_by_addr("d:3").unwrap().id, 4);
        assert_eq!(back.device(4).unwrap().addr, "d:3");
        assert!(back.device(3).is_none());
        assert_eq!(back.epoch, 4);
        assert_good(&back);
    }

    /// The acceptance property: any sequence of adds and removes keeps the ring valid and
    /// balanced, with minimal movement at every step.
    #[test]
    fn random_adds_and_removes_stay_balanced_and_minimal() {
        let mut steps = 0;
        for pp in 4..=10u8 {
            for r in 1..=3u8 {
                for seed in 1..=3u64 {
                    let mut rng = Rng(seed * 0x9E37_79B9 + u64::from(pp) * 131 + u64::from(r));
                    let n0 = usize::from(r) + rng.below(12 - usize::from(r) + 1);
                    let mut ring = Ring::new(pp, r, &addrs(n0)).unwrap();
                    assert_good(&ring);
                    for step in 0..25 {
                        let n = ring.devices.len();
                        let add = n <= usize::from(r) || (n < 12 && rng.below(2) == 0);
                        let next = if add {
                            let next = ring.with_device_added(&format!("s{step}:{seed}")).unwrap();
                            assert_add_minimal(&ring, &next);
                            next
                        } else {
                            let id = ring.devices[rng.below(n)].id;
                            let next = ring.with_device_removed(id).unwrap();
                            assert_remove_exact(&ring, &next, id);
                            next
                        };
                        assert_good(&next);
                        ring = next;
                        steps += 1;
                    }
                }
            }
        }
        assert_eq!(steps, 7 * 3 * 3 * 25);
    }

    #[test]
    fn flipping_move_by_move_reaches_the_new_ring() {
        let old = Ring::new(7, 2, &addrs(4)).unwrap();
        for new in [
            old.with_device_added("n:1").unwrap(),
            old.with_device_removed(2).unwrap(),
        ] {
            let moves = Ring::moves(&old, &new);
            assert!(!moves.is_empty());
            let mut cur = Ring::staging(&old, &new);
            cur.validate().unwrap();
            for m in &moves {
                let next = cur.with_move_applied(m);
                assert_eq!(next.epoch, cur.epoch, "applying a move keeps the epoch");
                next.validate().unwrap();
                // Stale (already applied) moves are no-ops.
                assert_eq!(next.with_move_applied(m), next);
                cur = next;
            }
            assert_eq!(cur.assignment, new.assignment);
            assert!(Ring::moves(&cur, &new).is_empty());
            let mut bulk = Ring::staging(&old, &new);
            assert!(moves.iter().all(|m| bulk.apply_move(m)));
            assert_eq!(bulk.assignment, new.assignment);
        }
        assert!(Ring::moves(&old, &old).is_empty());
        let out_of_range = Move {
            part: 1 << 7,
            replica: 0,
            from: 0,
            to: 1,
        };
        assert_eq!(old.with_move_applied(&out_of_range), old);
    }

    #[test]
    fn handoff_is_deterministic_legal_and_spread() {
        let ring = Ring::new(8, 2, &addrs(6)).unwrap();
        let mut used = HashSet::new();
        for p in 0..ring.partitions() {
            let row = ring.replicas_of(p).to_vec();
            let h = ring.handoff(p, &[row[0]]).unwrap();
            assert!(!row.contains(&h));
            assert_eq!(ring.handoff(p, &[row[0]]), Some(h));
            // exclude order does not matter
            let h2 = ring.handoff(p, &[h, row[0]]).unwrap();
            assert_eq!(ring.handoff(p, &[row[0], h]), Some(h2));
            assert!(h2 != h && !row.contains(&h2));
            if row[0] == 0 {
                used.insert(h);
            }
        }
        // Partitions of device 0 hand off to every device but 0.
        assert_eq!(used.len(), 5);
        // Nothing left: all devices excluded or holding.
        let all: Vec<DevId> = ring.devices.iter().map(|d| d.id).collect();
        assert_eq!(ring.handoff(0, &all), None);
        let small = Ring::new(3, 2, &addrs(2)).unwrap();
        assert_eq!(small.handoff(0, &[]), None);
    }

    #[test]
    fn handoff_prefers_least_loaded() {
        // Device 4 is new and empty in the staging ring: it is preferred everywhere.
        let old = Ring::new(6, 2, &addrs(4)).unwrap();
        let new = old.with_device_added("n:1").unwrap();
        let staging = Ring::staging(&old, &new);
        for p in 0..staging.partitions() {
            assert_eq!(staging.handoff(p, &[]), Some(4));
        }
    }

    #[test]
    fn validate_catches_broken_rings() {
        let good = Ring::new(3, 2, &addrs(3)).unwrap();
        good.validate().unwrap();
        let broken = |f: &dyn Fn(&mut Ring)| {
            let mut r = good.clone();
            f(&mut r);
            r.validate().unwrap_err()
        };
        assert!(matches!(
            broken(&|r| r.assignment[2][1] = r.assignment[2][0]),
            RingError::Invalid(_)
        ));
        assert!(matches!(
            broken(&|r| r.assignment[0][0] = 9),
            RingError::Invalid(_)
        ));
        assert!(matches!(
            broken(&|r| {
                r.assignment.pop();
            }),
            RingError::Invalid(_)
        ));
        assert!(matches!(
            broken(&|r| r.assignment[1].push(2)),
            RingError::Invalid(_)
        ));
        assert!(matches!(
            broken(&|r| r.devices.swap(0, 1)),
            RingError::Invalid(_)
        ));
        assert!(matches!(broken(&|r| r.next_id = 2), RingError::Invalid(_)));
        assert_eq!(
            broken(&|r| r.devices[1].addr = r.devices[0].addr.clone()),
            RingError::DuplicateAddr(addrs(1)[0].clone())
        );
        assert_eq!(broken(&|r| r.replicas = 0), RingError::BadReplicas(0));
        assert_eq!(broken(&|r| r.part_power = 21), RingError::BadPartPower(21));
        assert_eq!(
            broken(&|r| r.format = 2),
            RingError::UnsupportedFormat { found: 2 }
        );
        assert_eq!(
            broken(&|r| {
                r.devices.truncate(1);
            }),
            RingError::TooFewDevices { have: 1, need: 2 }
        );
        // A broken ring is refused as input to changes too.
        let mut bad = good.clone();
        bad.assignment[0][0] = 9;
        assert!(bad.with_device_added("x:1").is_err());
        assert!(bad.with_device_removed(0).is_err());
    }

    #[test]
    fn json_round_trip_and_refusals() {
        let ring = Ring::new(5, 2, &addrs(4))
            .unwrap()
            .with_device_removed(1)
            .unwrap();
        let json = ring.to_json();
        assert_eq!(Ring::from_json(&json).unwrap(), ring);

        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["format"] = 2.into();
        // Another format is refused even if the rest has another shape.
        v["assignment"] = "something new".into();
        assert_eq!(
            Ring::from_json(&v.to_string()),
            Err(RingError::UnsupportedFormat { found: 2 })
        );

        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["assignment"][0][1] = v["assignment"][0][0].clone();
        assert!(matches!(
            Ring::from_json(&v.to_string()),
            Err(RingError::Invalid(_))
        ));
        assert!(matches!(
            Ring::from_json("{not json"),
            Err(RingError::Invalid(_))
        ));
        assert!(matches!(
            Ring::from_json(r#"{"format":1}"#),
            Err(RingError::Invalid(_))
        ));
    }

    /// A hand-built ring where no movement-minimal removal exists: all of device 3's
    /// partitions are shared with device 0, so only devices 1 and 2 can take them, and they
    /// cannot take all 8 without going over their fair share. The fallback still yields a
    /// valid, balanced ring, moving as little extra as it can.
    #[test]
    fn pathological_remove_falls_back_but_stays_balanced() {
        let mut ring = Ring::new(4, 2, &addrs(4)).unwrap();
        for p in 0..16usize {
            ring.assignment[p] = if p < 8 { vec![0, 3] } else { vec![1, 2] };
        }
        assert_good(&ring);
        let new = ring.with_device_removed(3).unwrap();
        assert_good(&new);
        let moves = Ring::moves(&ring, &new);
        assert_eq!(moves.iter().filter(|m| m.from == 3).count(), 8);
        // Device 0 must gain 2 (8 -> 10) and can only get them from devices 1 and 2.
        assert_eq!(moves.len(), 10);
    }

    /// An unbalanced input (not built by this module) comes out balanced after a change.
    #[test]
    fn unbalanced_input_is_repaired() {
        let mut ring = Ring::new(4, 1, &addrs(3)).unwrap();
        for row in &mut ring.assignment {
            row[0] = 0;
        }
        ring.validate().unwrap();
        assert!(!ring.is_balanced());
        let added = ring.with_device_added("x:1").unwrap();
        assert_good(&added);
        let removed = ring.with_device_removed(2).unwrap();
        assert_good(&removed);
    }

    #[test]
    fn shares_list_every_device() {
        let ring = Ring::new(0, 1, &addrs(5)).unwrap();
        let shares = ring.shares();
        assert_eq!(shares.len(), 5);
        assert_eq!(shares.iter().map(|s| s.1).sum::<u32>(), 1);
        assert_eq!(ring.fair_share(), (0, 1));
        assert_good(&ring);
    }

    /// Brute force: is there a balanced removal of `id` that moves only its replicas?
    fn exact_remove_exists(ring: &Ring, id: DevId) -> bool {
        fn place(
            k: usize,
            items: &[&[DevId]],
            rest: &[DevId],
            load: &mut [u32],
            lo: u32,
            hi: u32,
        ) -> bool {
            let Some(row) = items.get(k) else {
                return load.iter().all(|&l| l >= lo && l <= hi);
            };
            for j in 0..rest.len() {
                if !row.contains(&rest[j]) && load[j] < hi {
                    load[j] += 1;
                    if place(k + 1, items, rest, load, lo, hi) {
                        return true;
                    }
                    load[j] -= 1;
                }
            }
            false
        }
        let shares = ring.shares();
        let rest: Vec<DevId> = shares.iter().map(|s| s.0).filter(|&d| d != id).collect();
        let mut load: Vec<u32> = shares.iter().filter(|s| s.0 != id).map(|s| s.1).collect();
        let n = rest.len() as u64;
        let lo = (ring.total_slots() / n) as u32;
        let hi = lo + u32::from(!ring.total_slots().is_multiple_of(n));
        let items: Vec<&[DevId]> = ring
            .assignment
            .iter()
            .filter(|row| row.contains(&id))
            .map(|row| row.as_slice())
            .collect();
        place(0, &items, &rest, &mut load, lo, hi)
    }

    /// In tiny rings a movement-minimal removal sometimes does not exist at all; check by
    /// brute force that the fallback is taken exactly then (the assignment search is
    /// complete), and that adds stay minimal even there.
    #[test]
    fn tiny_rings_fall_back_only_when_they_must() {
        let (mut exact, mut fallback) = (0, 0);
        for pp in 2..=3u8 {
            for r in 2..=4u8 {
                for seed in 1..=20u64 {
                    let mut rng = Rng(seed * 0x2545_F491 + u64::from(pp) * 7 + u64::from(r));
                    let mut ring = Ring::new(pp, r, &addrs(usize::from(r) + 1)).unwrap();
                    for step in 0..20 {
                        let n = ring.devices.len();
                        if n <= usize::from(r) || (n < 8 && rng.below(2) == 0) {
                            let next = ring.with_device_added(&format!("t{step}")).unwrap();
                            assert_add_minimal(&ring, &next);
                            assert_good(&next);
                            ring = next;
                        } else {
                            let id = ring.devices[rng.below(n)].id;
                            let next = ring.with_device_removed(id).unwrap();
                            assert_good(&next);
                            let moves = Ring::moves(&ring, &next);
                            let held = ring.shares().iter().find(|s| s.0 == id).unwrap().1;
                            assert!(moves.len() as u32 >= held);
                            let minimal = moves.iter().all(|m| m.from == id);
                            assert_eq!(minimal, exact_remove_exists(&ring, id));
                            if minimal {
                                exact += 1;
                            } else {
                                fallback += 1;
                            }
                            ring = next;
                        }
                    }
                }
            }
        }
        assert!(
            exact > 0 && fallback > 0,
            "exact {exact} fallback {fallback}"
        );
    }

    /// Longer random runs, also with 4 replicas and up to 40 devices: the fallback is never
    /// needed from part power 4 up.
    #[test]
    fn soak_random_changes() {
        for pp in 4..=10u8 {
            for r in 1..=4u8 {
                for seed in 1..=40u64 {
                    let mut rng = Rng(seed * 0x9E37_79B9 + u64::from(pp) * 131 + u64::from(r));
                    let n0 = usize::from(r) + rng.below(40 - usize::from(r) + 1);
                    let mut ring = Ring::new(pp, r, &addrs(n0)).unwrap();
                    for step in 0..40 {
                        let n = ring.devices.len();
                        let next = if n <= usize::from(r) || (n < 40 && rng.below(2) == 0) {
                            let next = ring.with_device_added(&format!("s{step}")).unwrap();
                            assert_add_minimal(&ring, &next);
                            next
                        } else {
                            let id = ring.devices[rng.below(n)].id;
                            let next = ring.with_device_removed(id).unwrap();
                            assert_remove_exact(&ring, &next, id);
                            next
                        };
                        assert_good(&next);
                        ring = next;
                    }
                }
            }
        }
    }

    #[test]
    fn large_ring_is_fast_enough() {
        // The largest ring: build, add and remove must stay practical.
        let ring = Ring::new(MAX_PART_POWER, 2, &addrs(6)).unwrap();
        let added = ring.with_device_added("big:1").unwrap();
        assert_add_minimal(&ring, &added);
        let removed = added.with_device_removed(0).unwrap();
        assert_remove_exact(&added, &removed, 0);
        assert!(removed.is_balanced());
    }
}
