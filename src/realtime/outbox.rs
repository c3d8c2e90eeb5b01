//! A connection's outgoing frames, and the response body that writes them.
//!
//! The hub and the session push encoded frames; the WebSocket response's body (which
//! actix-http's dispatcher polls whenever it can write) takes everything queued at once as
//! one chunk. So a delivery wakes only the connection's dispatcher, with no task or channel
//! in between, frames that pile up while a socket is busy leave in one write, and an event's
//! frame is encoded once and shared by all its recipients (`text_frame`).
//!
//! This replaces actix-ws's `Session`, whose channel (32 frames, allocated up front) sat
//! behind our own queue and cost a task wake-up per frame; actix-ws still parses what the
//! client sends. An idle connection's outbox holds no buffer at all.
//!
//! The hub runs on another thread than the connections' dispatchers, and waking a task of
//! another runtime interrupts that runtime's event loop (a system call) each time. So the
//! hub does not wake dispatchers itself: it collects the wakers of one event's deliveries
//! (`Wakes`) and hands them to each actix worker's `Doorbell` in one message; the worker
//! wakes them on its own thread, where waking is only a queue push.

use std::cell::OnceCell;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_http::ws::{OpCode, Parser};
use actix_ws::{CloseCode, CloseReason};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use smallvec::SmallVec;
use tokio::sync::{Notify, mpsc};

use super::socket::SocketHandle;

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
    /// The doorbell of the worker whose dispatcher writes this outbox, if any.
    doorbell: Option<Arc<Doorbell>>,
    /// The connection's socket, to cut off a client that does not read its close frame.
    socket: Option<SocketHandle>,
    /// Signalled when the body is dropped (the connection has ended).
    ended: Notify,
}

#[derive(Default)]
struct Inner {
    /// Encoded frames, in order. One fits inline, beside the lock: a delivery (one event's
    /// frame) then touches no memory of its own besides the outbox, on both the hub's thread
    /// and the worker's.
    frames: SmallVec<[Bytes; 1]>,
    /// The dispatcher waiting for frames.
    waker: Option<Waker>,
    /// A close frame is queued (last), or the session is over: nothing more is accepted,
    /// and the body ends once the queue is written.
    closing: bool,
    /// The body has gone (the connection ended).
    gone: bool,
}

impl Outbox {
    /// An outbox that holds at most `capacity` frames besides a final close frame, for a
    /// connection served by the worker that rings `doorbell`, on `socket`.
    pub fn new(
        capacity: usize,
        doorbell: Option<Arc<Doorbell>>,
        socket: Option<SocketHandle>,
    ) -> Arc<Outbox> {
        Arc::new(Outbox {
            capacity: capacity.max(1),
            inner: Mutex::default(),
            doorbell,
            socket,
            ended: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves only a queue behind: keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn text(&self, text: &str) -> Result<(), Refused> {
        self.push(text_frame(text))
    }

    pub fn ping(&self) -> Result<(), Refused> {
        self.push(frame(b"", OpCode::Ping))
    }

    pub fn pong(&self, payload: &[u8]) -> Result<(), Refused> {
        self.push(frame(payload, OpCode::Pong))
    }

    /// Queues a frame and wakes the dispatcher (from the connection's own worker).
    fn push(&self, frame: Bytes) -> Result<(), Refused> {
        if let Some(waker) = self.enqueue(frame)? {
            waker.wake();
        }
        Ok(())
    }

    /// Queues an encoded frame from another thread; the dispatcher's waker goes into
    /// `wakes`.
    pub fn push_deferred(&self, frame: Bytes, wakes: &mut Wakes) -> Result<(), Refused> {
        if let Some(waker) = self.enqueue(frame)? {
            match &self.doorbell {
                Some(doorbell) => wakes.add(doorbell, waker),
                None => waker.wake(),
            }
        }
        Ok(())
    }

    /// Queues a frame; returns the waker of a dispatcher waiting for one.
    fn enqueue(&self, frame: Bytes) -> Result<Option<Waker>, Refused> {
        let mut inner = self.lock();
        if inner.closing || inner.gone {
            return Err(Refused::Closed);
        }
        if inner.frames.len() >= self.capacity {
            return Err(Refused::Full);
        }
        inner.frames.push(frame);
        Ok(inner.waker.take())
    }

    /// Queues the close frame after whatever is waiting; the connection ends once it is
    /// written. Later frames are refused.
    pub fn close(&self, code: u16, description: &str) {
        let mut inner = self.lock();
        if inner.closing || inner.gone {
            return;
        }
        inner.closing = true;
        let mut close = BytesMut::new();
        let reason = CloseReason {
            code: CloseCode::from(code),
            description: Some(description.to_owned()),
        };
        Parser::write_close(&mut close, Some(reason), false);
        inner.frames.push(close.freeze());
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

    /// Waits until the connection has ended (its body is gone) or `timeout` passes; in the
    /// second case, shuts the socket down, so that the dispatcher stops waiting to write.
    /// Used once a close frame is queued: a client that does not read it in time would
    /// otherwise keep its socket (and kernel buffers) for as long as it likes, and outside
    /// the per-user connection cap, since the hub has let it go. Call on the connection's
    /// worker (the session's task).
    pub async fn await_end(&self, timeout: Duration) {
        let ended = self.ended.notified();
        if self.lock().gone || tokio::time::timeout(timeout, ended).await.is_ok() {
            return;
        }
        // Under the lock the body cannot be dropped: the socket is still the connection's.
        let inner = self.lock();
        if !inner.gone
            && let Some(socket) = &self.socket
        {
            tracing::info!("closing the socket of a client that did not read its close frame");
            socket.shut_down();
        }
    }

    /// The response body for this connection. Call once.
    pub fn body(self: &Arc<Self>) -> OutboxBody {
        OutboxBody {
            outbox: self.clone(),
            finished: false,
        }
    }
}

/// A text frame as the server sends it (unmasked), to queue in any number of outboxes.
pub fn text_frame(text: &str) -> Bytes {
    frame(text.as_bytes(), OpCode::Text)
}

fn frame(payload: &[u8], op: OpCode) -> Bytes {
    let mut frame = BytesMut::with_capacity(payload.len() + 10);
    Parser::write_message(&mut frame, payload, op, true, false);
    frame.freeze()
}

/// Wakes one actix worker's dispatchers on that worker's thread.
pub struct Doorbell {
    /// Unbounded, yet bounded in effect: a waker is handed over at most once per wait of
    /// its dispatcher, so no more wakers are in flight than the worker has connections.
    batches: mpsc::UnboundedSender<Vec<Waker>>,
}

thread_local! {
    static DOORBELL: OnceCell<Arc<Doorbell>> = const { OnceCell::new() };
}

impl Doorbell {
    /// The doorbell of the current actix worker (started on first use, on its runtime).
    pub fn current() -> Arc<Doorbell> {
        DOORBELL.with(|cell| {
            cell.get_or_init(|| {
                let (batches, mut received) = mpsc::unbounded_channel::<Vec<Waker>>();
                actix_web::rt::spawn(async move {
                    while let Some(wakers) = received.recv().await {
                        wakers.into_iter().for_each(Waker::wake);
                    }
                });
                Arc::new(Doorbell { batches })
            })
            .clone()
        })
    }

    fn ring(&self, wakers: Vec<Waker>) {
        // The worker has stopped: wake from here, as a fallback.
        if let Err(unsent) = self.batches.send(wakers) {
            unsent.0.into_iter().for_each(Waker::wake);
        }
    }
}

/// Dispatchers to wake after a delivery, by worker.
#[derive(Default)]
pub struct Wakes {
    by_worker: Vec<(Arc<Doorbell>, Vec<Waker>)>,
}

impl Wakes {
    fn add(&mut self, doorbell: &Arc<Doorbell>, waker: Waker) {
        // A handful of workers: a linear search beats hashing.
        match self
            .by_worker
            .iter_mut()
            .find(|(d, _)| Arc::ptr_eq(d, doorbell))
        {
            Some((_, wakers)) => wakers.push(waker),
            None => self.by_worker.push((doorbell.clone(), vec![waker])),
        }
    }

    /// Rings each worker's doorbell once with its wakers.
    pub fn ring(self) {
        for (doorbell, wakers) in self.by_worker {
            doorbell.ring(wakers);
        }
    }
}

/// The WebSocket response body: the outbox's frames, encoded.
pub struct OutboxBody {
    outbox: Arc<Outbox>,
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
        // Taking the queue moves its inline slot (no heap involved), or gives back the memory
        // of a queue that outgrew it.
        let mut frames = std::mem::take(&mut inner.frames);
        drop(inner);
        if frames.len() == 1 {
            // The common case: one event's shared frame, passed on without a copy.
            return Poll::Ready(frames.pop().map(Ok));
        }
        let mut chunk = BytesMut::with_capacity(frames.iter().map(Bytes::len).sum());
        frames
            .iter()
            .for_each(|frame| chunk.extend_from_slice(frame));
        Poll::Ready(Some(Ok(chunk.freeze())))
    }
}

impl Drop for OutboxBody {
    fn drop(&mut self) {
        let mut inner = self.outbox.lock();
        inner.gone = true;
        inner.frames = SmallVec::new();
        inner.waker = None;
        drop(inner);
        self.outbox.ended.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn frames_leave_together_in_order_and_close_ends_the_body() {
        let outbox = Outbox::new(4, None, None);
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
        let outbox = Outbox::new(4, None, None);
        let mut body = outbox.body();
        outbox.text("last").unwrap();
        outbox.finish();
        assert_eq!(&body.next().await.unwrap().unwrap()[..], b"\x81\x04last");
        assert!(body.next().await.is_none());
    }

    #[test]
    fn a_full_outbox_refuses_and_a_dropped_body_refuses_everything() {
        let outbox = Outbox::new(2, None, None);
        let body = outbox.body();
        outbox.text("1").unwrap();
        outbox.ping().unwrap();
        assert_eq!(outbox.text("3"), Err(Refused::Full));
        drop(body);
        assert_eq!(outbox.pong(b""), Err(Refused::Closed));
    }
}
