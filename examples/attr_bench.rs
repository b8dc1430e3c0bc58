//! What attribute identities cost: new mTLS connections per second (handshake + one
//! `GET /v1/status`) against two servers of the same binary, both with `tls.auth: on` and
//! the same `tls.ca`; one names the client by its key hash, the other by
//! `ca:<hash>/dns:bench.example.com` (so it verifies a chain it has not cached once more).
//! Rounds alternate between the two servers; the ratio is what matters on a shared machine.
//! Then the attacker against the cache of verified chains (`auth::attr`): one valid
//! certificate with ever different extra CA certificates, and more distinct valid
//! certificates than the cache holds; the cache's entries and the server's RSS are printed.
//!
//!     cargo build --release
//!     cargo run --example attr_bench -- target/release/kes [CONNECTIONS_PER_ROUND] [ROUNDS]
//!
//! The servers' CPU time per connection (from `/proc`) is the figure to compare on a
//! shared machine; it does not depend on how the client is built.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Client, ClientId, PackagedServer, TempDir};
use rustls_pki_types::PrivateKeyDer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = args.get(1).cloned().unwrap_or_else(|| "target/release/kes".into());
    let per_round: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(300);
    let rounds: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);

    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ca_params = ca_params_named("bench CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = |name: &str| -> ClientId {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.is_ca = rcgen::IsCa::ExplicitNoCa;
        p.subject_alt_names = vec![rcgen::SanType::DnsName(name.try_into().unwrap())];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &issuer).unwrap();
        ClientId {
            identity: kes::auth::Identity::from_cert_der(cert.der()).unwrap().to_string(),
            cert: cert.der().clone(),
            key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    };
    let client = leaf("bench.example.com");
    let dir = TempDir::new("attr-bench");
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let tls = format!("  auth: on\n  ca: {}\n", dir.join("ca.pem").display());
    let policy = |who: &str| {
        format!("policy:\n  p:\n    allow: [/v1/status]\n    identities: [\"{who}\"]\n")
    };
    let hash = kes::auth::attr::ca_hash(ca.der());
    let start = |policy: &str| {
        let admin = leaf("admin.example.com");
        PackagedServer::start_config(&bin, "attr-bench", &["--no-mlock"], admin, &tls, policy)
    };
    let servers = [
        ("key hash", start(&policy(&client.identity))),
        ("ca:/dns:", start(&policy(&format!("ca:{hash}/dns:bench.example.com")))),
    ];
    let addr = |s: &PackagedServer| SocketAddr::from(([127, 0, 0, 1], s.port));
    let cfg = |bin: &PackagedServer| client_config(bin, vec![client.cert.clone()], &client);
    let configs = [cfg(&servers[0].1), cfg(&servers[1].1)];
    let mut rates = [Vec::new(), Vec::new()];
    // Server CPU time over the counted rounds: far less sensitive than throughput to what
    // else runs on a shared machine.
    let mut cpu = [0u64; 2];
    for round in 0..=rounds {
        for (i, (_, bin)) in servers.iter().enumerate() {
            let cpu_before = cpu_ticks(bin.child.id());
            let started = Instant::now();
            for _ in 0..per_round {
                let mut c = connect(addr(bin), configs[i].clone());
                assert_eq!(c.get("/v1/status").status, 200);
            }
            // Round 0 warms both servers up and is not counted.
            if round > 0 {
                rates[i].push(per_round as f64 / started.elapsed().as_secs_f64());
                cpu[i] += cpu_ticks(bin.child.id()) - cpu_before;
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, b) = (median(&mut rates[0]), median(&mut rates[1]));
    for ((name, _), r) in servers.iter().zip([a, b]) {
        println!("{name:<9} {r:>8.0} connections/s (median of {rounds} rounds of {per_round})");
    }
    println!("ratio ca:/dns: / key hash = {:.3}", b / a);
    let per_conn = |ticks: u64| ticks as f64 * 10_000.0 / (per_round * rounds) as f64;
    println!(
        "server CPU per new connection: key hash {:.0} us, ca:/dns: {:.0} us, ratio {:.3}",
        per_conn(cpu[0]),
        per_conn(cpu[1]),
        cpu[1] as f64 / cpu[0] as f64
    );

    // The attacker against the cache of verified chains: it holds one valid client
    // certificate and presents it with ever different extra CA certificates (each chain
    // is new), then many distinct valid certificates (more than the cache holds).
    let bin = &servers[1].1;
    let mut admin = Client::connect(addr(bin), &bin.server_cert, Some(&bin.admin));
    let figure = |admin: &mut Client, name: &str| -> u64 {
        let text = admin.get("/v1/metrics").text();
        let prefix = format!("kes_tls_client_chain_cache_{name} ");
        text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).unwrap().parse().unwrap()
    };
    let rss_before = bin.status_kib("VmRSS:");
    let junk = per_round * 3;
    for i in 0..junk {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let extra = ca_params_named(&format!("junk {i}")).self_signed(&key).unwrap();
        let cfg = client_config(bin, vec![client.cert.clone(), extra.der().clone()], &client);
        let mut c = connect(addr(bin), cfg);
        assert_eq!(c.get("/v1/status").status, 200);
    }
    println!(
        "attack: one certificate with {junk} different extra CA certificates: cache entries {}, \
         misses {}, server RSS {} -> {} KiB",
        figure(&mut admin, "entries"),
        figure(&mut admin, "misses"),
        rss_before,
        bin.status_kib("VmRSS:")
    );
    let many = kes::auth::attr::MAX_CACHED_CHAINS + 100;
    for i in 0..many {
        let other = leaf(&format!("client-{i}.example.com"));
        let cfg = client_config(bin, vec![other.cert.clone()], &other);
        let mut c = connect(addr(bin), cfg);
        // Not named by the policy: refused, but verified (and remembered) all the same.
        assert_eq!(c.get("/v1/status").status, 403);
    }
    println!(
        "attack: {many} distinct valid certificates: cache entries {} (at most {}), server RSS \
         {} KiB",
        figure(&mut admin, "entries"),
        kes::auth::attr::MAX_CACHED_CHAINS,
        bin.status_kib("VmRSS:")
    );
}

/// A client connection with TCP_NODELAY, as Go's clients (MinIO, kms-go) set it: without
/// it the request written after the handshake waits for a delayed ACK (~40 ms), which
/// would hide every difference between the servers.
fn connect(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> Client {
    let sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_nodelay(true).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(cfg, name).unwrap();
    Client::from_parts(rustls::StreamOwned::new(conn, sock))
}

/// utime + stime of a process in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

fn ca_params_named(name: &str) -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p
}

/// A client configuration trusting `bin`'s certificate and presenting `chain` with `id`'s key.
fn client_config(
    bin: &PackagedServer,
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    id: &ClientId,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(bin.server_cert.clone()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, id.key.clone_key())
        .unwrap(),
    )
}
