//! Admission: which connection may hold a thread. A thread is something a client must
//! *earn* by doing useful work, so reaching the connection cap does not refuse a newcomer
//! while unproductive connections exist: the least productive one is evicted instead.
//!
//! Every live connection has a [`Slot`] in the [`Registry`]: its source address, its socket
//! (so the accept thread can `shutdown(Both)` it, which wakes the blocked read of its
//! thread) and one atomic word holding its [`Phase`] and since when it is in it. The
//! connection thread updates the word at phase changes only (never per byte); the accept
//! thread reads the words when the cap is reached and evicts with a compare-and-swap, so a
//! connection that has just started handling a request can never be evicted (its own CAS
//! to [`Phase::Busy`] and the evicting CAS exclude each other).
//!
//! The rule at the cap, for a newcomer from source `S` (IPv4 address, or IPv6 /64):
//! * `share = max(cap / number of sources holding or asking for a slot, 1)`;
//! * if `S` already holds `share` slots or more, the victim is `S`'s own least productive
//!   connection (none evictable: the newcomer is refused): one host cannot hold more than
//!   its share of the slots once they are all taken;
//! * otherwise the victim is the least productive connection of the sources above their
//!   share, or, when none of those can be evicted, of everyone;
//! * "least productive" = in its handshake, waiting for a head, or idle on keep-alive the
//!   longest; a connection still reading a body comes after all of those; a connection
//!   whose request is being handled (or a log stream) is never evicted.

use std::collections::HashMap;
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Evicted connections whose threads have not ended yet, beyond the cap, before newcomers
/// are refused: eviction wakes a thread at once, but it needs a moment to unwind, and the
/// number of threads must stay bounded whatever the rate of eviction.
pub const EVICTION_SLACK: usize = 64;

/// At most this many connection slots are allocated up front (8 bytes each); a larger
/// `--max-connections` grows the list as connections come.
const SLOTS_PREALLOCATED: usize = 1 << 16;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// TCP accepted, TLS handshake in progress.
    Handshake = 0,
    /// Waiting for (the rest of) a request head.
    Head = 1,
    /// Kept alive between requests, nothing received yet.
    Idle = 2,
    /// Reading a request body.
    Body = 3,
    /// A request is being handled, answered, or streamed: never evicted.
    Busy = 4,
    /// Shut down by the accept thread; its thread is ending.
    Evicted = 5,
}

impl Phase {
    pub const EVICTABLE: [Phase; 4] = [Phase::Handshake, Phase::Head, Phase::Idle, Phase::Body];

    fn from_bits(b: u64) -> Phase {
        match b {
            0 => Phase::Handshake,
            1 => Phase::Head,
            2 => Phase::Idle,
            3 => Phase::Body,
            4 => Phase::Busy,
            _ => Phase::Evicted,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Phase::Handshake => "handshake",
            Phase::Head => "head",
            Phase::Idle => "idle",
            Phase::Body => "body",
            Phase::Busy => "busy",
            Phase::Evicted => "evicted",
        }
    }

    /// Eviction order: lower first (`None`: never evicted).
    fn eviction_class(self) -> Option<u8> {
        match self {
            Phase::Handshake | Phase::Head | Phase::Idle => Some(0),
            Phase::Body => Some(1),
            Phase::Busy | Phase::Evicted => None,
        }
    }
}

const PHASE_SHIFT: u32 = 56;
const SINCE_MASK: u64 = (1 << PHASE_SHIFT) - 1;

fn pack(phase: Phase, since_ms: u64) -> u64 {
    ((phase as u64) << PHASE_SHIFT) | (since_ms & SINCE_MASK)
}

fn unpack(word: u64) -> (Phase, u64) {
    (Phase::from_bits(word >> PHASE_SHIFT), word & SINCE_MASK)
}

/// The fair-share key of an address: IPv4 as is, IPv6 by its /64 (one host or one site
/// easily owns a whole /64).
pub fn source_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            None => ((u128::from(v6) >> 64) << 64) | (1 << 63),
        },
    }
}

/// One live connection.
pub struct Slot {
    word: AtomicU64,
    source: u128,
    /// The client's address, as `accept` returned it.
    ip: IpAddr,
    sock: TcpStream,
    epoch: Instant,
}

impl Slot {
    /// The connection's socket, for its own thread's reads and writes.
    pub fn sock(&self) -> &TcpStream {
        &self.sock
    }

    /// The client's address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(SINCE_MASK)
    }

    pub fn phase(&self) -> Phase {
        unpack(self.word.load(Ordering::Acquire)).0
    }

    /// Moves to `phase`, since now. False when the connection was evicted: its thread must
    /// stop (entering [`Phase::Busy`] and being evicted exclude each other).
    pub fn enter(&self, phase: Phase) -> bool {
        let new = pack(phase, self.now_ms());
        let mut cur = self.word.load(Ordering::Acquire);
        loop {
            if unpack(cur).0 == Phase::Evicted {
                return false;
            }
            match self.word.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }
}

/// What the accept thread decided for a newcomer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Under the cap.
    Free,
    /// Admitted after evicting a connection that was in this phase.
    Evicted(Phase),
    /// Refused: every slot is busy, or this source's share is busy.
    Refused(Refusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot holds a request being handled.
    Busy,
    /// The source holds its share and none of its connections can be evicted.
    Share,
    /// Too many evicted connections are still unwinding.
    Unwinding,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Refusal::Busy, Refusal::Share, Refusal::Unwinding];

    pub fn name(self) -> &'static str {
        match self {
            Refusal::Busy => "busy",
            Refusal::Share => "share",
            Refusal::Unwinding => "unwinding",
        }
    }
}

/// The live connections.
pub struct Registry {
    cap: usize,
    epoch: Instant,
    slots: Mutex<Vec<Arc<Slot>>>,
}

/// One connection as seen by the eviction rule.
#[derive(Debug, Clone, Copy)]
struct Seen {
    index: usize,
    source: u128,
    phase: Phase,
    since: u64,
    word: u64,
}

impl Registry {
    pub fn new(cap: usize) -> Registry {
        // Allocated whole at startup: grown during a burst, the list would be moved to the
        // top of the heap and, live for ever, keep glibc from giving back the memory below.
        let room = cap.max(1).saturating_add(EVICTION_SLACK).min(SLOTS_PREALLOCATED);
        Registry {
            cap: cap.max(1),
            epoch: Instant::now(),
            slots: Mutex::new(Vec::with_capacity(room)),
        }
    }

    /// The connection cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Connections holding a slot (evicted ones that are still unwinding excluded).
    pub fn open(&self) -> usize {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.iter().filter(|s| s.phase() != Phase::Evicted).count()
    }

    /// Decides whether `sock` from `ip` gets a slot; on admission returns its slot, to be
    /// handed to the connection thread and given back with [`Registry::release`].
    pub fn admit(&self, sock: TcpStream, ip: IpAddr) -> (Admit, Option<Arc<Slot>>) {
        let source = source_key(ip);
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut outcome = Admit::Free;
        let unwinding = slots.iter().filter(|s| s.phase() == Phase::Evicted).count();
        if slots.len() - unwinding >= self.cap {
            if unwinding >= EVICTION_SLACK {
                return (Admit::Refused(Refusal::Unwinding), None);
            }
            // A connection may change phase between the look and the CAS: look again.
            let mut decided = None;
            for _ in 0..4 {
                let seen: Vec<Seen> = slots
                    .iter()
                    .enumerate()
                    .map(|(index, s)| {
                        let word = s.word.load(Ordering::Acquire);
                        let (phase, since) = unpack(word);
                        Seen { index, source: s.source, phase, since, word }
                    })
                    .filter(|s| s.phase != Phase::Evicted)
                    .collect();
                match choose_victim(&seen, source, self.cap) {
                    Err(refusal) => {
                        decided = Some(Admit::Refused(refusal));
                        break;
                    }
                    Ok(v) => {
                        let slot = &slots[v.index];
                        let evicted = pack(Phase::Evicted, v.since);
                        if slot
                            .word
                            .compare_exchange(v.word, evicted, Ordering::AcqRel, Ordering::Acquire)
                            .is_ok()
                        {
                            let _ = slot.sock.shutdown(Shutdown::Both);
                            decided = Some(Admit::Evicted(v.phase));
                            break;
                        }
                    }
                }
            }
            match decided {
                Some(Admit::Refused(r)) => return (Admit::Refused(r), None),
                Some(a) => outcome = a,
                None => return (Admit::Refused(Refusal::Busy), None),
            }
        }
        let slot = Arc::new(Slot {
            word: AtomicU64::new(pack(Phase::Handshake, 0)),
            source,
            ip,
            sock,
            epoch: self.epoch,
        });
        slot.enter(Phase::Handshake);
        slots.push(slot.clone());
        (outcome, Some(slot))
    }

    /// Gives a slot back when its connection thread ends.
    pub fn release(&self, slot: &Arc<Slot>) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = slots.iter().position(|s| Arc::ptr_eq(s, slot)) {
            slots.swap_remove(i);
        }
    }
}

/// The eviction rule of the module doc over a snapshot of the live connections.
fn choose_victim(seen: &[Seen], newcomer: u128, cap: usize) -> Result<Seen, Refusal> {
    let mut held: HashMap<u128, usize> = HashMap::new();
    for s in seen {
        *held.entry(s.source).or_insert(0) += 1;
    }
    let own = held.get(&newcomer).copied().unwrap_or(0);
    let sources = held.len() + usize::from(own == 0);
    let share = (cap / sources).max(1);
    let best = |filter: &dyn Fn(&Seen) -> bool| {
        seen.iter()
            .filter(|s| filter(s))
            .filter_map(|s| s.phase.eviction_class().map(|c| (c, s.since, s)))
            .min_by_key(|(c, since, _)| (*c, *since))
            .map(|(_, _, s)| *s)
    };
    if own >= share {
        // Alone at the cap with nothing evictable, the source is simply busy.
        let refusal = if held.len() > 1 { Refusal::Share } else { Refusal::Busy };
        return best(&|s| s.source == newcomer).ok_or(refusal);
    }
    best(&|s| held.get(&s.source).is_some_and(|n| *n > share))
        .or_else(|| best(&|_| true))
        .ok_or(Refusal::Busy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(list: &[(u128, Phase, u64)]) -> Vec<Seen> {
        list.iter()
            .enumerate()
            .map(|(index, &(source, phase, since))| Seen {
                index,
                source,
                phase,
                since,
                word: pack(phase, since),
            })
            .collect()
    }

    #[test]
    fn the_oldest_unproductive_connection_goes_first_and_busy_ones_never() {
        let s = seen(&[
            (1, Phase::Busy, 0),
            (2, Phase::Idle, 50),
            (3, Phase::Handshake, 10),
            (4, Phase::Body, 1),
            (5, Phase::Head, 30),
        ]);
        assert_eq!(choose_victim(&s, 9, 5).unwrap().index, 2);
        // A body being read comes after every handshake, head and idle connection.
        let s = seen(&[(1, Phase::Busy, 0), (2, Phase::Body, 50), (3, Phase::Body, 10)]);
        assert_eq!(choose_victim(&s, 9, 3).unwrap().index, 2);
        let s = seen(&[(1, Phase::Busy, 0), (2, Phase::Busy, 1)]);
        assert_eq!(choose_victim(&s, 9, 2).unwrap_err(), Refusal::Busy);
    }

    #[test]
    fn a_source_over_its_share_pays_for_newcomers() {
        // Source 1 holds 3 of 4 slots, its connections are the youngest; source 2's idle
        // connection is the oldest. A newcomer from source 3 (share = 4/3 = 1) evicts from
        // source 1, the one above its share.
        let s = seen(&[
            (1, Phase::Idle, 90),
            (1, Phase::Handshake, 80),
            (1, Phase::Idle, 95),
            (2, Phase::Idle, 5),
        ]);
        assert_eq!(choose_victim(&s, 3, 4).unwrap().index, 1);
        // Source 1 asking for more evicts its own, even with an older one elsewhere.
        assert_eq!(choose_victim(&s, 1, 4).unwrap().index, 1);
        // ... and is refused when all of its own are busy.
        let s = seen(&[(1, Phase::Busy, 9), (1, Phase::Busy, 8), (2, Phase::Idle, 1)]);
        assert_eq!(choose_victim(&s, 1, 3).unwrap_err(), Refusal::Share);
        let s = seen(&[(1, Phase::Busy, 9), (1, Phase::Busy, 8)]);
        assert_eq!(choose_victim(&s, 1, 2).unwrap_err(), Refusal::Busy);
        // A source under its share takes anyone's oldest when no source is above its share.
        let s = seen(&[(1, Phase::Idle, 9), (2, Phase::Idle, 1)]);
        assert_eq!(choose_victim(&s, 1, 4).unwrap().index, 1);
    }

    #[test]
    fn ipv6_sources_share_by_slash_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let v4: IpAddr = "127.0.0.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(source_key(v4), source_key(mapped));
        assert_ne!(source_key(v4), source_key("::".parse().unwrap()));
    }

    #[test]
    fn phase_words_round_trip() {
        for p in [Phase::Handshake, Phase::Head, Phase::Idle, Phase::Body, Phase::Busy] {
            assert_eq!(unpack(pack(p, 12345)), (p, 12345));
        }
    }
}
