//! Bounds on what webhook requests may hold before they are checked: each body must arrive
//! within `[server] body_timeout` (408), may not be longer than its source's `max_body_size`
//! (413, from `Content-Length` before anything is read, and while it streams), and all the
//! bodies held at once share `[server] max_buffered_bytes` (503 with `Retry-After` beyond it).
//! A request holds its share of the buffer budget until it is answered, so what the requests in
//! flight hold never passes the bound, however many connections send at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use http_body_util::BodyExt;

/// Why a request's body was not read.
#[derive(Debug)]
pub enum BodyUnread {
    /// Longer than the source's `max_body_size` (413).
    TooLarge,
    /// Not complete within `[server] body_timeout` (408).
    TimedOut(Duration),
    /// The bodies in flight already hold `[server] max_buffered_bytes` (503).
    Overloaded,
    /// The connection failed while it was sent (400).
    Failed(String),
}

/// The HTTP front's bounds, shared by every HTTP thread.
#[derive(Debug, Clone)]
pub(crate) struct Ingress {
    /// How long a request's body may take to arrive.
    pub body_timeout: Duration,
    buffered: Arc<BufferBudget>,
}

impl Default for Ingress {
    /// The defaults of `[server]`: 5 s, 64 MiB.
    fn default() -> Ingress {
        Ingress::new(Duration::from_secs(5), 64 << 20)
    }
}

/// What a body is charged before it arrives (at most its declared length).
const UPFRONT: usize = 64 << 10;

impl Ingress {
    /// Bodies within `body_timeout`, at most `max_buffered_bytes` of them held at once.
    pub(crate) fn new(body_timeout: Duration, max_buffered_bytes: usize) -> Ingress {
        Ingress {
            body_timeout,
            buffered: Arc::new(BufferBudget {
                cap: max_buffered_bytes,
                held: AtomicUsize::new(0),
            }),
        }
    }

    /// Bytes the bodies of requests in flight hold now.
    #[cfg(test)]
    fn buffered_bytes(&self) -> usize {
        self.buffered.held.load(Ordering::Relaxed)
    }

    /// Reads `body` (at most `max` bytes, declared and sent) within the body timeout; the
    /// returned share of the buffer budget is held until the request is answered.
    pub(crate) async fn read_body(
        &self,
        headers: &HeaderMap,
        mut body: Body,
        max: usize,
    ) -> Result<(Bytes, Share), BodyUnread> {
        // A declared length past the limit is refused before a byte of the body is read (and
        // before hyper answers `Expect: 100-continue`).
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let declared = match declared {
            Some(n) if n > max as u64 => return Err(BodyUnread::TooLarge),
            Some(n) => n as usize,
            None => 0,
        };
        // Charged as bytes arrive, beyond a first 64 KiB: a sender that declares large bodies
        // and sends nothing cannot reserve the budget away from the others.
        let mut share =
            Share::take(&self.buffered, declared.min(UPFRONT)).ok_or(BodyUnread::Overloaded)?;
        // One timer for the whole body, registered only if the body is not already there (it
        // is polled after the body, and a sleep is armed at its first poll).
        let deadline = tokio::time::sleep(self.body_timeout);
        tokio::pin!(deadline);
        // One chunk (the usual case) is kept as received; more are copied into one buffer.
        let mut first: Option<Bytes> = None;
        let mut joined: Vec<u8> = Vec::new();
        let mut len = 0usize;
        loop {
            let next = tokio::select! {
                biased;
                next = body.frame() => next,
                () = &mut deadline => return Err(BodyUnread::TimedOut(self.body_timeout)),
            };
            let frame = match next {
                None => break,
                Some(Err(e)) => {
                    return Err(BodyUnread::Failed(format!(
                        "the request body could not be read: {e}"
                    )));
                }
                Some(Ok(frame)) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            len = len.saturating_add(data.len());
            if len > max {
                return Err(BodyUnread::TooLarge);
            }
            if !share.grow(len) {
                return Err(BodyUnread::Overloaded);
            }
            match first.take() {
                None if joined.is_empty() => first = Some(data),
                None => joined.extend_from_slice(&data),
                Some(f) => {
                    joined.reserve(len);
                    joined.extend_from_slice(&f);
                    joined.extend_from_slice(&data);
                }
            }
        }
        let bytes = match first {
            Some(b) => b,
            None => Bytes::from(joined),
        };
        Ok((bytes, share))
    }
}

/// Bytes held by the bodies of requests in flight, and their bound.
#[derive(Debug)]
struct BufferBudget {
    cap: usize,
    held: AtomicUsize,
}

/// One request's share of the buffer budget, given back when dropped.
#[derive(Debug)]
pub(crate) struct Share {
    budget: Arc<BufferBudget>,
    held: usize,
}

impl Share {
    fn take(budget: &Arc<BufferBudget>, n: usize) -> Option<Share> {
        let mut share = Share {
            budget: Arc::clone(budget),
            held: 0,
        };
        share.grow(n).then_some(share)
    }

    /// Holds `n` bytes in all (more than now), if the budget has them.
    fn grow(&mut self, n: usize) -> bool {
        if n <= self.held {
            return true;
        }
        let more = n - self.held;
        let taken = self
            .budget
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(more).filter(|h| *h <= self.budget.cap)
            })
            .is_ok();
        if taken {
            self.held = n;
        }
        taken
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.held, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_length: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(n) = content_length {
            h.insert(header::CONTENT_LENGTH, n.parse().expect("header value"));
        }
        h
    }

    #[tokio::test]
    async fn a_declared_length_past_the_limit_is_refused_before_reading() {
        let ingress = Ingress::new(Duration::from_secs(1), 1 << 20);
        // A body that never ends: reading it would hang until the timeout.
        let (_tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let body = Body::from_stream(tokio_stream_from(rx));
        let started = std::time::Instant::now();
        let r = ingress.read_body(&headers(Some("2000")), body, 1000).await;
        assert!(matches!(r, Err(BodyUnread::TooLarge)), "{r:?}");
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!(ingress.buffered_bytes(), 0);
    }

    #[tokio::test]
    async fn bodies_in_flight_share_the_buffer_budget() {
        let ingress = Ingress::new(Duration::from_secs(1), 1000);
        let (a, share) = ingress
            .read_body(&headers(Some("600")), Body::from(vec![b'x'; 600]), 1000)
            .await
            .expect("first fits");
        assert_eq!(a.len(), 600);
        assert_eq!(ingress.buffered_bytes(), 600);
        let r = ingress
            .read_body(&headers(Some("600")), Body::from(vec![b'y'; 600]), 1000)
            .await;
        assert!(matches!(r, Err(BodyUnread::Overloaded)), "{r:?}");
        // Undeclared (chunked): refused once what it sent passes the budget.
        let r = ingress
            .read_body(&headers(None), Body::from(vec![b'z'; 500]), 1000)
            .await;
        assert!(matches!(r, Err(BodyUnread::Overloaded)), "{r:?}");
        drop(share);
        assert_eq!(ingress.buffered_bytes(), 0);
        let (b, _share) = ingress
            .read_body(&headers(None), Body::from(vec![b'z'; 500]), 1000)
            .await
            .expect("fits once the first is answered");
        assert_eq!(b.len(), 500);
    }

    #[tokio::test]
    async fn a_body_longer_than_declared_or_allowed_is_refused_while_it_streams() {
        let ingress = Ingress::new(Duration::from_secs(1), 1 << 20);
        let r = ingress
            .read_body(&headers(None), Body::from(vec![b'x'; 1001]), 1000)
            .await;
        assert!(matches!(r, Err(BodyUnread::TooLarge)), "{r:?}");
        assert_eq!(ingress.buffered_bytes(), 0);
    }

    #[tokio::test]
    async fn a_body_slower_than_the_timeout_is_refused_at_the_deadline() {
        let ingress = Ingress::new(Duration::from_millis(300), 1 << 20);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        tx.send(Ok(Bytes::from_static(b"{"))).await.expect("send");
        let body = Body::from_stream(tokio_stream_from(rx));
        let started = std::time::Instant::now();
        let r = ingress.read_body(&headers(Some("100")), body, 1000).await;
        assert!(matches!(r, Err(BodyUnread::TimedOut(_))), "{r:?}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
        drop(tx);
        assert_eq!(ingress.buffered_bytes(), 0);
    }

    /// A stream of what `rx` receives.
    fn tokio_stream_from(
        rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
        futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
    }
}
