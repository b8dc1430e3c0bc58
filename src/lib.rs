//! # kes: a synchronous, hardened KES server and CLI
//!
//! A drop-in replacement for MinIO's KES (Key Encryption Service): the same wire API, the
//! same config file, the same CLI, the same stored-key and ciphertext formats, with Azure
//! Key Vault (or a local directory) as the key store. No async runtime: one thread per
//! connection, blocking sockets with timeouts, and hard limits on everything a client sends.
//!
//! ## Layers (dependencies point down only)
//!
//! ```text
//! L4  main -> cli                     argv -> commands; the only code that prints or exits
//! L3  server (+ config)               sockets, threads, TLS, startup order, reload
//! L2  api                             pure: (Request, Identity, &State) -> Response
//! L1  http | auth | keystore | crypto | obs    (no imports between these)
//! L0  sys                             the only `unsafe`: the wiping allocator; mlockall, prctl, rlimits, seccomp
//!     gojson, gotime, der, hex, pem, names, percent   leaves: used by any layer, import only other leaves
//! ```
//!
//! A module may import the modules of lower layers, the leaves, and what its row names
//! besides; nothing else. `tests/layers.rs` reads this table and fails, naming file and
//! line, on any other `crate::` path in `src/` (test code included).
//!
//! | layer | modules | may also import |
//! |---|---|---|
//! | L4 | `cli` | |
//! | L3 | `server` | `config` |
//! | L3 | `config` | |
//! | L2 | `api` | |
//! | L1 | `http`, `auth`, `crypto`, `keystore`, `obs` | |
//! | L0 | `sys` | |
//! | leaf | `gojson`, `gotime`, `goroots`, `der`, `hex`, `pem`, `names`, `percent` | |
//! | main | `src/main.rs` | `cli`, `sys` |
//!
//! Types a lower layer needs live in that layer and `config` maps the YAML onto them
//! (`obs::Level`, `keystore::cache::CacheConfig`, `keystore::azure::AzureConfig`,
//! `api::routes::ApiOverride`). The key cache never decodes a stored value: `api` hands it
//! the parser (`api::parse_key`). No L1 module imports another: what several of them need
//! is a leaf, e.g. `pem`, the one reader of PEM private keys (the server's `tls.key`, the
//! CLI's client key and the Azure certificate credential, legacy encrypted keys included).
//!
//! ## One request, end to end
//!
//! 1. `server` accepts and admits (`server::admission`): at the connection cap the least
//!    productive connection (handshaking, waiting for a head, idle; never one whose request
//!    is being handled) is evicted, within a fair share per source address. A named thread
//!    with a small explicit stack takes the connection: one of the threads kept between
//!    connections (`server::workers`), or a new one when all of those are busy, which
//!    `server::reaper` joins when it ends, so that glibc frees its stack and TLS block.
//! 2. The thread completes the rustls handshake under an absolute deadline (every phase
//!    has one: handshake, head, body, response write) and derives the client
//!    [`auth::Identity`] (lowercase hex SHA-256 of the leaf certificate's SPKI).
//! 3. `http` reads a bounded head, `api::routes` finds the route *before* the body is read,
//!    then at most that route's `max_body` bytes are read. A head that never becomes a
//!    request is answered by `api::error` too (431, 505, 501, 400, 408): `server::conn`
//!    decides when to answer, never with which status.
//! 4. `api::handle` authorizes (admin bypass, deny beats allow) into an
//!    [`auth::Authorized`] proof, runs the handler, and maps failures to upstream's exact
//!    `(status, message)` pairs in one function (`api::error`).
//! 5. Handlers reach keys through `keystore::cache` (single-flight; every version of a key
//!    at once, decoded by `api::parse_key` with `crypto`), seal with the newest live
//!    version or open with the named or each live version, and answer with the wire types
//!    of `api::wire`. Deletes and version changes go through the cache too, which forgets
//!    what it held.
//! 6. One audit record, the response is written, and the connection is kept or closed.
//!
//! ## Modules
//!
//! | module | owns |
//! |---|---|
//! | `cli` | argv parsing, every command's output, exit codes; the client HTTP stack |
//! | `server` | startup order, TLS config and rotation, the accept loop, connections, reload, `--check` |
//! | `config` | upstream's YAML, `${VAR}` expansion, `credential:`/`file:` secret sources, validation in upstream's order |
//! | `api` | the route table and its `api.<path>` overrides, authorization, handlers, the one status mapping, the parser the key cache uses |
//! | `http` | the sans-IO HTTP/1.1 head parser, body framing, response bytes |
//! | `auth` | identities (key hashes and `ca:…/dns:…` attributes), API keys, policies, the `Authorized` proof, minimal X.509 facts |
//! | `crypto` | secret types, stored-key codecs F0–F4, ciphertext formats, AEAD, HChaCha20, writing legacy encrypted PEM keys (the random IV); a key's versions (`VersionedKey`) |
//! | `keystore` | the `KeyStore` trait (a key is versions, the first being upstream's key); `mem`, `fs`, `azure`; the single-flight key cache (generic over the parsed value, owning deletes and version writes) and its sealed copy on disk (`cache.persist`) |
//! | `obs` | log levels, audit trail (the hash-chained audit file, `obs::audit_file`; stdout lines batched by one writer thread, `obs::batch`), error log, stream fan-out, Prometheus text, process figures |
//! | `gojson`, `gotime`, `goroots`, `der`, `hex`, `pem`, `names`, `percent` | leaf helpers: Go's JSON and time/duration text, Go's trusted roots (`SSL_CERT_FILE`/`SSL_CERT_DIR`), a minimal DER walker, hex text, PEM files (private keys of every kind, legacy encrypted ones included, and the certificates beside them), the name rule of keys, policies and identities, percent-encoding with the keep-set of each Go function a caller must match |
//! | `sys` | mlockall, prctl, rlimits, the seccomp filters, sd_notify, the allocator that wipes freed memory, glibc's allocator settings and the re-exec that applies its tunables (`sys::tunables`) |
//!
//! ## Invariants
//!
//! * `http` never sees JSON; `api` never touches a socket or a TLS type.
//! * Only `sys` contains `unsafe`; only `cli` prints or chooses exit codes.
//! * Key material never reaches `Debug`, `Display`, a log line, an audit record or an error
//!   message. Secret types zeroize on drop and have no `Debug`/`Clone`; the binary's
//!   allocator (`sys::wipe`) zeroes every other buffer when it is freed.
//! * Every resource a client can consume has a named constant with a reason.

#![deny(unsafe_code)]

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod der;
pub mod gojson;
pub mod goroots;
pub mod gotime;
pub mod hex;
pub mod http;
pub mod keystore;
pub mod names;
pub mod obs;
pub mod pem;
pub mod percent;
pub mod server;
pub mod sys;
