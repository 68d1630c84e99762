//! Running the service: accept connections, serve HTTP/1.1 and HTTP/2 (terminals' gRPC) on
//! each, and shut down gracefully.
//!
//! Each connection is bounded in time as well as in number: its headers must arrive within
//! the header-read timeout (HTTP/1.1, every request; any protocol, the first request after
//! connecting), and a connection with nothing in flight is closed once idle for the idle
//! timeout, so a client cannot hold sockets open by sending nothing, or a byte at a time.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::app::App;
use crate::http::{self, HttpSettings};

/// HTTP/2 pings an idle peer this often, and gives up on it when a ping goes unanswered this
/// long: a terminal that vanished without closing its connection is noticed.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// After an accept error (out of file descriptors, most likely) wait this long before the
/// next accept rather than spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The time bounds every connection is served under.
#[derive(Clone, Copy, Debug)]
struct ConnectionLimits {
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

/// Serve until `shutdown` resolves, then stop accepting connections and give in-flight
/// requests up to `grace` to finish.
pub async fn serve(
    app: App,
    settings: &HttpSettings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let router = http::router(app, settings);
    let limits = ConnectionLimits {
        header_read_timeout: Duration::from_millis(settings.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(settings.idle_connection_timeout_ms),
    };
    let builder = Arc::new(connection_builder(limits));
    let open = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&open).acquire_owned() => permit.expect("the connection semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
            // Finished connections are reaped as they go, so the set holds only open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        send_at_once(&stream);
        let connection =
            serve_connection(Arc::clone(&builder), router.clone(), stream, remote, stop_rx.clone(), limits, permit);
        connections.spawn(connection);
    }
    drop(listener);
    tracing::info!("shutting down: no new connections, finishing requests in flight");
    let _ = stop_tx.send(true);
    let finished = tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        tracing::warn!(grace_ms = grace.as_millis() as u64, "grace period over; dropping remaining requests");
        connections.abort_all();
    }
    Ok(())
}

fn connection_builder(limits: ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
    builder
}

/// Serve one connection until it closes, the server stops, or it overstays its bounds.
async fn serve_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: Router,
    stream: TcpStream,
    remote: SocketAddr,
    mut stop: watch::Receiver<bool>,
    limits: ConnectionLimits,
    _open: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request: ::http::Request<Incoming>| {
            let busy = Activity::begin(&activity);
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(remote));
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await.unwrap_or_else(|never: Infallible| match never {});
                // The connection counts as busy until the response body is sent, too.
                Ok::<_, Infallible>(response.map(|body| Body::new(Tracked { body, _busy: busy })))
            }
        })
    };
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut closing: Option<Instant> = None;
    loop {
        let deadline = match closing {
            // A connection asked to close may finish what it is sending, within the bound
            // a request has for its headers; then it is dropped.
            Some(since) => since + limits.header_read_timeout,
            None => activity.deadline(limits),
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, %remote, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if closing.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing = Some(Instant::now());
            }
            () = tokio::time::sleep_until(deadline) => {
                if closing.is_some() {
                    return;
                }
                match activity.overstayed(limits) {
                    Overstay::No => {}
                    // Nothing but a trickle of bytes, or nothing at all, since connecting.
                    Overstay::NeverAsked => {
                        tracing::debug!(%remote, "connection sent no request in time; closed");
                        return;
                    }
                    Overstay::Idle => {
                        connection.as_mut().graceful_shutdown();
                        closing = Some(Instant::now());
                    }
                }
            }
        }
    }
}

/// Accepted connections send each write at once. With Nagle's algorithm a small write
/// behind unacknowledged data waits for the peer's delayed ACK (40 ms on Linux): HTTP/2
/// answers to many terminals on one connection, and keep-alive HTTP/1.1 answers, would
/// stall on it.
fn send_at_once(stream: &TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY on an accepted connection");
    }
}

/// A listener whose accepted connections send each write at once (see [`send_at_once`]),
/// for servers run with `axum::serve` (the sandbox operator).
pub fn without_nagle(listener: TcpListener) -> impl axum::serve::Listener<Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt as _;
    listener.tap_io(|stream| send_at_once(stream))
}

/// What a connection is doing, for its time bounds.
#[derive(Debug)]
struct Activity(Mutex<ActivityState>);

#[derive(Debug)]
struct ActivityState {
    in_flight: usize,
    requests: u64,
    /// Since when nothing has been in flight (the connection's start, at first).
    idle_since: Instant,
}

enum Overstay {
    No,
    NeverAsked,
    Idle,
}

impl Activity {
    fn new() -> Activity {
        Activity(Mutex::new(ActivityState { in_flight: 0, requests: 0, idle_since: Instant::now() }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn begin(activity: &Arc<Activity>) -> Busy {
        let mut state = activity.state();
        state.in_flight += 1;
        state.requests += 1;
        Busy(Arc::clone(activity))
    }

    /// When the bounds should next be looked at.
    fn deadline(&self, limits: ConnectionLimits) -> Instant {
        let state = self.state();
        match (state.requests, state.in_flight) {
            (0, _) => state.idle_since + limits.header_read_timeout,
            // Busy: look again one idle timeout from now (it cannot be idle before that).
            (_, 1..) => Instant::now() + limits.idle_timeout,
            (_, 0) => state.idle_since + limits.idle_timeout,
        }
    }

    fn overstayed(&self, limits: ConnectionLimits) -> Overstay {
        let state = self.state();
        let idle_for = state.idle_since.elapsed();
        match (state.requests, state.in_flight) {
            (0, _) if idle_for >= limits.header_read_timeout => Overstay::NeverAsked,
            (1.., 0) if idle_for >= limits.idle_timeout => Overstay::Idle,
            _ => Overstay::No,
        }
    }
}

/// A request in flight on its connection; when dropped, the connection may become idle.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
        }
    }
}

/// A response body that keeps its request counted as in flight until it is sent or dropped.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
