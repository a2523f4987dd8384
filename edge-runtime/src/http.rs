//! The runtime's HTTP endpoints (HTTP/1.1, hyper on a tokio current-thread runtime that runs on
//! a thread of its own, so the run loop never waits on a client):
//!
//! - `GET /healthz`: JSON [`HealthReport`](crate::health::HealthReport); 200 when `ok`, else
//!   503 (the conditions are in [`crate::health`]).
//! - `GET /metrics`: Prometheus text format 0.0.4 (`text/plain; version=0.0.4`):
//!   - gauges `trident_build_info{version,runtime_version}` (1; `version` is the package's,
//!     absent without a package), `trident_healthy` (1 when `/healthz` is ok),
//!     `trident_uptime_seconds`, `trident_frames_per_second`, `trident_last_frame_age_seconds`
//!     (after the first frame), `trident_capturing`;
//!   - counter `trident_frames_total` (frames through the ensemble);
//!   - per source (`source="URI"`): counters `trident_source_frames_total`,
//!     `trident_source_dropped_frames_total`, `trident_source_errors_total`,
//!     `trident_source_reconnects_total`;
//!   - per model (`model="NAME"`): histogram `trident_model_latency_seconds` (buckets 5 ms to
//!     2.5 s, `_sum`, `_count`) and gauge `trident_model_running` (0 once dropped);
//!   - from the governor: gauges `trident_ladder_level{level_name}`, `trident_power_watts`,
//!     `trident_power_average_watts`, `trident_power_cap_watts`; counters
//!     `trident_level_changes_total`, `trident_energy_joules_total`.
//!
//! `HEAD` works on both; other methods get 405, other paths 404. `trident-edge run` serves on
//! `127.0.0.1:8080` unless `--http ADDR` says otherwise (`--http off`: no server).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::oneshot;

use crate::health::Health;

/// A client has this long to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The running server; dropping it (or [`HttpServer::shutdown`]) stops it and closes every open
/// connection.
pub struct HttpServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `addr` (port 0: any free port, see [`HttpServer::local_addr`]) and serves `health`
    /// from a new thread. A bind failure is returned here, naming the address.
    pub fn start(addr: SocketAddr, health: Arc<Health>) -> io::Result<HttpServer> {
        let named = |e: io::Error| io::Error::new(e.kind(), format!("HTTP on {addr}: {e}"));
        let listener = std::net::TcpListener::bind(addr).map_err(named)?;
        listener.set_nonblocking(true).map_err(named)?;
        let local = listener.local_addr().map_err(named)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(named)?;
        let listener = {
            let _context = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(named)?
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("trident-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::spawn(accept(listener, health));
                    // A send or the sender's drop both end the server.
                    let _ = stopped.await;
                });
                // Dropping the runtime cancels the accept loop and every connection.
            })
            .map_err(named)?;
        tracing::info!("serving /healthz and /metrics on http://{local}");
        Ok(HttpServer {
            addr: local,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address bound (with the port chosen when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits for its thread.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

async fn accept(listener: tokio::net::TcpListener, health: Arc<Health>) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!("http: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let health = Arc::clone(&health);
        let service = service_fn(move |req| {
            let response = respond(&req, &health);
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("http: connection: {e}");
            }
        });
    }
}

fn respond<B>(req: &Request<B>, health: &Health) -> Response<String> {
    let path = req.uri().path();
    if !matches!(path, "/healthz" | "/metrics") {
        return text(
            StatusCode::NOT_FOUND,
            format!("not found: {path} (endpoints: /healthz, /metrics)\n"),
        );
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} answers GET and HEAD\n"),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if path == "/metrics" {
        let mut r = Response::new(health.metrics());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        return no_store(r);
    }
    let report = health.report();
    let status = if report.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = serde_json::to_string(&report)
        .unwrap_or_else(|_| r#"{"ok":false,"problems":["cannot encode the report"]}"#.into());
    body.push('\n');
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    no_store(r)
}

fn text(status: StatusCode, body: String) -> Response<String> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn no_store(mut r: Response<String>) -> Response<String> {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET /healthz` of a runtime at `addr` (what `trident-edge health` and the deploy stage's
/// health gate ask): the HTTP status and the JSON body. A plain HTTP/1.1 request over a TCP
/// stream — one request needs no client library.
pub fn get_healthz(addr: SocketAddr, timeout: Duration) -> io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.take(1 << 20).read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP header end"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP status"))?;
    Ok((status, body.to_string()))
}
