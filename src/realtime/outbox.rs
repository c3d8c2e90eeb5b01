//! A connection's outgoing frames, and the response body that writes them.
//!
//! The hub and the session push frames; the WebSocket response's body (which actix-http's
//! dispatcher polls whenever it can write) takes everything queued at once and encodes it as
//! one chunk. So a delivery wakes only the connection's dispatcher, with no task or channel
//! in between, and frames that pile up while a socket is busy leave in one write.
//!
//! This replaces actix-ws's `Session`, whose channel (32 frames, allocated up front) sat
//! behind our own queue and cost a task wake-up per frame; actix-ws still parses what the
//! client sends. An idle connection's outbox holds no buffer at all.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use actix_codec::Encoder;
use actix_http::ws::{Codec, Message};
use actix_ws::{CloseCode, CloseReason};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::Stream;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `capacity` frames are waiting: the client is not reading.
    Full,
    /// The connection is closing; nothing more goes out.
    Closed,
}

pub struct Outbox {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    frames: VecDeque<Message>,
    /// The dispatcher waiting for frames.
    waker: Option<Waker>,
    /// A close frame is queued (last): nothing more is accepted.
    closing: bool,
    /// The body has gone (the connection ended).
    gone: bool,
}

impl Outbox {
    /// An outbox that holds at most `capacity` frames besides a final close frame.
    pub fn new(capacity: usize) -> Arc<Outbox> {
        Arc::new(Outbox {
            capacity: capacity.max(1),
            inner: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves only a queue behind: keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn text(&self, text: impl Into<ByteString>) -> Result<(), Refused> {
        self.push(Message::Text(text.into()))
    }

    pub fn ping(&self) -> Result<(), Refused> {
        self.push(Message::Ping(Bytes::new()))
    }

    pub fn pong(&self, payload: Bytes) -> Result<(), Refused> {
        self.push(Message::Pong(payload))
    }

    fn push(&self, message: Message) -> Result<(), Refused> {
        let mut inner = self.lock();
        if inner.closing || inner.gone {
            return Err(Refused::Closed);
        }
        if inner.frames.len() >= self.capacity {
            return Err(Refused::Full);
        }
        inner.frames.push_back(message);
        let waker = inner.waker.take();
        drop(inner);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Queues the close frame after whatever is waiting; the connection ends once it is
    /// written. Later frames are refused.
    pub fn close(&self, code: u16, description: &str) {
        let mut inner = self.lock();
        if inner.closing || inner.gone {
            return;
        }
        inner.closing = true;
        inner.frames.push_back(Message::Close(Some(CloseReason {
            code: CloseCode::from(code),
            description: Some(description.to_owned()),
        })));
        let waker = inner.waker.take();
        drop(inner);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Ends the body once the queued frames are written, without a close frame (the
    /// session is over, or the socket already gone).
    pub fn finish(&self) {
        let mut inner = self.lock();
        inner.closing = true;
        let waker = inner.waker.take();
        drop(inner);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Whether the connection has ended (its body was dropped by the dispatcher).
    pub fn is_gone(&self) -> bool {
        self.lock().gone
    }

    /// The response body for this connection. Call once.
    pub fn body(self: &Arc<Self>) -> OutboxBody {
        OutboxBody {
            outbox: self.clone(),
            codec: Codec::new(),
            finished: false,
        }
    }
}

/// The WebSocket response body: the outbox's frames, encoded.
pub struct OutboxBody {
    outbox: Arc<Outbox>,
    codec: Codec,
    finished: bool,
}

impl Stream for OutboxBody {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        let mut inner = this.outbox.lock();
        if inner.frames.is_empty() {
            if inner.closing {
                this.finished = true;
                return Poll::Ready(None);
            }
            if !inner
                .waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                inner.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        // Taking the queue also gives its memory back: most connections are idle.
        let frames = std::mem::take(&mut inner.frames);
        drop(inner);
        let mut buf = BytesMut::new();
        for message in frames {
            if matches!(message, Message::Close(_)) {
                this.finished = true;
            }
            // The server side never masks and our frames have no size limit to exceed.
            if let Err(e) = this.codec.encode(message, &mut buf) {
                return Poll::Ready(Some(Err(e.into())));
            }
        }
        Poll::Ready(Some(Ok(buf.freeze())))
    }
}

impl Drop for OutboxBody {
    fn drop(&mut self) {
        let mut inner = self.outbox.lock();
        inner.gone = true;
        inner.frames = VecDeque::new();
        inner.waker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn frames_leave_together_in_order_and_close_ends_the_body() {
        let outbox = Outbox::new(4);
        let mut body = outbox.body();
        outbox.text("a").unwrap();
        outbox.text("bc").unwrap();
        let chunk = body.next().await.unwrap().unwrap();
        // Two unmasked text frames: 0x81, length, payload.
        assert_eq!(&chunk[..], b"\x81\x01a\x81\x02bc");
        outbox.close(4008, "x");
        assert_eq!(outbox.text("late"), Err(Refused::Closed));
        let chunk = body.next().await.unwrap().unwrap();
        assert_eq!(chunk[0], 0x88, "a close frame");
        assert_eq!(&chunk[2..4], &4008u16.to_be_bytes());
        assert!(body.next().await.is_none());
    }

    #[tokio::test]
    async fn finish_writes_what_is_queued_then_ends() {
        let outbox = Outbox::new(4);
        let mut body = outbox.body();
        outbox.text("last").unwrap();
        outbox.finish();
        assert_eq!(&body.next().await.unwrap().unwrap()[..], b"\x81\x04last");
        assert!(body.next().await.is_none());
    }

    #[test]
    fn a_full_outbox_refuses_and_a_dropped_body_refuses_everything() {
        let outbox = Outbox::new(2);
        let body = outbox.body();
        outbox.text("1").unwrap();
        outbox.ping().unwrap();
        assert_eq!(outbox.text("3"), Err(Refused::Full));
        drop(body);
        assert!(outbox.is_gone());
        assert_eq!(outbox.pong(Bytes::new()), Err(Refused::Closed));
    }
}
