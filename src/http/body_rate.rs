//! A floor under how fast a request body must arrive. Every request body is read through
//! [`RateBody`]: while a handler waits for bytes, the client must deliver at least
//! `min_bytes_per_s × window` of them within each `window` of waiting, or the read fails and
//! the request is answered 408. Only time spent waiting on the client counts: a handler that
//! stops reading for a while (a busy upload pipeline) does not make its client "slow".

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The floor; from config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyRate {
    pub min_bytes_per_s: u64,
    pub window_ms: u64,
}

impl Default for BodyRate {
    fn default() -> Self {
        BodyRate { min_bytes_per_s: 1_024, window_ms: 10_000 }
    }
}

impl BodyRate {
    fn bytes_per_window(self) -> u64 {
        self.min_bytes_per_s.saturating_mul(self.window_ms).div_ceil(1_000).max(1)
    }
}

/// What the middleware learns about a request's body while the handler reads it.
#[derive(Debug, Default)]
pub struct BodyWatch(AtomicU8);

const READING: u8 = 0;
const WAITING_ON_CLIENT: u8 = 1;
const COMPLETE: u8 = 2;
const TOO_SLOW: u8 = 3;

impl BodyWatch {
    fn set(&self, state: u8) {
        // Too slow is final: later polls must not make the request look merely slow.
        let _ = self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| (now != TOO_SLOW).then_some(state));
    }

    /// The body failed the floor.
    pub fn too_slow(&self) -> bool {
        self.0.load(Ordering::Acquire) == TOO_SLOW
    }

    /// The handler was waiting for the client's bytes (when it was cut off).
    pub fn waiting_on_client(&self) -> bool {
        matches!(self.0.load(Ordering::Acquire), WAITING_ON_CLIENT | TOO_SLOW)
    }
}

/// The body read failed because the client sent too slowly.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived more slowly than the server accepts")]
pub struct BodyTooSlow;

/// A request body under the floor.
pub struct RateBody {
    inner: Body,
    rate: BodyRate,
    watch: Arc<BodyWatch>,
    /// Bytes received in the current window.
    window_bytes: u64,
    /// Time spent waiting on the client in the current window, not counting a wait going on.
    waited: Duration,
    /// When the current wait began, and when it fails the floor.
    waiting: Option<(Instant, Pin<Box<Sleep>>)>,
}

impl RateBody {
    pub fn wrap(inner: Body, rate: BodyRate) -> (Body, Arc<BodyWatch>) {
        let watch = Arc::new(BodyWatch::default());
        if http_body::Body::is_end_stream(&inner) {
            watch.set(COMPLETE);
            return (inner, watch);
        }
        let body =
            RateBody { inner, rate, watch: Arc::clone(&watch), window_bytes: 0, waited: Duration::ZERO, waiting: None };
        (Body::new(body), watch)
    }

    fn stop_waiting(&mut self) {
        if let Some((since, _)) = self.waiting.take() {
            self.waited += since.elapsed();
        }
    }

    fn received(&mut self, bytes: usize) {
        self.window_bytes = self.window_bytes.saturating_add(u64::try_from(bytes).unwrap_or(u64::MAX));
        if self.window_bytes >= self.rate.bytes_per_window() {
            self.window_bytes = 0;
            self.waited = Duration::ZERO;
        }
    }
}

impl http_body::Body for RateBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if this.watch.too_slow() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTooSlow))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.stop_waiting();
                if let Some(data) = frame.data_ref() {
                    this.received(data.len());
                }
                let done = http_body::Body::is_end_stream(&this.inner);
                this.watch.set(if done { COMPLETE } else { READING });
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.stop_waiting();
                this.watch.set(COMPLETE);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => {
                this.stop_waiting();
                this.watch.set(READING);
                Poll::Ready(Some(Err(error)))
            }
            Poll::Pending => {
                let (rate, waited) = (this.rate, this.waited);
                let (_, deadline) = this.waiting.get_or_insert_with(|| {
                    let left = Duration::from_millis(rate.window_ms).saturating_sub(waited);
                    let now = Instant::now();
                    (now, Box::pin(tokio::time::sleep_until(now + left)))
                });
                this.watch.set(WAITING_ON_CLIENT);
                if deadline.as_mut().poll(cx).is_ready() {
                    this.waiting = None;
                    this.watch.set(TOO_SLOW);
                    return Poll::Ready(Some(Err(axum::Error::new(BodyTooSlow))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.watch.too_slow() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;

    use super::*;

    fn slow_body(chunks: Vec<(u64, &'static [u8])>) -> Body {
        let stream = futures_util::stream::iter(chunks).then(|(delay_ms, bytes)| async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            Ok::<_, std::io::Error>(Bytes::from_static(bytes))
        });
        Body::from_stream(stream)
    }

    #[tokio::test]
    async fn a_body_below_the_floor_fails_and_says_so() {
        let rate = BodyRate { min_bytes_per_s: 100, window_ms: 200 };
        // One byte, then nothing for far longer than the window.
        let (body, watch) = RateBody::wrap(slow_body(vec![(0, b"{"), (5_000, b"\"")]), rate);
        let error = axum::body::to_bytes(body, 1_024).await.unwrap_err();
        assert!(watch.too_slow(), "{error}");
    }

    #[tokio::test]
    async fn a_body_above_the_floor_is_read_whole() {
        let rate = BodyRate { min_bytes_per_s: 4, window_ms: 5_000 };
        let chunks =
            vec![(0, &b"abcdefghijklmnopqrst"[..]), (20, b"uvwxyzabcdefghijklmn"), (20, b"opqrstuvwxyzabcdefgh")];
        let (body, watch) = RateBody::wrap(slow_body(chunks), rate);
        assert_eq!(axum::body::to_bytes(body, 1_024).await.unwrap().len(), 60);
        assert!(!watch.too_slow() && !watch.waiting_on_client());
    }

    #[tokio::test]
    async fn time_the_reader_spends_elsewhere_is_not_the_clients() {
        let rate = BodyRate { min_bytes_per_s: 100, window_ms: 100 };
        let (mut body, watch) = RateBody::wrap(
            Body::from_stream(futures_util::stream::iter(vec![
                Ok::<_, std::io::Error>(Bytes::from_static(b"a")),
                Ok(Bytes::from_static(b"b")),
            ])),
            rate,
        );
        let mut read = Vec::new();
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            read.extend_from_slice(frame.unwrap().data_ref().unwrap());
            // The handler is busy for longer than the window between its reads.
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        assert_eq!(read, b"ab");
        assert!(!watch.too_slow());
    }
}
