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
//!   - per source (`source="URI"`, credentials masked): counters `trident_source_frames_total`,
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
//!
//! The server shares the process's file descriptors with the cameras, the detections log and the
//! engines, so a scraper gone wrong must not be able to use them up: [`HttpLimits`] caps the
//! connections served at once (more are answered `503` with `Retry-After` and closed at once,
//! without a task, a timer or a buffer of their own), gives each request head a size limit and a
//! deadline, and each response a deadline. Connections are tasks on the one server thread, never
//! threads.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Semaphore, oneshot};
use tokio::time::Sleep;

use crate::health::Health;

/// `--http-max-connections`' default: a Prometheus server, a deploy gate and a few people with
/// curl, with room to spare.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;

/// What one client may take of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served at once; each one over is answered `503 Service Unavailable` with
    /// `Retry-After: 1` and closed at once.
    pub max_connections: usize,
    /// A client has this long to send a whole request head, counted from when the server starts
    /// waiting for it (the connection's opening, or the previous response on a kept-alive
    /// connection): a silent client, or one trickling its request byte by byte, is closed then.
    pub read_timeout: Duration,
    /// A response must be written within this long of its first byte: a client that does not
    /// read (its receive window full) is closed then.
    pub write_timeout: Duration,
    /// The largest request head (request line and headers) in bytes; a larger one is answered
    /// `431` and the connection closed. Bodies are never read: both endpoints take none.
    pub max_request_bytes: usize,
}

impl HttpLimits {
    pub const DEFAULT: HttpLimits = HttpLimits {
        max_connections: DEFAULT_MAX_CONNECTIONS,
        read_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
        max_request_bytes: 8 * 1024,
    };
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits::DEFAULT
    }
}

/// hyper's smallest read buffer; a smaller `max_request_bytes` is enforced by the header limit.
const MIN_READ_BUFFER: usize = 8192;

/// The running server; dropping it (or [`HttpServer::shutdown`]) stops it and closes every open
/// connection.
pub struct HttpServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `addr` (port 0: any free port, see [`HttpServer::local_addr`]) and serves `health`
    /// from a new thread under the default [`HttpLimits`]. A bind failure is returned here,
    /// naming the address.
    pub fn start(addr: SocketAddr, health: Arc<Health>) -> io::Result<HttpServer> {
        HttpServer::start_with(addr, health, HttpLimits::DEFAULT)
    }

    /// As [`HttpServer::start`], under `limits`.
    pub fn start_with(
        addr: SocketAddr,
        health: Arc<Health>,
        limits: HttpLimits,
    ) -> io::Result<HttpServer> {
        if limits.max_connections == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("HTTP on {addr}: at least one connection must be allowed"),
            ));
        }
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
                    tokio::spawn(accept(listener, health, limits));
                    // A send or the sender's drop both end the server.
                    let _ = stopped.await;
                });
                // Dropping the runtime cancels the accept loop and every connection.
            })
            .map_err(named)?;
        tracing::info!(
            "serving /healthz and /metrics on http://{local} (at most {} connections)",
            limits.max_connections
        );
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

async fn accept(listener: tokio::net::TcpListener, health: Arc<Health>, limits: HttpLimits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let busy = busy_response();
    let mut refusals = Refusals::default();
    let mut http = http1::Builder::new();
    // hyper's header timeout runs from the moment it waits for a request head, idle time
    // included, so it bounds silent and trickling clients alike.
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        .max_header_size(limits.max_request_bytes)
        .max_buf_size(limits.max_request_bytes.max(MIN_READ_BUFFER));
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
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refuse(stream, &busy);
            refusals.note(limits.max_connections);
            continue;
        };
        let health = Arc::clone(&health);
        let service = service_fn(move |req| {
            let response = respond(&req, &health);
            async move { Ok::<_, Infallible>(response) }
        });
        let io = TokioIo::new(WriteDeadline::new(stream, limits.write_timeout));
        let connection = http.serve_connection(io, service);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("http: connection: {e}");
            }
            // The slot is free once the socket is closed (the connection owned it).
            drop(slot);
        });
    }
}

/// The answer to a connection over the cap, written whole (it fits any socket buffer).
fn busy_response() -> Vec<u8> {
    let body = "busy: too many HTTP connections; retry in a second\n";
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: text/plain; charset=utf-8\r\n\
         cache-control: no-store\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers `busy` without waiting for anything and closes the connection: the descriptor is back
/// before the next accept, however many clients pile up.
fn refuse(stream: tokio::net::TcpStream, busy: &[u8]) {
    let _ = stream.try_write(busy);
    // Closing a socket with unread bytes sends a reset, which may discard the 503 before the
    // client reads it; what has already arrived is read and dropped (never waited for).
    let mut sink = [0u8; 2048];
    for _ in 0..4 {
        if !matches!(stream.try_read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
}

/// Refused connections, logged at most once a minute: a flood must not flood the journal too.
#[derive(Default)]
struct Refusals {
    unlogged: u64,
    logged_at: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, max: usize) {
        self.unlogged += 1;
        if self
            .logged_at
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            tracing::warn!(
                "http: {max} connections open (--http-max-connections); answered 503 to {} more",
                self.unlogged
            );
            self.unlogged = 0;
            self.logged_at = Some(Instant::now());
        }
    }
}

/// The socket with a deadline on each response: the clock starts at the response's first write
/// and stops when hyper flushes it (hyper flushes after every response). hyper has no write
/// timeout of its own, and a client that stops reading otherwise holds its slot for ever.
struct WriteDeadline<S> {
    io: S,
    limit: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(io: S, limit: Duration) -> Self {
        WriteDeadline {
            io,
            limit,
            deadline: None,
        }
    }

    /// Starts the clock on a response's first write; a write still waiting when it runs out
    /// fails, which ends the connection.
    fn check<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match r {
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client took no response for {limit:?}"),
                )))
            }
            r => r,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.check(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.check(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                // The response is out: the next one gets a clock of its own.
                this.deadline = None;
                Poll::Ready(Ok(()))
            }
            r => this.check(cx, r),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_shutdown(cx);
        this.check(cx, r)
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
/// health gate ask): the HTTP status and the JSON body (a busy server's 503 has a text body,
/// which the gate counts as not healthy and asks again). A plain HTTP/1.1 request over a TCP
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
