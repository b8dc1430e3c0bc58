//! The key cache in front of every store (`kes-azure-keystore.md` §7).
//!
//! Owns: parsed keys by name, each built from all its stored versions by a [`ParseFn`]
//! the layer above supplies (in production `api::parse_key`, which decodes with `crypto`;
//! this module never decodes a value itself), the single-flight miss path, the writes that
//! change what a cached entry should hold ([`KeyCache::create`], [`KeyCache::delete`],
//! [`KeyCache::add_version`], [`KeyCache::set_version_enabled`]), the offline flag, and one background thread
//! (`kes-cache`) that runs the four periodic tasks of §7: full flush (`any`), unused sweep
//! (`unused / 2`), offline flush (`offline`) and the offline probe. Must not: cache errors,
//! call the store on a miss while offline, or keep raw stored values (they are dropped, and
//! so wiped, right after parsing).
//!
//! Miss path, in order: look up; if offline fail at once; join the in-flight load of that
//! name or start one; the starter re-checks the cache, reads every version from the store
//! ([`KeyStore::versions`], one call), parses, inserts with
//! `used = true`, then hands its result (value or error) to every thread that joined.
//! Hits set `used = true` under a read lock only. [`KeyCache::forget`] (and every write
//! through the cache) detaches an in-flight load of the name: later lookups start a new
//! read instead of joining one that may have read the store before the write.
//!
//! With a [`SealedCache`] (`cache.persist`), every value read from the store is also sealed
//! to disk; a miss while offline (or a read that finds the store unreachable) is answered
//! from a fresh sealed copy instead of failing; a key the store reports missing loses its
//! copy; and a `kes-recheck` thread re-reads every sealed name (deleted: copy and entry
//! removed; changed: resealed and replaced) at an online start, when the store is reachable
//! again, and every [`recheck_interval`] while it stays reachable, one read per
//! [`RECHECK_READ_GAP`]. A pass that meets any failure other than "not found" stops there
//! and deletes nothing more; the next one starts [`RECHECK_RETRY_AFTER`] later (or as soon
//! as the store returns).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use super::sealed::{SealedCache, SealedInfo};
use super::{KeyStore, MAX_VERSIONS, StoreError, StoredVersion};
use log::Level;

/// Builds the value cached for one key from all its stored versions (never empty, at most
/// [`MAX_VERSIONS`]; the first is upstream's key). Supplied by the layer that knows the
/// stored formats: `api::parse_key` in production, a stand-in in tests. The error says
/// what is malformed and never contains key material.
pub type ParseFn<K> = fn(&[StoredVersion]) -> Result<K, &'static str>;

/// How often [`KeyCache::new`] probes the store (§7: fixed at 10 s upstream).
pub const OFFLINE_PROBE_INTERVAL: Duration = Duration::from_secs(10);

/// Deadline of one probe; upstream gives `Status()` the same 10 s.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Name of the background thread, as `ps -T` and panics show it.
const THREAD_NAME: &str = "kes-cache";

/// Stack of the background thread. Its deepest call is the store probe, which runs the same
/// TLS client code as a connection thread, so it gets the same 256 KiB budget; mlockall
/// locks every stack in full (STACK.md §3.2), so the std 2 MiB default would waste RAM.
const THREAD_STACK: usize = 256 * 1024;

/// Shortest period a task runs at. A configured `1ns` would otherwise make the thread spin;
/// no one needs keys flushed more often than this.
const MIN_PERIOD: Duration = Duration::from_millis(10);

/// Deadline of one store read during a re-check of the sealed copies.
const RECHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// Name of the thread that re-checks the sealed copies once the store is reachable.
const RECHECK_THREAD_NAME: &str = "kes-recheck";

/// Longest time between two periodic re-checks while the store stays reachable, whatever
/// `max_age` is: a key deleted in the store behind this server's back (portal, `az`,
/// another KES) loses its sealed copy within a day, so a restart during a later outage
/// cannot serve it.
pub const RECHECK_MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Pause between two store reads of one re-check pass: at most 20 reads a second, so that
/// 10,000 sealed keys take about 8 minutes and a twentieth of Key Vault's limit for secret
/// reads (4,000 per vault and 10 s, `azure-rest.md` §13), leaving the rest to the requests
/// this and other servers make.
pub const RECHECK_READ_GAP: Duration = Duration::from_millis(50);

/// Wait before the next pass after one stopped on a failure other than "not found" (a
/// throttled read the client's own `Retry-After` handling could not get through, an
/// authorization error, an outage): a store that refuses is not asked again at every tick.
/// The store's return (the probe) starts one sooner.
pub const RECHECK_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How often the sealed copies are re-checked while the store stays reachable: a quarter
/// of `max_age`, the age at which a key in use is resealed anyway, so a copy of a key that
/// still exists (used or not) is confirmed and resealed well before it goes stale; at most
/// [`RECHECK_MAX_INTERVAL`], at least [`MIN_PERIOD`].
pub fn recheck_interval(max_age: Duration) -> Duration {
    (max_age / 4).clamp(MIN_PERIOD, RECHECK_MAX_INTERVAL)
}

/// How long `shutdown` waits for the thread to leave. It only stays longer when it is inside
/// a probe (bounded by [`PROBE_TIMEOUT`]); then it is left to finish on its own, holding
/// nothing but its share of the cache state, so a SIGHUP reload is never held up by a
/// hanging store.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// How long keys stay cached (`cache.expiry.*` of the config file, with our documented
/// defaults, spec DECISION §3.3; `config` maps the YAML onto it). Zero disables a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Every entry is dropped this often, used or not.
    pub any: Duration,
    /// An entry not used for this long is dropped (swept every half period).
    pub unused: Duration,
    /// While the store is unreachable, entries are kept this long instead (0: offline
    /// caching off, the two expiries above keep running).
    pub offline: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            any: Duration::from_secs(5 * 60),
            unused: Duration::from_secs(30),
            offline: Duration::ZERO,
        }
    }
}

/// Why a lookup failed. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheError {
    /// The store failed, or the cache is offline (`Unreachable`), or the key does not exist.
    Store(StoreError),
    /// The stored value is not a key (`502 failed to read key`); what the [`ParseFn`] said.
    Format(&'static str),
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::Store(e) => e.fmt(f),
            CacheError::Format(e) => write!(f, "stored key is malformed: {e}"),
        }
    }
}

impl From<StoreError> for CacheError {
    fn from(e: StoreError) -> Self {
        CacheError::Store(e)
    }
}

/// Counters since the cache was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups not in the cache (including those that then waited on another's load, and
    /// those refused at once while offline).
    pub misses: u64,
    /// `KeyStore::get` calls made by the cache.
    pub backend_reads: u64,
    /// Time spent in those calls, in microseconds.
    pub backend_read_micros: u64,
    /// Re-checks of the sealed copies, when `cache.persist` is on.
    pub recheck: RecheckStats,
}

/// What the re-checks of the sealed copies did since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecheckStats {
    /// Passes that read every sealed name.
    pub passes: u64,
    /// Passes stopped by a store failure (nothing deleted after it).
    pub stopped: u64,
    /// Keys found current (resealed when changed or due).
    pub current: u64,
    /// Sealed copies removed because the store no longer has the key.
    pub removed: u64,
    /// When the last complete pass ended.
    pub last: Option<SystemTime>,
}

fn offline_error() -> StoreError {
    StoreError::Unreachable("cache is in offline mode".to_string())
}

// Every critical section below leaves its data consistent at each step (one map call, or a
// flag store), so a panic elsewhere while a lock was held does not make the data unusable:
// poisoning is ignored rather than spread to every request thread.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Entry<K> {
    key: Arc<K>,
    /// When the store was read for this entry (see [`KeyCache::refresh`]).
    loaded: Instant,
    /// Set by every hit, cleared by every unused sweep.
    used: AtomicBool,
}

struct Entries<K> {
    map: HashMap<String, Entry<K>>,
    /// Bumped by every `remove`. A load that started before a removal must not insert what
    /// it read, or a key deleted through this node could come back from a stale read.
    removals: u64,
    /// False without a background thread (spawn failed, or after `shutdown`): nothing would
    /// ever expire, so the cache stays a single-flight pass-through instead.
    enabled: bool,
}

type LoadResult<K> = Result<Arc<K>, CacheError>;

/// One in-progress load of a name, shared by the thread doing it and those waiting for it.
struct Flight<K> {
    state: Mutex<FlightState<K>>,
    done: Condvar,
}

struct FlightState<K> {
    result: Option<LoadResult<K>>,
    waiters: usize,
}

impl<K> Flight<K> {
    fn new() -> Flight<K> {
        Flight { state: Mutex::new(FlightState { result: None, waiters: 0 }), done: Condvar::new() }
    }

    fn publish(&self, result: LoadResult<K>) {
        lock(&self.state).result = Some(result);
        self.done.notify_all();
    }

    /// The loader's result, or `Unreachable` if `deadline` passes first (the loader is held
    /// to its own deadline; this caller's may be shorter).
    fn wait(&self, deadline: Instant) -> LoadResult<K> {
        let mut state = lock(&self.state);
        state.waiters += 1;
        loop {
            if let Some(result) = &state.result {
                return result.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                state.waiters -= 1;
                return Err(CacheError::Store(StoreError::Unreachable(
                    "timed out waiting for the key store".to_string(),
                )));
            }
            state =
                self.done.wait_timeout(state, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// Finishes a flight when the loading thread leaves `get`, by return or by unwinding, so
/// waiters are never stranded. Order matters: the entry was inserted before this runs, the
/// flight leaves the map next, waiters are woken last. A later miss that finds no flight
/// therefore finds the entry on its re-check.
struct Loader<'a, K> {
    shared: &'a Shared<K>,
    name: &'a str,
    flight: Arc<Flight<K>>,
    result: Option<LoadResult<K>>,
}

impl<K> Drop for Loader<'_, K> {
    fn drop(&mut self) {
        let result = self.result.take().unwrap_or_else(|| {
            Err(CacheError::Store(StoreError::Failed("key cache: loading the key panicked".into())))
        });
        {
            let mut flights = lock(&self.shared.flights);
            if flights.get(self.name).is_some_and(|f| Arc::ptr_eq(f, &self.flight)) {
                flights.remove(self.name);
            }
        }
        self.flight.publish(result);
    }
}

/// Stop request and exit notice between the handles and the background thread.
struct Control {
    stop: bool,
    exited: bool,
}

/// Everything the background thread shares with the handles. The thread holds an `Arc` of
/// this, never of [`KeyCache`], so dropping the last `KeyCache` can stop it.
struct Shared<K> {
    store: Arc<dyn KeyStore>,
    config: CacheConfig,
    parse: ParseFn<K>,
    entries: RwLock<Entries<K>>,
    flights: Mutex<HashMap<String, Arc<Flight<K>>>>,
    offline: AtomicBool,
    hits: AtomicU64,
    misses: AtomicU64,
    backend_reads: AtomicU64,
    backend_read_micros: AtomicU64,
    control: Mutex<Control>,
    wake: Condvar,
    /// `cache.persist`: sealed copies on disk.
    sealed: Option<Arc<SealedCache>>,
    /// Since when the store has been unreachable (set with `offline`).
    offline_since: Mutex<Option<SystemTime>>,
    /// When the next re-check of the sealed copies is due: now at an online start and when
    /// the store comes back, [`recheck_interval`] after a complete pass,
    /// [`RECHECK_RETRY_AFTER`] after a stopped one. The background thread hands a due
    /// re-check to a `kes-recheck` thread while the store is reachable.
    recheck_at: Mutex<Option<Instant>>,
    recheck_interval: Duration,
    recheck_running: AtomicBool,
    /// The running `kes-recheck` thread, joined by `shutdown`.
    recheck_thread: Mutex<Option<JoinHandle<()>>>,
    recheck_stats: Mutex<RecheckStats>,
}

/// How a re-check pass ended.
enum PassEnd {
    Complete,
    /// A store failure: nothing after it was deleted.
    Stopped,
    /// The cache is shutting down.
    Shutdown,
}

impl<K> Shared<K> {
    fn read_entries(&self) -> std::sync::RwLockReadGuard<'_, Entries<K>> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_entries(&self) -> std::sync::RwLockWriteGuard<'_, Entries<K>> {
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn lookup(&self, name: &str) -> Option<Arc<K>> {
        let entries = self.read_entries();
        let entry = entries.map.get(name)?;
        entry.used.store(true, Ordering::Relaxed);
        Some(Arc::clone(&entry.key))
    }

    /// The flight leader's work: re-check, read, parse, insert.
    fn load(&self, name: &str, deadline: Instant) -> LoadResult<K> {
        let removals = {
            let entries = self.read_entries();
            if let Some(entry) = entries.map.get(name) {
                entry.used.store(true, Ordering::Relaxed);
                return Ok(Arc::clone(&entry.key));
            }
            entries.removals
        };
        // Taken before the read: a delete that returns while it runs wins over its seal.
        let generation = self.sealed.as_ref().map_or(0, |s| s.generation(name));
        self.backend_reads.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        // The values are `Zeroizing` buffers, wiped when they drop at the end of this function.
        let stored = self.store.versions(name, deadline);
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.backend_read_micros.fetch_add(micros, Ordering::Relaxed);
        let stored = match (stored, &self.sealed) {
            (Ok(stored), _) => stored,
            (Err(StoreError::NotFound), Some(sealed)) => {
                sealed.remove(name);
                return Err(StoreError::NotFound.into());
            }
            (Err(StoreError::Unreachable(m)), Some(_)) => {
                return self.load_sealed(name).ok_or(StoreError::Unreachable(m).into());
            }
            (Err(e), _) => return Err(e.into()),
        };
        let key = Arc::new(parse_versions(self.parse, &stored)?);
        if let Some(sealed) = &self.sealed {
            // Every live version, in one sealed copy (retired ones without material).
            sealed.save_unless_removed(name, &StoredVersion::encode_all(&stored), generation);
        }
        let mut entries = self.write_entries();
        if entries.enabled && entries.removals == removals {
            let entry =
                Entry { key: Arc::clone(&key), loaded: started, used: AtomicBool::new(true) };
            entries.map.insert(name.to_string(), entry);
        }
        Ok(key)
    }

    /// The sealed copy of `name`, parsed and cached, if there is a fresh authentic one.
    fn load_sealed(&self, name: &str) -> Option<Arc<K>> {
        let sealed = self.sealed.as_ref()?;
        let copy = sealed.load(name).ok()?;
        let parsed = StoredVersion::decode_all(&copy.value)
            .map_err(|e| e.to_string())
            .and_then(|stored| parse_versions(self.parse, &stored).map_err(|e| e.to_string()));
        let key = match parsed {
            Ok(key) => Arc::new(key),
            Err(e) => {
                sealed.log_line(Level::Error, &format!("sealed cache: '{name}': {e}"));
                return None;
            }
        };
        let mut entries = self.write_entries();
        if entries.enabled {
            let entry = Entry {
                key: Arc::clone(&key),
                loaded: Instant::now(),
                used: AtomicBool::new(true),
            };
            entries.map.insert(name.to_string(), entry);
        }
        Some(key)
    }

    /// Drops the entry of `name` and keeps a load in progress from inserting what it read;
    /// later lookups still join that load.
    fn drop_entry(&self, name: &str) {
        let mut entries = self.write_entries();
        entries.map.remove(name);
        entries.removals = entries.removals.wrapping_add(1);
    }

    /// [`Shared::drop_entry`], and detaches the load in progress: its waiters still get
    /// its result, later lookups start a read of their own (after a write, a load that
    /// began before it may hold what the write changed).
    fn forget(&self, name: &str) {
        self.drop_entry(name);
        lock(&self.flights).remove(name);
    }

    /// Re-reads every sealed name from the store, one read per [`RECHECK_READ_GAP`]:
    /// deleted keys lose their copy and entry, changed ones are resealed and replaced. Stops
    /// at the first failure to reach or use the store (only "not found" deletes) and when
    /// the cache shuts down.
    fn recheck(&self) -> PassEnd {
        let Some(sealed) = &self.sealed else { return PassEnd::Complete };
        let names = sealed.names();
        let (mut kept, mut removed) = (0u64, 0u64);
        for (i, name) in names.iter().enumerate() {
            if (i > 0 && !self.pause(RECHECK_READ_GAP)) || lock(&self.control).stop {
                return PassEnd::Shutdown;
            }
            let generation = sealed.generation(name);
            match self.store.versions(name, Instant::now() + RECHECK_TIMEOUT) {
                Ok(stored) => match parse_versions(self.parse, &stored) {
                    Ok(key) => {
                        // Not over a delete through this server that ran during the read.
                        if sealed.save_unless_removed(
                            name,
                            &StoredVersion::encode_all(&stored),
                            generation,
                        ) {
                            let mut entries = self.write_entries();
                            if let Some(entry) = entries.map.get_mut(name) {
                                entry.key = Arc::new(key);
                            }
                        }
                        kept += 1;
                        lock(&self.recheck_stats).current += 1;
                    }
                    Err(e) => sealed.log_line(
                        Level::Error,
                        &format!("sealed cache: re-check: stored key '{name}' is malformed: {e}"),
                    ),
                },
                Err(StoreError::NotFound) => {
                    self.forget(name);
                    sealed.remove(name);
                    removed += 1;
                    lock(&self.recheck_stats).removed += 1;
                    sealed.log_line(
                        Level::Info,
                        &format!("sealed cache: '{name}' no longer exists in the key store: sealed copy removed"),
                    );
                }
                Err(e) => {
                    lock(&self.recheck_stats).stopped += 1;
                    sealed.log_line(
                        Level::Warn,
                        &format!(
                            "sealed cache: re-check stopped after {kept} keys: {e}; next try in {}",
                            crate::gotime::format_duration(RECHECK_RETRY_AFTER)
                        ),
                    );
                    return PassEnd::Stopped;
                }
            }
        }
        let mut stats = lock(&self.recheck_stats);
        stats.passes += 1;
        stats.last = Some(SystemTime::now());
        drop(stats);
        sealed.log_line(
            Level::Info,
            &format!(
                "sealed cache: re-checked {} keys: {kept} current, {removed} removed",
                names.len()
            ),
        );
        PassEnd::Complete
    }

    /// Waits `d` unless the cache shuts down first: false then.
    fn pause(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        let mut control = lock(&self.control);
        loop {
            if control.stop {
                return false;
            }
            let now = Instant::now();
            if now >= end {
                return true;
            }
            control =
                self.wake.wait_timeout(control, end - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// When the next re-check is due, if one may start: none while one runs or the store
    /// is unreachable.
    fn recheck_waiting(&self) -> Option<Instant> {
        if self.recheck_running.load(Ordering::SeqCst) || self.offline.load(Ordering::SeqCst) {
            return None;
        }
        *lock(&self.recheck_at)
    }

    /// Makes a re-check due at `at`, or sooner if one already is.
    fn schedule_recheck(&self, at: Instant) {
        let mut due = lock(&self.recheck_at);
        *due = Some(due.map_or(at, |d| d.min(at)));
    }

    /// Whether the normal expiries run now: always while online, and while offline only
    /// when offline caching is off (§7).
    fn normal_expiry_applies(&self) -> bool {
        !self.offline.load(Ordering::SeqCst) || self.config.offline.is_zero()
    }

    fn flush_all(&self) {
        self.write_entries().map.clear();
    }

    fn sweep_unused(&self) {
        let mut entries = self.write_entries();
        entries.map.retain(|_, e| e.used.load(Ordering::Relaxed));
        for entry in entries.map.values() {
            entry.used.store(false, Ordering::Relaxed);
        }
    }

    fn probe(&self) {
        let result = self.store.status(Instant::now() + PROBE_TIMEOUT);
        let was_offline = self.offline.swap(result.is_err(), Ordering::SeqCst);
        match result {
            Err(e) if !was_offline => {
                *lock(&self.offline_since) = Some(SystemTime::now());
                log::warn!("{THREAD_NAME}: key store unreachable: {e}");
                if let Some(sealed) = &self.sealed {
                    sealed.log_line(
                        Level::Warn,
                        &format!("key store unreachable, serving from the sealed cache: {e}"),
                    );
                }
            }
            Ok(_) if was_offline => {
                *lock(&self.offline_since) = None;
                log::info!("{THREAD_NAME}: key store reachable again");
                if let Some(sealed) = &self.sealed {
                    sealed.log_line(
                        Level::Info,
                        "key store reachable again: re-checking the sealed cache",
                    );
                    self.schedule_recheck(Instant::now());
                }
            }
            _ => {}
        }
    }

    fn run_task(&self, task: Task) {
        match task {
            Task::Flush if self.normal_expiry_applies() => self.flush_all(),
            Task::SweepUnused if self.normal_expiry_applies() => self.sweep_unused(),
            Task::OfflineFlush if self.offline.load(Ordering::SeqCst) => self.flush_all(),
            Task::Probe => self.probe(),
            _ => {}
        }
    }
}

/// Turns a store's versions into a cached value: the store's bounds are checked here, the
/// values are decoded by `parse`.
fn parse_versions<K>(parse: ParseFn<K>, stored: &[StoredVersion]) -> Result<K, CacheError> {
    if stored.len() > MAX_VERSIONS {
        return Err(CacheError::Store(StoreError::Failed(format!(
            "key has {} versions, more than the {MAX_VERSIONS} this server reads",
            stored.len()
        ))));
    }
    if stored.is_empty() {
        return Err(CacheError::Store(StoreError::NotFound));
    }
    parse(stored).map_err(CacheError::Format)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Task {
    Flush,
    SweepUnused,
    OfflineFlush,
    Probe,
}

/// A task with its period; zero disables it (§7: "a period ≤ 0 disables the task").
struct Schedule {
    task: Task,
    period: Duration,
    next: Instant,
}

impl Schedule {
    fn new(task: Task, period: Duration, now: Instant) -> Option<Schedule> {
        if period.is_zero() {
            return None;
        }
        let period = period.max(MIN_PERIOD);
        Some(Schedule { task, period, next: now + period })
    }
}

/// Marks the thread as gone however it leaves, so `shutdown` never waits for a dead thread.
struct ExitNotice<'a, K>(&'a Shared<K>);

impl<K> Drop for ExitNotice<'_, K> {
    fn drop(&mut self) {
        lock(&self.0.control).exited = true;
        self.0.wake.notify_all();
    }
}

fn background<K: Send + Sync + 'static>(shared: Arc<Shared<K>>, probe_interval: Duration) {
    let _exit = ExitNotice(&shared);
    let now = Instant::now();
    let config = &shared.config;
    let mut tasks: Vec<Schedule> = [
        Schedule::new(Task::Flush, config.any, now),
        Schedule::new(Task::SweepUnused, config.unused / 2, now),
        Schedule::new(Task::OfflineFlush, config.offline, now),
        Schedule::new(Task::Probe, probe_interval, now),
    ]
    .into_iter()
    .flatten()
    .collect();
    loop {
        {
            let mut control = lock(&shared.control);
            loop {
                if control.stop {
                    return;
                }
                // Read again at every wake-up: a finished re-check schedules the next one.
                let next = tasks.iter().map(|t| t.next).chain(shared.recheck_waiting()).min();
                let now = Instant::now();
                control = match next {
                    Some(at) if at <= now => break,
                    Some(at) => {
                        shared
                            .wake
                            .wait_timeout(control, at - now)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                    None => shared.wake.wait(control).unwrap_or_else(PoisonError::into_inner),
                };
            }
        }
        for schedule in tasks.iter_mut() {
            let now = Instant::now();
            if schedule.next <= now {
                shared.run_task(schedule.task);
                // From now, not from the missed tick: a stalled thread never runs a burst.
                schedule.next = Instant::now() + schedule.period;
            }
        }
        if shared.recheck_waiting().is_some_and(|at| at <= Instant::now()) {
            spawn_recheck(&shared);
        }
    }
}

/// Starts the re-check of the sealed copies on its own thread (it may take one store read
/// per sealed key, and must not hold up expiry and probes), unless one is running.
fn spawn_recheck<K: Send + Sync + 'static>(shared: &Arc<Shared<K>>) {
    if shared.recheck_running.swap(true, Ordering::SeqCst) {
        return;
    }
    *lock(&shared.recheck_at) = None;
    // The previous thread has cleared `recheck_running` and is leaving: reap it.
    if let Some(previous) = lock(&shared.recheck_thread).take() {
        let _ = previous.join();
    }
    let for_thread = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name(RECHECK_THREAD_NAME.to_string())
        .stack_size(THREAD_STACK)
        .spawn(move || {
            let shared = for_thread;
            match shared.recheck() {
                PassEnd::Complete => {
                    shared.schedule_recheck(Instant::now() + shared.recheck_interval);
                }
                PassEnd::Stopped => shared.schedule_recheck(Instant::now() + RECHECK_RETRY_AFTER),
                PassEnd::Shutdown => {}
            }
            shared.recheck_running.store(false, Ordering::SeqCst);
            // Under the lock, so neither the background thread (which waits for the next
            // due time) nor `shutdown` (which waits for this thread) misses the change.
            let _control = lock(&shared.control);
            shared.wake.notify_all();
        });
    match spawned {
        Ok(handle) => *lock(&shared.recheck_thread) = Some(handle),
        Err(e) => {
            shared.recheck_running.store(false, Ordering::SeqCst);
            shared.schedule_recheck(Instant::now() + RECHECK_RETRY_AFTER);
            log::error!("{RECHECK_THREAD_NAME}: cannot start: {e}");
        }
    }
}

/// Keys by name, parsed into `K`, in front of a [`KeyStore`]. `Send + Sync`; share it as
/// `Arc`.
pub struct KeyCache<K> {
    shared: Arc<Shared<K>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl<K: Send + Sync + 'static> KeyCache<K> {
    /// A cache over `store` with `config`'s expiries, probing the store every 10 s and
    /// building its values with `parse`.
    pub fn new(store: Arc<dyn KeyStore>, config: CacheConfig, parse: ParseFn<K>) -> Arc<Self> {
        Self::with_options(store, config, OFFLINE_PROBE_INTERVAL, parse)
    }

    /// [`KeyCache::new`] with the probe period chosen by the caller (tests). A zero
    /// `probe_interval` disables probing, so the cache never goes offline.
    pub fn with_options(
        store: Arc<dyn KeyStore>,
        config: CacheConfig,
        probe_interval: Duration,
        parse: ParseFn<K>,
    ) -> Arc<Self> {
        Self::build(store, config, probe_interval, parse, None)
    }

    /// [`KeyCache::new`] with sealed copies in `sealed` (`cache.persist`). The caller then
    /// either finds the store reachable ([`KeyCache::recheck_sealed`]) or not
    /// ([`KeyCache::start_from_sealed`]).
    pub fn with_sealed(
        store: Arc<dyn KeyStore>,
        config: CacheConfig,
        parse: ParseFn<K>,
        sealed: Arc<SealedCache>,
    ) -> Arc<Self> {
        Self::build(store, config, OFFLINE_PROBE_INTERVAL, parse, Some(sealed))
    }

    /// [`KeyCache::with_sealed`] with the probe period chosen by the caller.
    pub fn with_sealed_options(
        store: Arc<dyn KeyStore>,
        config: CacheConfig,
        probe_interval: Duration,
        parse: ParseFn<K>,
        sealed: Arc<SealedCache>,
    ) -> Arc<Self> {
        Self::build(store, config, probe_interval, parse, Some(sealed))
    }

    fn build(
        store: Arc<dyn KeyStore>,
        config: CacheConfig,
        probe_interval: Duration,
        parse: ParseFn<K>,
        sealed: Option<Arc<SealedCache>>,
    ) -> Arc<Self> {
        let sealed_interval =
            sealed.as_ref().map_or(MIN_PERIOD, |s| recheck_interval(s.info().max_age));
        let shared = Arc::new(Shared {
            store,
            config,
            parse,
            entries: RwLock::new(Entries { map: HashMap::new(), removals: 0, enabled: true }),
            flights: Mutex::new(HashMap::new()),
            offline: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            backend_reads: AtomicU64::new(0),
            backend_read_micros: AtomicU64::new(0),
            control: Mutex::new(Control { stop: false, exited: false }),
            wake: Condvar::new(),
            sealed,
            offline_since: Mutex::new(None),
            recheck_at: Mutex::new(None),
            recheck_interval: sealed_interval,
            recheck_running: AtomicBool::new(false),
            recheck_thread: Mutex::new(None),
            recheck_stats: Mutex::new(RecheckStats::default()),
        });
        let for_thread = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name(THREAD_NAME.to_string())
            .stack_size(THREAD_STACK)
            .spawn(move || background(for_thread, probe_interval));
        let worker = match spawned {
            Ok(handle) => Some(handle),
            Err(e) => {
                // Without the thread nothing would expire: serve every lookup from the store
                // (still single-flight) rather than keep keys forever.
                log::error!("{THREAD_NAME}: cannot start, keys will not be cached: {e}");
                shared.write_entries().enabled = false;
                None
            }
        };
        Arc::new(KeyCache { shared, worker: Mutex::new(worker) })
    }

    /// The parsed key `name`, from the cache or (once for all concurrent callers) from the
    /// store. While offline, a key not in the cache fails at once with `Unreachable`.
    pub fn get(&self, name: &str, deadline: Instant) -> Result<Arc<K>, CacheError> {
        let shared = &*self.shared;
        if let Some(key) = shared.lookup(name) {
            shared.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(key);
        }
        shared.misses.fetch_add(1, Ordering::Relaxed);
        if shared.offline.load(Ordering::SeqCst) {
            return shared.load_sealed(name).ok_or(CacheError::Store(offline_error()));
        }
        let joined = {
            let mut flights = lock(&shared.flights);
            match flights.get(name) {
                Some(flight) => Err(Arc::clone(flight)),
                None => {
                    let flight = Arc::new(Flight::new());
                    flights.insert(name.to_string(), Arc::clone(&flight));
                    Ok(flight)
                }
            }
        };
        match joined {
            Err(flight) => flight.wait(deadline),
            Ok(flight) => {
                let mut loader = Loader { shared, name, flight, result: None };
                let result = shared.load(name, deadline);
                loader.result = Some(result.clone());
                drop(loader);
                result
            }
        }
    }

    /// Reads `name` from the store again when `seen` is still what the cache holds for it
    /// and was read at least `min_age` ago; otherwise returns what the cache holds now (or
    /// loads it). For a decrypt that no cached version could open: the ciphertext may come
    /// from a version another server added since. `min_age` bounds how often failing
    /// requests can make this node read the store for one key.
    pub fn refresh(
        &self,
        name: &str,
        seen: &Arc<K>,
        min_age: Duration,
        deadline: Instant,
    ) -> Result<Arc<K>, CacheError> {
        let (stale, cached) = {
            let entries = self.shared.read_entries();
            match entries.map.get(name) {
                Some(e) => (Arc::ptr_eq(&e.key, seen) && e.loaded.elapsed() >= min_age, true),
                // Not cached (e.g. the cache is a pass-through, or another refresh dropped
                // it): a plain load reads the store, or joins the load already under way.
                None => (true, false),
            }
        };
        if stale {
            if self.is_offline() {
                return Ok(Arc::clone(seen));
            }
            // Not `forget`: concurrent refreshes of one key (a burst of ciphertexts no
            // version opens) must share one store read, not start one each.
            if cached {
                self.shared.drop_entry(name);
            }
        }
        self.get(name, deadline)
    }

    /// Drops the cached entry of `name` (its sealed copy stays) so that the next lookup
    /// reads the store, e.g. before a decision a stale copy must not make. A load of `name`
    /// already in progress will not re-insert what it read, and later lookups do not join
    /// it.
    pub fn forget(&self, name: &str) {
        self.shared.forget(name);
    }

    /// Forgets `name` and removes its sealed copy, if any, at once (the key was deleted).
    fn remove(&self, name: &str) {
        self.shared.forget(name);
        if let Some(sealed) = &self.shared.sealed {
            sealed.remove(name);
        }
    }

    /// Creates `name` with `value` in the store ([`KeyStore::create`]). When the store
    /// accepts, the name was free there, so whatever this node still holds for it (a key
    /// deleted through another server) is dropped, sealed copy included: the next lookup
    /// reads the new key instead of serving the old one.
    pub fn create(&self, name: &str, value: &[u8], deadline: Instant) -> Result<(), StoreError> {
        self.shared.store.create(name, value, deadline)?;
        self.remove(name);
        Ok(())
    }

    /// Deletes `name` from the store; once the store confirms, the cached entry and the
    /// sealed copy go too, so this node never serves a key it deleted. A failed delete
    /// leaves both (the key may well still exist).
    pub fn delete(&self, name: &str, deadline: Instant) -> Result<(), StoreError> {
        self.shared.store.delete(name, deadline)?;
        self.remove(name);
        Ok(())
    }

    /// Adds `value` as the newest version of `name` in the store ([`KeyStore::add_version`])
    /// and forgets the cached entry whatever the outcome (a failed call may still have
    /// changed the store), so the next lookup reads the versions as they are now.
    pub fn add_version(
        &self,
        name: &str,
        value: &[u8],
        deadline: Instant,
    ) -> Result<String, StoreError> {
        let result = self.shared.store.add_version(name, value, deadline);
        self.forget(name);
        result
    }

    /// Retires or re-enables version `id` of `name` in the store
    /// ([`KeyStore::set_version_enabled`]) and forgets the cached entry whatever the
    /// outcome, as [`KeyCache::add_version`] does.
    pub fn set_version_enabled(
        &self,
        name: &str,
        id: &str,
        enabled: bool,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        let result = self.shared.store.set_version_enabled(name, id, enabled, deadline);
        self.forget(name);
        result
    }

    /// The store was found unreachable at startup: go offline at once (no request waits
    /// for the first probe) and load every sealed copy that authenticates and is fresh.
    /// Returns how many keys are served; refused copies were logged one by one.
    pub fn start_from_sealed(&self) -> usize {
        let shared = &*self.shared;
        let Some(sealed) = &shared.sealed else { return 0 };
        shared.offline.store(true, Ordering::SeqCst);
        *lock(&shared.offline_since) = Some(SystemTime::now());
        sealed.names().iter().filter(|name| shared.load_sealed(name).is_some()).count()
    }

    /// The store is reachable: re-check every sealed copy in the background.
    pub fn recheck_sealed(&self) {
        if self.shared.sealed.is_some() {
            self.shared.schedule_recheck(Instant::now());
            spawn_recheck(&self.shared);
        }
    }

    /// `Some` with the directory and since when, while the store is unreachable and keys
    /// are served from the sealed cache.
    pub fn serving_sealed(&self) -> Option<(SealedInfo, SystemTime)> {
        let sealed = self.shared.sealed.as_ref()?;
        if !self.is_offline() {
            return None;
        }
        let since = (*lock(&self.shared.offline_since))?;
        Some((sealed.info(), since))
    }

    /// The sealed cache's directory and `max_age`, when `cache.persist` is on.
    pub fn sealed_info(&self) -> Option<SealedInfo> {
        self.shared.sealed.as_ref().map(|s| s.info())
    }

    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.shared.store
    }

    /// Whether the last probe failed (lags reality by up to one probe period).
    pub fn is_offline(&self) -> bool {
        self.shared.offline.load(Ordering::SeqCst)
    }

    /// `Unreachable` at once while offline (`/v1/ready` must not probe then), otherwise the
    /// store's own status.
    pub fn status(&self, deadline: Instant) -> Result<Duration, StoreError> {
        if self.is_offline() {
            return Err(offline_error());
        }
        self.shared.store.status(deadline)
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.shared.hits.load(Ordering::Relaxed),
            misses: self.shared.misses.load(Ordering::Relaxed),
            backend_reads: self.shared.backend_reads.load(Ordering::Relaxed),
            backend_read_micros: self.shared.backend_read_micros.load(Ordering::Relaxed),
            recheck: *lock(&self.shared.recheck_stats),
        }
    }
}

impl<K> KeyCache<K> {
    /// Stops the background thread (waiting at most `SHUTDOWN_WAIT`), drops every cached
    /// key, and turns the cache into a pass-through: lookups keep working, each reading the
    /// store. Idempotent; also runs when the last handle is dropped.
    pub fn shutdown(&self) {
        {
            let mut entries = self.shared.write_entries();
            entries.enabled = false;
            entries.map.clear();
        }
        lock(&self.shared.control).stop = true;
        self.shared.wake.notify_all();
        let give_up = Instant::now() + SHUTDOWN_WAIT;
        // The `kes-recheck` thread stops before its next read (one under way is bounded by
        // RECHECK_TIMEOUT; past `give_up` it finishes on its own, deleting nothing more).
        if let Some(handle) = lock(&self.shared.recheck_thread).take() {
            self.join_by(handle, give_up, |_| !self.shared.recheck_running.load(Ordering::SeqCst));
        }
        // Inside a slow probe past `give_up`, the background thread is left to finish and
        // exit by itself. A panic in it was already reported by the panic hook.
        if let Some(handle) = lock(&self.worker).take() {
            self.join_by(handle, give_up, |control| control.exited);
        }
    }

    /// Waits until `give_up` for `done` (checked under the control lock, under which the
    /// threads announce that they leave), then reaps `handle`; past `give_up` the thread is
    /// left detached.
    fn join_by(&self, handle: JoinHandle<()>, give_up: Instant, done: impl Fn(&Control) -> bool) {
        let mut control = lock(&self.shared.control);
        while !done(&control) {
            let now = Instant::now();
            if now >= give_up {
                return;
            }
            control = self
                .shared
                .wake
                .wait_timeout(control, give_up - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(control);
        let _ = handle.join();
    }

    #[cfg(test)]
    fn cached(&self, name: &str) -> bool {
        self.shared.read_entries().map.contains_key(name)
    }

    #[cfg(test)]
    fn cached_count(&self) -> usize {
        self.shared.read_entries().map.len()
    }

    #[cfg(test)]
    fn flight_waiters(&self, name: &str) -> usize {
        lock(&self.shared.flights).get(name).map_or(0, |f| lock(&f.state).waiters)
    }
}

impl<K> Drop for KeyCache<K> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::mem::MemStore;
    use crate::keystore::{Listing, StoredValue};
    use std::sync::Barrier;

    /// Stand-in key material length: a value is 32 bytes and then a tag.
    const KEY_LEN: usize = 32;

    /// What the tests cache: per version its id, whether it is live, and the tag after the
    /// first 32 bytes of its value, so a test can tell which stored value a key came from.
    /// Independent of the real stored formats (the cache never decodes values itself).
    #[derive(Debug)]
    struct Fake(Vec<FakeVersion>);

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct FakeVersion {
        id: String,
        live: bool,
        tag: Option<String>,
    }

    impl Fake {
        /// The first version's tag.
        fn tag(&self) -> String {
            self.0[0].tag.clone().unwrap_or_default()
        }
    }

    fn fake_tag(bytes: &[u8]) -> Result<String, &'static str> {
        let tag = bytes.get(KEY_LEN..).ok_or("fake: value shorter than 32 bytes")?;
        Ok(String::from_utf8_lossy(tag).into_owned())
    }

    /// Live versions must decode; retired ones keep a tag only when readable.
    fn fake_parse(stored: &[StoredVersion]) -> Result<Fake, &'static str> {
        let mut out = Vec::new();
        for v in stored {
            let tag = match (&v.value, v.enabled) {
                (Some(b), true) => Some(fake_tag(b)?),
                (None, true) => return Err("live version without value"),
                (b, false) => b.as_deref().and_then(|b| fake_tag(b).ok()),
            };
            out.push(FakeVersion { id: v.id.clone(), live: v.enabled, tag });
        }
        Ok(Fake(out))
    }

    fn value(tag: &str) -> Vec<u8> {
        let mut v = vec![0x42; KEY_LEN];
        v.extend_from_slice(tag.as_bytes());
        v
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    fn config(any_ms: u64, unused_ms: u64, offline_ms: u64) -> CacheConfig {
        CacheConfig {
            any: Duration::from_millis(any_ms),
            unused: Duration::from_millis(unused_ms),
            offline: Duration::from_millis(offline_ms),
        }
    }

    /// Polls `cond` every 5 ms for at most `limit`; true as soon as it holds.
    fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + limit;
        loop {
            if cond() {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// A `MemStore` whose `get` can be slowed down or held at a gate, and whose `status`
    /// records its calls and the calling thread's name.
    #[derive(Default)]
    struct TestStore {
        mem: MemStore,
        delay: Duration,
        closed: Mutex<bool>,
        /// While set, a read holds on to the value it read before returning it.
        hold: Mutex<bool>,
        gate: Condvar,
        entered: AtomicU64,
        status_calls: AtomicU64,
        status_thread: Mutex<Option<String>>,
    }

    impl TestStore {
        fn slow(delay: Duration) -> Arc<TestStore> {
            Arc::new(TestStore { delay, ..TestStore::default() })
        }

        fn set_gate(&self, closed: bool) {
            *lock(&self.closed) = closed;
            self.gate.notify_all();
        }

        fn set_hold(&self, hold: bool) {
            *lock(&self.hold) = hold;
            self.gate.notify_all();
        }
    }

    impl KeyStore for TestStore {
        fn describe(&self) -> String {
            "test".into()
        }
        fn status(&self, deadline: Instant) -> Result<Duration, StoreError> {
            self.status_calls.fetch_add(1, Ordering::SeqCst);
            *lock(&self.status_thread) = thread::current().name().map(str::to_string);
            self.mem.status(deadline)
        }
        fn create(&self, name: &str, value: &[u8], deadline: Instant) -> Result<(), StoreError> {
            self.mem.create(name, value, deadline)
        }
        fn get(&self, name: &str, deadline: Instant) -> Result<StoredValue, StoreError> {
            self.entered.fetch_add(1, Ordering::SeqCst);
            let mut closed = lock(&self.closed);
            while *closed {
                closed = self.gate.wait(closed).unwrap();
            }
            drop(closed);
            thread::sleep(self.delay);
            let value = self.mem.get(name, deadline);
            let mut hold = lock(&self.hold);
            while *hold {
                hold = self.gate.wait(hold).unwrap();
            }
            value
        }
        fn delete(&self, name: &str, deadline: Instant) -> Result<(), StoreError> {
            self.mem.delete(name, deadline)
        }
        fn list(&self, prefix: &str, deadline: Instant) -> Result<Listing, StoreError> {
            self.mem.list(prefix, deadline)
        }
    }

    fn cache_over(
        store: Arc<dyn KeyStore>,
        cfg: CacheConfig,
        probe_ms: u64,
    ) -> Arc<KeyCache<Fake>> {
        KeyCache::with_options(store, cfg, Duration::from_millis(probe_ms), fake_parse)
    }

    #[test]
    fn cache_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<KeyCache<Fake>>();
        check::<Arc<KeyCache<Fake>>>();
    }

    #[test]
    fn hit_after_miss_serves_the_same_key_without_reading_again() {
        let store = Arc::new(MemStore::new());
        store.create("k", &value("v1"), later()).unwrap();
        let cache = cache_over(store.clone(), config(0, 0, 0), 0);
        let a = cache.get("k", later()).unwrap();
        let b = cache.get("k", later()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.tag(), "v1");
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.backend_reads), (1, 1, 1));
        assert_eq!(store.reads(), 1);
        assert_eq!(cache.store().describe(), "In Memory");
    }

    #[test]
    fn two_hundred_concurrent_misses_cause_one_backend_read() {
        const THREADS: usize = 200;
        let store = TestStore::slow(Duration::from_millis(50));
        store.mem.create("cold", &value("cold"), later()).unwrap();
        let cache = cache_over(store.clone(), config(0, 0, 0), 0);
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (cache, barrier) = (Arc::clone(&cache), Arc::clone(&barrier));
                thread::Builder::new()
                    .stack_size(128 * 1024)
                    .spawn(move || {
                        barrier.wait();
                        cache.get("cold", later())
                    })
                    .unwrap()
            })
            .collect();
        let keys: Vec<Arc<Fake>> =
            handles.into_iter().map(|h| h.join().unwrap().ok().unwrap()).collect();
        assert!(keys.iter().all(|k| Arc::ptr_eq(k, &keys[0])));
        assert_eq!(keys[0].tag(), "cold");
        let stats = cache.stats();
        assert_eq!(stats.backend_reads, 1);
        assert_eq!(store.mem.reads(), 1);
        assert_eq!(stats.hits + stats.misses, THREADS as u64);
    }

    #[test]
    fn waiters_share_the_leaders_error_and_errors_are_not_cached() {
        let store = Arc::new(TestStore::default());
        store.set_gate(true);
        let cache = cache_over(store.clone(), config(0, 0, 0), 0);
        let leader = {
            let cache = Arc::clone(&cache);
            thread::spawn(move || cache.get("missing", later()).err())
        };
        assert!(eventually(Duration::from_secs(5), || store.entered.load(Ordering::SeqCst) == 1));
        let followers: Vec<_> = (0..10)
            .map(|_| {
                let cache = Arc::clone(&cache);
                thread::spawn(move || cache.get("missing", later()).err())
            })
            .collect();
        assert!(eventually(Duration::from_secs(5), || cache.flight_waiters("missing") == 10));
        store.set_gate(false);
        let want = Some(CacheError::Store(StoreError::NotFound));
        assert_eq!(leader.join().unwrap(), want);
        for f in followers {
            assert_eq!(f.join().unwrap(), want);
        }
        assert_eq!(store.mem.reads(), 1);
        assert_eq!(cache.stats().backend_reads, 1);

        // Not cached: the next lookup asks again, and sees the key once it exists.
        assert_eq!(cache.get("missing", later()).err(), want);
        store.mem.create("missing", &value("now"), later()).unwrap();
        assert_eq!(cache.get("missing", later()).unwrap().tag(), "now");
        assert_eq!(store.mem.reads(), 3);
    }

    #[test]
    fn parse_failures_are_reported_and_not_cached() {
        let store = Arc::new(MemStore::new());
        store.create("short", b"too short", later()).unwrap();
        let cache = cache_over(store.clone(), config(0, 0, 0), 0);
        let want = CacheError::Format("fake: value shorter than 32 bytes");
        assert_eq!(cache.get("short", later()).err(), Some(want.clone()));
        assert_eq!(cache.get("short", later()).err(), Some(want.clone()));
        assert_eq!(store.reads(), 2);
        assert!(!cache.cached("short"));
        assert_eq!(want.to_string(), "stored key is malformed: fake: value shorter than 32 bytes");
        let offline = CacheError::Store(offline_error());
        assert_eq!(offline.to_string(), "key store is not reachable: cache is in offline mode");
    }

    #[test]
    fn remove_forgets_a_key_and_blocks_a_stale_insert() {
        let store = Arc::new(TestStore::default());
        store.mem.create("k", &value("old"), later()).unwrap();
        let cache = cache_over(store.clone(), config(0, 0, 0), 0);
        cache.get("k", later()).unwrap();
        cache.remove("k");
        assert!(!cache.cached("k"));

        // A load that read before the delete finishes after it: its result is handed out
        // but not kept.
        store.set_gate(true);
        let loader = {
            let cache = Arc::clone(&cache);
            thread::spawn(move || cache.get("k", later()).map(|k| k.tag()))
        };
        assert!(eventually(Duration::from_secs(5), || store.entered.load(Ordering::SeqCst) == 2));
        cache.remove("k");
        store.set_gate(false);
        assert_eq!(loader.join().unwrap(), Ok("old".to_string()));
        assert!(!cache.cached("k"));
        // Without a concurrent removal, a load is kept.
        cache.get("k", later()).unwrap();
        assert!(cache.cached("k"));
    }

    #[test]
    fn forget_detaches_a_load_in_flight() {
        let store = Arc::new(TestStore::default());
        store.mem.create("k", &value("k"), later()).unwrap();
        let cache = cache_over(store.clone(), config(0, 0, 0), 0);
        store.set_gate(true);
        let spawn_get = || {
            let cache = Arc::clone(&cache);
            thread::spawn(move || cache.get("k", later()).map(|k| k.tag()))
        };
        let before = spawn_get();
        assert!(eventually(Duration::from_secs(5), || store.entered.load(Ordering::SeqCst) == 1));
        // A write through this node happens here: the load above may have read before it.
        cache.forget("k");
        let after = spawn_get();
        // The later lookup reads the store itself instead of joining the earlier load.
        assert!(eventually(Duration::from_secs(5), || store.entered.load(Ordering::SeqCst) == 2));
        assert_eq!(cache.flight_waiters("k"), 0);
        store.set_gate(false);
        assert_eq!(before.join().unwrap(), Ok("k".to_string()));
        assert_eq!(after.join().unwrap(), Ok("k".to_string()));
        assert_eq!(store.mem.reads(), 2);
        // The detached load did not insert; the later one did.
        assert!(cache.cached("k"));
    }

    #[test]
    fn a_create_replaces_what_this_node_held_for_a_key_deleted_elsewhere() {
        let (dir, sealed) = sealed_dir("create");
        let store = Arc::new(MemStore::new());
        let cache = sealed_cache_over(store.clone(), config(0, 0, 0), 0, &sealed);
        cache.create("k", &value("old"), later()).unwrap();
        assert_eq!(cache.get("k", later()).unwrap().tag(), "old");
        // Another server deletes the key; this one still holds it.
        store.delete("k", later()).unwrap();
        assert_eq!(cache.get("k", later()).unwrap().tag(), "old");
        cache.create("k", &value("new"), later()).unwrap();
        assert!(!cache.cached("k"));
        assert_eq!(cache.get("k", later()).unwrap().tag(), "new");
        // A refused create (the name is taken) leaves the entry alone.
        assert_eq!(cache.create("k", &value("other"), later()), Err(StoreError::Exists));
        assert!(cache.cached("k"));
        assert_eq!(cache.get("k", later()).unwrap().tag(), "new");
        // The sealed copy is the new key's.
        let copy = StoredVersion::decode_all(&sealed.load("k").ok().unwrap().value).unwrap();
        assert_eq!(copy[0].value.as_ref().map(|v| v[KEY_LEN..].to_vec()), Some(b"new".to_vec()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn concurrent_refreshes_share_one_store_read() {
        const THREADS: usize = 20;
        let store = Arc::new(TestStore::default());
        store.mem.create("k", &value("k"), later()).unwrap();
        let cache = cache_over(store.clone(), config(0, 0, 0), 0);
        let seen = cache.get("k", later()).unwrap();
        store.set_gate(true);
        let refresh = || {
            let (cache, seen) = (Arc::clone(&cache), Arc::clone(&seen));
            thread::spawn(move || cache.refresh("k", &seen, Duration::ZERO, later()))
        };
        // The first refresh drops the entry and reads (held at the gate) ...
        let mut refreshes = vec![refresh()];
        assert!(eventually(Duration::from_secs(5), || store.entered.load(Ordering::SeqCst) == 2));
        // ... and every later one, finding nothing cached, joins that read.
        refreshes.extend((1..THREADS).map(|_| refresh()));
        assert!(eventually(Duration::from_secs(10), || {
            cache.flight_waiters("k") == THREADS - 1
        }));
        assert_eq!(store.entered.load(Ordering::SeqCst), 2);
        store.set_gate(false);
        let keys: Vec<_> = refreshes.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
        assert!(keys.iter().all(|k| Arc::ptr_eq(k, &keys[0]) && !Arc::ptr_eq(k, &seen)));
        assert_eq!(store.mem.reads(), 2);
        // What the shared read found is cached: the next lookup is a hit.
        assert!(cache.cached("k"));
        assert!(Arc::ptr_eq(&cache.get("k", later()).unwrap(), &keys[0]));
    }

    #[test]
    fn writes_through_the_cache_are_seen_by_the_next_lookup() {
        let (dir, sealed) = sealed_dir("writes");
        let store = Arc::new(MemStore::new());
        store.create("k", &value("v1"), later()).unwrap();
        let cache = sealed_cache_over(store.clone(), config(0, 0, 0), 0, &sealed);
        assert_eq!(cache.get("k", later()).unwrap().0.len(), 1);

        let v2 = cache.add_version("k", &value("v2"), later()).unwrap();
        let key = cache.get("k", later()).unwrap();
        assert_eq!(
            key.0.iter().map(|v| v.tag.as_deref()).collect::<Vec<_>>(),
            [Some("v1"), Some("v2")]
        );
        cache.set_version_enabled("k", &v2, false, later()).unwrap();
        assert!(!cache.get("k", later()).unwrap().0[1].live);
        assert_eq!(store.reads(), 3, "each write made the next lookup read the store");
        // A refused write still forgets (a failed call may have changed the store).
        assert_eq!(cache.add_version("nope", &value("x"), later()), Err(StoreError::NotFound));

        // Delete: the store, the entry and the sealed copy, in that order.
        assert_eq!(sealed.names(), vec!["k"]);
        cache.delete("k", later()).unwrap();
        assert!(!cache.cached("k"));
        assert!(sealed.names().is_empty());
        assert_eq!(cache.get("k", later()).err(), Some(CacheError::Store(StoreError::NotFound)));
        // Deleting what the store does not have fails and changes nothing here.
        store.create("other", &value("o"), later()).unwrap();
        cache.get("other", later()).unwrap();
        assert_eq!(cache.delete("k", later()), Err(StoreError::NotFound));
        assert!(cache.cached("other"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn any_period_flushes_every_entry() {
        let store = Arc::new(MemStore::new());
        store.create("a", &value("a"), later()).unwrap();
        store.create("b", &value("b"), later()).unwrap();
        let cache = cache_over(store.clone(), config(100, 0, 0), 0);
        cache.get("a", later()).unwrap();
        cache.get("b", later()).unwrap();
        assert_eq!(cache.cached_count(), 2);
        assert!(eventually(Duration::from_secs(3), || cache.cached_count() == 0));
        cache.get("a", later()).unwrap();
        assert_eq!(store.reads(), 3);
    }

    #[test]
    fn unused_sweep_drops_idle_keys_and_clears_flags() {
        let store = Arc::new(MemStore::new());
        store.create("idle", &value("i"), later()).unwrap();
        store.create("busy", &value("b"), later()).unwrap();
        // No periodic tasks: drive the sweep by hand for exact steps.
        let cache = cache_over(store.clone(), config(0, 0, 0), 0);
        cache.get("idle", later()).unwrap();
        cache.get("busy", later()).unwrap();
        // Fresh entries count as used: the first sweep keeps both and clears the flags.
        cache.shared.sweep_unused();
        assert!(cache.cached("idle") && cache.cached("busy"));
        cache.get("busy", later()).unwrap();
        cache.shared.sweep_unused();
        assert!(!cache.cached("idle"));
        assert!(cache.cached("busy"));
        cache.shared.sweep_unused();
        assert!(!cache.cached("busy"));
    }

    #[test]
    fn unused_sweep_runs_in_the_background() {
        let store = Arc::new(MemStore::new());
        store.create("idle", &value("i"), later()).unwrap();
        store.create("busy", &value("b"), later()).unwrap();
        // Sweeps every 300 ms; "busy" is touched every 10 ms, far inside each half-period.
        let cache = cache_over(store.clone(), config(0, 600, 0), 0);
        cache.get("idle", later()).unwrap();
        cache.get("busy", later()).unwrap();
        let evicted = eventually(Duration::from_secs(5), || {
            cache.get("busy", later()).unwrap();
            !cache.cached("idle")
        });
        assert!(evicted, "idle key was never swept");
        assert!(cache.cached("busy"));
        // "busy" was read from the store once: every later lookup was a hit.
        assert_eq!(store.reads(), 2);
    }

    #[test]
    fn offline_serves_cached_keys_and_fails_fast_for_others() {
        let store = Arc::new(MemStore::new());
        store.create("warm", &value("w"), later()).unwrap();
        store.create("cold", &value("c"), later()).unwrap();
        // `any` 100 ms would flush "warm" quickly, but offline caching (10 s) suspends it.
        let cache = cache_over(store.clone(), config(100, 0, 10_000), 20);
        let warm = cache.get("warm", later()).unwrap();
        store.set_unreachable(true);
        assert!(eventually(Duration::from_secs(3), || cache.is_offline()));
        // Several `any` periods pass; the entry stays.
        thread::sleep(Duration::from_millis(350));
        assert!(Arc::ptr_eq(&cache.get("warm", later()).unwrap(), &warm));

        let reads = store.reads();
        let start = Instant::now();
        let err = cache.get("cold", later()).err();
        assert!(start.elapsed() < Duration::from_millis(100), "{:?}", start.elapsed());
        assert_eq!(err, Some(CacheError::Store(offline_error())));
        assert_eq!(store.reads(), reads, "an offline miss must not reach the store");
        assert_eq!(cache.status(later()), Err(offline_error()));

        store.set_unreachable(false);
        assert!(eventually(Duration::from_secs(3), || !cache.is_offline()));
        assert!(cache.status(later()).is_ok());
        assert_eq!(cache.get("cold", later()).unwrap().tag(), "c");
    }

    #[test]
    fn offline_without_offline_caching_keeps_expiring() {
        let store = Arc::new(MemStore::new());
        store.create("warm", &value("w"), later()).unwrap();
        let cache = cache_over(store.clone(), config(100, 0, 0), 20);
        cache.get("warm", later()).unwrap();
        store.set_unreachable(true);
        assert!(eventually(Duration::from_secs(3), || cache.is_offline()));
        assert!(eventually(Duration::from_secs(3), || !cache.cached("warm")));
        assert_eq!(cache.get("warm", later()).err(), Some(CacheError::Store(offline_error())));
    }

    #[test]
    fn offline_flush_empties_the_cache_while_offline() {
        let store = Arc::new(MemStore::new());
        store.create("warm", &value("w"), later()).unwrap();
        let cache = cache_over(store.clone(), config(0, 0, 200), 20);
        cache.get("warm", later()).unwrap();
        // Online, the offline flush does nothing.
        thread::sleep(Duration::from_millis(450));
        assert!(cache.cached("warm"));
        store.set_unreachable(true);
        assert!(eventually(Duration::from_secs(3), || cache.is_offline()));
        assert!(eventually(Duration::from_secs(3), || !cache.cached("warm")));
    }

    #[test]
    fn shutdown_stops_the_named_thread_promptly() {
        let store = Arc::new(TestStore::default());
        let cache = cache_over(store.clone(), config(60_000, 30_000, 0), 10);
        assert!(
            eventually(Duration::from_secs(3), || store.status_calls.load(Ordering::SeqCst) >= 2)
        );
        assert_eq!(lock(&store.status_thread).as_deref(), Some(THREAD_NAME));

        let start = Instant::now();
        cache.shutdown();
        assert!(start.elapsed() < Duration::from_millis(500), "{:?}", start.elapsed());
        let calls = store.status_calls.load(Ordering::SeqCst);
        thread::sleep(Duration::from_millis(100));
        assert_eq!(store.status_calls.load(Ordering::SeqCst), calls);
        cache.shutdown(); // idempotent

        // Afterwards lookups still work, each from the store.
        store.mem.create("k", &value("k"), later()).unwrap();
        cache.get("k", later()).unwrap();
        cache.get("k", later()).unwrap();
        assert_eq!(store.mem.reads(), 2);
        assert!(!cache.cached("k"));
    }

    #[test]
    fn dropping_the_last_handle_stops_the_thread() {
        let store = Arc::new(TestStore::default());
        let as_dyn: Arc<dyn KeyStore> = store.clone();
        let cache = cache_over(as_dyn, config(0, 0, 0), 10);
        assert!(
            eventually(Duration::from_secs(3), || store.status_calls.load(Ordering::SeqCst) >= 1)
        );
        drop(cache);
        // The thread released its share of the cache, and with it the store.
        assert_eq!(Arc::strong_count(&store), 1);
        let calls = store.status_calls.load(Ordering::SeqCst);
        thread::sleep(Duration::from_millis(50));
        assert_eq!(store.status_calls.load(Ordering::SeqCst), calls);
    }

    #[test]
    fn a_waiter_honours_its_own_deadline() {
        let store = Arc::new(TestStore::default());
        store.set_gate(true);
        let cache = cache_over(store.clone(), config(0, 0, 0), 0);
        let leader = {
            let cache = Arc::clone(&cache);
            thread::spawn(move || cache.get("k", later()).err())
        };
        assert!(eventually(Duration::from_secs(5), || store.entered.load(Ordering::SeqCst) == 1));
        let start = Instant::now();
        let err = cache.get("k", Instant::now() + Duration::from_millis(50)).err();
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(
            err,
            Some(CacheError::Store(StoreError::Unreachable(
                "timed out waiting for the key store".into()
            )))
        );
        store.set_gate(false);
        assert_eq!(leader.join().unwrap(), Some(CacheError::Store(StoreError::NotFound)));
    }
    fn sealed_dir(tag: &str) -> (std::path::PathBuf, Arc<SealedCache>) {
        sealed_dir_aged(tag, Duration::from_secs(3600))
    }

    fn sealed_dir_aged(tag: &str, max_age: Duration) -> (std::path::PathBuf, Arc<SealedCache>) {
        let mut r = [0u8; 6];
        getrandom::getrandom(&mut r).unwrap();
        let hex = crate::hex::encode(&r);
        let dir = std::env::temp_dir().join(format!("kes-cache-sealed-{tag}-{hex}"));
        let sealed =
            SealedCache::open(&dir, &[7; 32], "In Memory", max_age, Box::new(|_, _| {})).unwrap();
        (dir, Arc::new(sealed))
    }

    fn sealed_cache_over(
        store: Arc<dyn KeyStore>,
        cfg: CacheConfig,
        probe_ms: u64,
        sealed: &Arc<SealedCache>,
    ) -> Arc<KeyCache<Fake>> {
        KeyCache::with_sealed_options(
            store,
            cfg,
            Duration::from_millis(probe_ms),
            fake_parse,
            Arc::clone(sealed),
        )
    }

    #[test]
    fn a_restart_while_offline_serves_sealed_copies_and_fails_fast_for_others() {
        let (dir, sealed) = sealed_dir("restart");
        let store = Arc::new(MemStore::new());
        store.create("warm", &value("w"), later()).unwrap();
        store.create("cold", &value("c"), later()).unwrap();
        let first = sealed_cache_over(store.clone(), config(0, 0, 0), 0, &sealed);
        assert_eq!(first.get("warm", later()).unwrap().tag(), "w");
        assert_eq!(sealed.names(), vec!["warm"]);
        drop(first);

        // "Restart" with the store down: no probe has run, yet nothing waits for one.
        store.set_unreachable(true);
        let second = sealed_cache_over(store.clone(), config(0, 0, 0), 0, &sealed);
        assert_eq!(second.start_from_sealed(), 1);
        assert!(second.is_offline());
        let reads = store.reads();
        assert_eq!(second.get("warm", later()).unwrap().tag(), "w");
        assert_eq!(second.get("cold", later()).err(), Some(CacheError::Store(offline_error())));
        assert_eq!(store.reads(), reads, "offline lookups must not reach the store");
        let (info, _) = second.serving_sealed().unwrap();
        assert_eq!(info.path, dir);
        // Flushed from memory, it is still served from disk.
        second.shared.flush_all();
        assert_eq!(second.get("warm", later()).unwrap().tag(), "w");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_sealed_copy_holds_every_live_version_and_no_retired_material() {
        let (dir, sealed) = sealed_dir("versions");
        let store = Arc::new(MemStore::new());
        store.create("k", &value("v1"), later()).unwrap();
        let v2 = store.add_version("k", &value("v2"), later()).unwrap();
        let v3 = store.add_version("k", &value("v3"), later()).unwrap();
        store.set_version_enabled("k", &v2, false, later()).unwrap();
        let first = sealed_cache_over(store.clone(), config(0, 0, 0), 0, &sealed);
        assert_eq!(first.get("k", later()).unwrap().0.len(), 3);
        drop(first);
        store.set_unreachable(true);
        let second = sealed_cache_over(store.clone(), config(0, 0, 0), 0, &sealed);
        assert_eq!(second.start_from_sealed(), 1);
        let key = second.get("k", later()).unwrap();
        let version = |id: &str, live, tag: Option<&str>| FakeVersion {
            id: id.to_string(),
            live,
            tag: tag.map(str::to_string),
        };
        assert_eq!(
            key.0,
            [
                version("0", true, Some("v1")),
                version(&v2, false, None),
                version(&v3, true, Some("v3"))
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn deletes_and_missing_keys_drop_the_sealed_copy() {
        let (dir, sealed) = sealed_dir("delete");
        let store = Arc::new(MemStore::new());
        store.create("a", &value("a"), later()).unwrap();
        store.create("b", &value("b"), later()).unwrap();
        let cache = sealed_cache_over(store.clone(), config(0, 0, 0), 0, &sealed);
        cache.get("a", later()).unwrap();
        cache.get("b", later()).unwrap();
        assert_eq!(sealed.names(), vec!["a", "b"]);
        // Deleted through this server: gone at once.
        cache.remove("a");
        assert_eq!(sealed.names(), vec!["b"]);
        // Deleted elsewhere: the next read that finds it missing drops the copy.
        store.delete("b", later()).unwrap();
        cache.shared.flush_all();
        assert_eq!(cache.get("b", later()).err(), Some(CacheError::Store(StoreError::NotFound)));
        assert!(sealed.names().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unreachable_read_falls_back_to_the_sealed_copy() {
        let (dir, sealed) = sealed_dir("fallback");
        let store = Arc::new(MemStore::new());
        store.create("k", &value("k"), later()).unwrap();
        let cache = sealed_cache_over(store.clone(), config(0, 0, 0), 0, &sealed);
        cache.get("k", later()).unwrap();
        cache.shared.flush_all();
        store.set_unreachable(true);
        // Not offline yet (no probe), but the read fails: the copy answers.
        assert_eq!(cache.get("k", later()).unwrap().tag(), "k");
        let err = cache.get("never", later()).err().unwrap();
        assert!(matches!(err, CacheError::Store(StoreError::Unreachable(_))), "{err:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The tag of the first version in the sealed copy of `name` ("" without a copy).
    fn sealed_tag(sealed: &SealedCache, name: &str) -> String {
        sealed
            .load(name)
            .ok()
            .and_then(|c| StoredVersion::decode_all(&c.value).ok())
            .and_then(|v| {
                v[0].value.as_ref().map(|x| String::from_utf8_lossy(&x[KEY_LEN..]).into_owned())
            })
            .unwrap_or_default()
    }

    #[test]
    fn when_the_store_returns_deleted_keys_go_and_changed_ones_are_replaced() {
        let (dir, sealed) = sealed_dir("recheck");
        let store = Arc::new(MemStore::new());
        for k in ["gone", "same", "changed"] {
            store.create(k, &value(k), later()).unwrap();
        }
        let first = sealed_cache_over(store.clone(), config(0, 0, 0), 0, &sealed);
        for k in ["gone", "same", "changed"] {
            first.get(k, later()).unwrap();
        }
        drop(first);
        store.set_unreachable(true);
        let cache = sealed_cache_over(store.clone(), config(0, 0, 0), 20, &sealed);
        assert_eq!(cache.start_from_sealed(), 3);
        // Meanwhile, elsewhere: one key deleted, one replaced.
        store.set_unreachable(false);
        store.delete("gone", later()).unwrap();
        store.delete("changed", later()).unwrap();
        store.create("changed", &value("new"), later()).unwrap();
        assert!(eventually(Duration::from_secs(5), || !cache.is_offline()));
        assert!(eventually(Duration::from_secs(5), || sealed.names() == vec!["changed", "same"]));
        assert!(eventually(Duration::from_secs(5), || {
            cache.get("changed", later()).unwrap().tag() == "new"
        }));
        assert!(!cache.cached("gone"));
        assert_eq!(cache.get("gone", later()).err(), Some(CacheError::Store(StoreError::NotFound)));
        assert!(eventually(Duration::from_secs(5), || sealed_tag(&sealed, "changed") == "new"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_recheck_interval_is_a_quarter_of_max_age_within_bounds() {
        assert_eq!(recheck_interval(Duration::from_secs(3600)), Duration::from_secs(900));
        assert_eq!(recheck_interval(Duration::from_secs(168 * 3600)), RECHECK_MAX_INTERVAL);
        assert_eq!(recheck_interval(Duration::from_millis(1)), MIN_PERIOD);
    }

    #[test]
    fn a_periodic_recheck_while_the_store_stays_up_drops_deleted_keys_and_reseals_changed_ones() {
        // max_age 4 s: a pass every second.
        let (dir, sealed) = sealed_dir_aged("periodic", Duration::from_secs(4));
        let store = Arc::new(MemStore::new());
        for k in ["gone", "same", "changed"] {
            store.create(k, &value(k), later()).unwrap();
        }
        let cache = sealed_cache_over(store.clone(), config(0, 0, 0), 0, &sealed);
        cache.recheck_sealed();
        for k in ["gone", "same", "changed"] {
            cache.get(k, later()).unwrap();
        }
        assert_eq!(sealed.names(), vec!["changed", "gone", "same"]);
        // Behind the server's back, while the store stays up (no outage, no restart).
        store.delete("gone", later()).unwrap();
        store.delete("changed", later()).unwrap();
        store.create("changed", &value("new"), later()).unwrap();
        assert!(eventually(Duration::from_secs(30), || sealed.names() == vec!["changed", "same"]));
        assert!(!cache.cached("gone"));
        assert!(eventually(Duration::from_secs(30), || {
            cache.get("changed", later()).unwrap().tag() == "new"
        }));
        assert!(eventually(Duration::from_secs(30), || sealed_tag(&sealed, "changed") == "new"));
        // The startup pass and at least one periodic pass ended.
        assert!(eventually(Duration::from_secs(30), || cache.stats().recheck.passes >= 2));
        let stats = cache.stats().recheck;
        assert!(stats.removed == 1 && stats.stopped == 0 && stats.current >= 2, "{stats:?}");
        assert!(stats.last.is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_store_failure_during_a_recheck_deletes_nothing_and_waits_before_the_next_try() {
        let (dir, sealed) = sealed_dir_aged("failing", Duration::from_secs(4));
        let store = Arc::new(MemStore::new());
        for k in ["a", "b"] {
            store.create(k, &value(k), later()).unwrap();
        }
        // No probe: the cache never goes offline, only the reads fail.
        let cache = sealed_cache_over(store.clone(), config(0, 0, 0), 0, &sealed);
        cache.get("a", later()).unwrap();
        cache.get("b", later()).unwrap();
        store.set_unreachable(true);
        let before = Instant::now();
        cache.recheck_sealed();
        assert!(eventually(Duration::from_secs(30), || cache.stats().recheck.stopped == 1));
        assert!(eventually(Duration::from_secs(30), || {
            !cache.shared.recheck_running.load(Ordering::SeqCst)
        }));
        assert_eq!(sealed.names(), vec!["a", "b"]);
        assert!(cache.cached("a") && cache.cached("b"));
        // The next try waits RECHECK_RETRY_AFTER, not the next tick.
        let next = lock(&cache.shared.recheck_at).unwrap();
        assert!(next >= before + RECHECK_RETRY_AFTER, "{:?}", next - before);
        assert_eq!(cache.stats().recheck.passes, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A store with `n` keys, each with a sealed copy.
    fn sealed_keys(tag: &str, n: usize) -> (std::path::PathBuf, Arc<SealedCache>, Arc<MemStore>) {
        let (dir, sealed) = sealed_dir(tag);
        let store = Arc::new(MemStore::new());
        for i in 0..n {
            let name = format!("k{i:03}");
            store.create(&name, &value("v"), later()).unwrap();
            let stored = store.versions(&name, later()).unwrap();
            sealed.save(&name, &StoredVersion::encode_all(&stored));
        }
        (dir, sealed, store)
    }

    /// The attacker here is size: a vault with many keys must not be read in a burst. A
    /// lower bound on the time, which load can only lengthen.
    #[test]
    fn a_recheck_reads_one_key_per_gap() {
        let (dir, sealed, store) = sealed_keys("paced", 40);
        let cache = sealed_cache_over(store.clone(), config(0, 0, 0), 0, &sealed);
        let (reads, started) = (store.reads(), Instant::now());
        cache.recheck_sealed();
        assert!(eventually(Duration::from_secs(60), || cache.stats().recheck.passes == 1));
        assert!(started.elapsed() >= RECHECK_READ_GAP * 39, "{:?}", started.elapsed());
        assert_eq!(store.reads(), reads + 40);
        assert_eq!(cache.stats().recheck.current, 40);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn shutdown_stops_a_paced_recheck_before_its_next_read() {
        // 400 keys at one read per RECHECK_READ_GAP: a pass of 20 s.
        let (dir, sealed, store) = sealed_keys("shutdown", 400);
        let cache = sealed_cache_over(store.clone(), config(0, 0, 0), 0, &sealed);
        let reads = store.reads();
        cache.recheck_sealed();
        assert!(eventually(Duration::from_secs(30), || store.reads() >= reads + 2));
        cache.shutdown();
        // `shutdown` returned after the thread left: no read starts afterwards.
        assert!(!cache.shared.recheck_running.load(Ordering::SeqCst));
        assert!(lock(&cache.shared.recheck_thread).is_none());
        let after = store.reads();
        thread::sleep(RECHECK_READ_GAP * 4);
        assert_eq!(store.reads(), after);
        assert!(after < reads + 400, "the pass ran to its end");
        assert_eq!(sealed.names().len(), 400);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_delete_that_returns_during_a_read_wins_over_the_seal_of_what_was_read() {
        let (dir, sealed) = sealed_dir("order");
        let store = Arc::new(TestStore::default());
        store.mem.create("k", &value("old"), later()).unwrap();
        let cache = sealed_cache_over(store.clone(), config(0, 0, 0), 0, &sealed);
        // The read has the old value in hand and is held before it returns.
        store.set_hold(true);
        let reader = {
            let cache = Arc::clone(&cache);
            thread::spawn(move || cache.get("k", later()).map(|k| k.tag()))
        };
        assert!(eventually(Duration::from_secs(10), || store.entered.load(Ordering::SeqCst) == 1));
        cache.delete("k", later()).unwrap();
        store.set_hold(false);
        // The reader still answers what it read (it began before the delete) ...
        assert_eq!(reader.join().unwrap(), Ok("old".to_string()));
        // ... but neither seals it nor caches it: no copy of the deleted key appears.
        assert!(sealed.names().is_empty());
        assert!(!cache.cached("k"));
        assert_eq!(cache.get("k", later()).err(), Some(CacheError::Store(StoreError::NotFound)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
