//! The HTTP server under clients that misbehave — hundreds of idle connections, one trickling its
//! request a byte at a time, one asking for responses it never reads — must keep answering,
//! keep its descriptors and threads bounded, and drop the slow clients once their time is up.
//!
//! Server-side sockets are counted exactly: `/proc/self/fd` says which socket inodes this process
//! holds and `/proc/net/tcp{,6}` which of them are the server's end (local port = the server's).
//! The test is alone in its binary, so the process's thread count is the server's to change.
//!
//! Times are bounds for "at all", not performance targets (those belong in benchmarks): the
//! timeouts are 1 s and every wait allows 10 s, so a loaded CI machine does not fail it, while a
//! server without the limits never gets there (idle and slow connections would hold every slot
//! for good).

use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use trident_edge::health::{Health, HealthConfig};
use trident_edge::http::{HttpLimits, HttpServer};

const CAP: usize = 8;
const TIMEOUT: Duration = Duration::from_secs(1);
const IDLE_CLIENTS: usize = 250;
/// The generous bound on every wait (see the module comment).
const PATIENCE: Duration = Duration::from_secs(10);

/// Socket inodes of this process's descriptors.
fn socket_inodes() -> HashSet<u64> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            link.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// The connections the server on `port` holds open in this process: the client port of each.
fn served(port: u16) -> HashSet<u16> {
    let ours = socket_inodes();
    let hex_port = |address: &str| u16::from_str_radix(address.rsplit(':').next()?, 16).ok();
    let mut clients = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for row in text.lines().skip(1) {
            let f: Vec<&str> = row.split_whitespace().collect();
            // local, remote, state (0A: listening), …, inode.
            let (Some(local), Some(remote), Some(inode)) =
                (hex_port(f[1]), hex_port(f[2]), f[9].parse::<u64>().ok())
            else {
                continue;
            };
            if local == port && f[3] != "0A" && ours.contains(&inode) {
                clients.insert(remote);
            }
        }
    }
    clients
}

/// Status, lower-case headers and body of a whole response.
fn parse(raw: &[u8]) -> (u16, HashMap<String, String>, String) {
    let raw = String::from_utf8_lossy(raw);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// `GET path` on a fresh connection. A connection over the cap is answered and closed before
/// the request arrives: writing may then fail and reading end in a reset, after the 503.
fn get(addr: SocketAddr, path: &str, extra: &str) -> (u16, HashMap<String, String>, String) {
    let mut s = TcpStream::connect_timeout(&addr, PATIENCE).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    if let Err(e) = s.write_all(request.as_bytes()) {
        assert!(refused(&e), "{e}");
    }
    let mut raw = Vec::new();
    if let Err(e) = s.read_to_end(&mut raw) {
        assert!(refused(&e), "{e}");
    }
    parse(&raw)
}

fn refused(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset)
}

/// Waits (up to PATIENCE) until `done`, calling `meanwhile` between looks.
fn wait_for(what: &str, mut done: impl FnMut() -> bool, mut meanwhile: impl FnMut()) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < PATIENCE,
            "{what}: not within {PATIENCE:?}"
        );
        meanwhile();
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn misbehaving_clients_cannot_take_the_server_or_its_descriptors() {
    let health = Arc::new(Health::new(HealthConfig::default()));
    // Many long source names: /metrics becomes a few hundred kB, so the responses a client asks
    // for and never reads overflow the socket buffers and the server's writes stall.
    health.update().begin(
        (0..400).map(|i| format!("test://camera-{i:03}-{}", "x".repeat(200))),
        ["m"],
    );
    let limits = HttpLimits {
        max_connections: CAP,
        read_timeout: TIMEOUT,
        write_timeout: TIMEOUT,
        ..HttpLimits::DEFAULT
    };
    let threads_before = threads();
    let server = HttpServer::start_with("127.0.0.1:0".parse().unwrap(), health, limits).unwrap();
    let addr = server.local_addr();
    let port = addr.port();
    // One thread for the whole server, whatever comes.
    let server_threads = threads();
    assert_eq!(server_threads, threads_before + 1);
    let fds_before = open_fds();

    // A request head over the limit: 431, not an ever-growing buffer.
    let (status, _, _) = get(
        addr,
        "/healthz",
        &format!("X-Pad: {}\r\n", "a".repeat(9000)),
    );
    assert_eq!(status, 431);

    // The slow clients take their slots first.
    let mut trickler = TcpStream::connect(addr).unwrap();
    trickler.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    let mut hoarder = TcpStream::connect(addr).unwrap();
    hoarder
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let _ = hoarder.write_all(&b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(100));
    let slow = [
        trickler.local_addr().unwrap().port(),
        hoarder.local_addr().unwrap().port(),
    ];
    wait_for(
        "both slow clients served",
        || slow.iter().all(|p| served(port).contains(p)),
        || {},
    );

    // Then the flood: connections that never send a byte.
    let idle: Vec<TcpStream> = (0..IDLE_CLIENTS)
        .filter_map(|_| TcpStream::connect_timeout(&addr, PATIENCE).ok())
        .collect();
    assert!(idle.len() > IDLE_CLIENTS / 2, "{} connected", idle.len());
    // Over the cap: answered 503 with Retry-After and closed, without waiting for a request.
    let mut last = idle.last().unwrap().try_clone().unwrap();
    last.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut raw = Vec::new();
    if let Err(e) = last.read_to_end(&mut raw) {
        assert!(refused(&e), "{e}");
    }
    let (status, headers, body) = parse(&raw);
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(headers.get("retry-after").map(String::as_str), Some("1"));
    assert!(body.contains("busy"), "{body}");

    // The server holds at most CAP connections; the process's descriptors grew by the clients'
    // own ends and at most CAP more; still one server thread.
    let held = served(port).len();
    assert!(held <= CAP, "the server holds {held} connections");
    // The idle ones, the two slow ones and the clone just read from.
    let clients = idle.len() + 3;
    assert!(
        open_fds() <= fds_before + clients + CAP,
        "{} descriptors, {fds_before} before, {clients} clients",
        open_fds()
    );
    assert_eq!(threads(), server_threads);

    // A fresh client gets /healthz's report (ok: the run has begun, no frame is stale yet) once the idle
    // connections' time is up, asking again when told the server is busy; meanwhile the trickler
    // keeps sending a header byte at a time.
    let mut trickle = b"X-Slow: ".iter().chain(std::iter::repeat(&b'a'));
    let mut trickled = || {
        let _ = trickler.write_all(&[*trickle.next().unwrap()]);
    };
    let mut busy_answers = 0;
    wait_for(
        "/healthz answered by a fresh client",
        || {
            let (status, headers, body) = get(addr, "/healthz", "");
            if status == 0 || headers.contains_key("retry-after") {
                busy_answers += 1;
                return false;
            }
            assert_eq!(status, 200, "{body}");
            let report: serde_json::Value = serde_json::from_str(&body).unwrap();
            report["ok"] == true
        },
        &mut trickled,
    );
    assert!(served(port).len() <= CAP);

    // The trickler (header deadline) and the client that never reads (response deadline) are
    // dropped, though both still hold their ends open and the trickler still sends.
    wait_for(
        "the slow clients dropped",
        || {
            let now = served(port);
            slow.iter().all(|p| !now.contains(p))
        },
        &mut trickled,
    );
    assert_eq!(threads(), server_threads);
    eprintln!("{busy_answers} busy answers before the health report");

    // Every connection closed at the clients: back to where it started.
    drop((idle, trickler, hoarder, last));
    wait_for("no connection left", || served(port).is_empty(), || {});
    assert!(open_fds() <= fds_before, "{} > {fds_before}", open_fds());
    server.shutdown();
    assert_eq!(threads(), threads_before);
}
