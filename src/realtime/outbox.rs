//! A connection's outgoing frames, and the response body that writes them.
//!
//! The hub and the session push encoded frames. They leave by one of two paths, one at a
//! time: straight to the socket from the connection's worker while actix-http's dispatcher
//! is idle ("direct writes", below), or through the WebSocket response's body, which the
//! dispatcher polls whenever it can write and which takes everything queued at once as one
//! chunk. Either way no task or channel sits in between, frames that pile up while a socket
//! is busy leave in one write, and an event's frame is encoded once and shared by all its
//! recipients (`text_frame`).
//!
//! This replaces actix-ws's `Session`, whose channel (32 frames, allocated up front) sat
//! behind our own queue and cost a task wake-up per frame; actix-ws still parses what the
//! client sends. An idle connection's outbox holds no buffer at all.
//!
//! The hub runs on another thread than the connections' dispatchers, and waking a task of
//! another runtime interrupts that runtime's event loop (a system call) each time. So the
//! hub does not wake dispatchers itself: it collects the wakers of one event's deliveries
//! (`WorkerBatches`) and hands them to each actix worker's `Doorbell` in one message; the
//! worker wakes them on its own thread, where waking is only a queue push.
//!
//! Direct writes. Waking a dispatcher and polling it (timers, read side, body, write buffer)
//! costs about as much again as the `send` it ends in. So while a connection's dispatcher has
//! written everything it was given and waits for more (`Inner::direct`, learnt from the
//! dispatcher itself: `actix_http::h1::write_buffer_empty`, a hook of our vendored copy),
//! its worker writes new frames straight to the socket (`write_direct`); the hub hands the
//! worker the outbox instead of the dispatcher's waker. Whatever the socket does not take
//! stays queued, and the dispatcher is woken at once to write it as the socket drains: bytes
//! leave by one path at a time, in order.
//!
//! The raw descriptor is safe to use: only on the connection's worker (`SocketHandle`), under
//! the outbox's lock with the body alive, and actix-http's dispatcher drops the body before
//! it closes the socket (see `vendor/README.md`).

use std::cell::OnceCell;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_http::ws::{OpCode, Parser};
use actix_ws::{CloseCode, CloseReason};
use bytes::{Buf, Bytes, BytesMut};
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
    /// The connection's socket, for direct writes and to cut off a client that does not
    /// read its close frame. None in unit tests: everything goes through the body.
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
    /// The dispatcher has written all it was given and waits: frames may be written straight
    /// to the socket, on the connection's worker. Set only by the body's poll; cleared when
    /// the body hands the dispatcher frames, when a direct write falls short, and on close.
    direct: bool,
    /// The worker has been handed this outbox for a direct write (once until it has run).
    write_scheduled: bool,
    /// The body handed frames to the dispatcher at its last poll: poll once more after the
    /// dispatcher's flush, to find out whether it has gone idle.
    just_yielded: bool,
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

    /// Queues a frame and sends it on its way: written at once if the dispatcher is idle and
    /// this is the connection's worker (the session's task); else by the dispatcher, woken
    /// here (the hub's `ready`, from its own thread).
    fn push(&self, frame: Bytes) -> Result<(), Refused> {
        match self.enqueue(frame)? {
            Next::Wake(waker) => waker.wake(),
            Next::WriteDirect => self.write_direct(),
            Next::Nothing => {}
        }
        Ok(())
    }

    /// Queues an encoded frame from another thread; what sends it on its way (the
    /// dispatcher's waker, or the outbox for a direct write) goes into `batches`.
    pub fn push_deferred(
        self: &Arc<Self>,
        frame: Bytes,
        batches: &mut WorkerBatches,
    ) -> Result<(), Refused> {
        let next = self.enqueue(frame)?;
        match (&self.doorbell, next) {
            (_, Next::Nothing) => {}
            (Some(doorbell), Next::Wake(waker)) => batches.batch(doorbell).wakers.push(waker),
            (Some(doorbell), Next::WriteDirect) => {
                batches.batch(doorbell).writes.push(self.clone())
            }
            (None, Next::Wake(waker)) => waker.wake(),
            (None, Next::WriteDirect) => self.write_direct(),
        }
        Ok(())
    }

    /// Queues a frame; says what has to happen for it to leave.
    fn enqueue(&self, frame: Bytes) -> Result<Next, Refused> {
        let mut inner = self.lock();
        if inner.closing || inner.gone {
            return Err(Refused::Closed);
        }
        if inner.frames.len() >= self.capacity {
            return Err(Refused::Full);
        }
        inner.frames.push(frame);
        Ok(if !inner.direct {
            inner.waker.take().map_or(Next::Nothing, Next::Wake)
        } else if std::mem::replace(&mut inner.write_scheduled, true) {
            Next::Nothing
        } else {
            Next::WriteDirect
        })
    }

    /// Writes the queue straight to the socket while the dispatcher is idle (see the module's
    /// notes). What the socket does not take stays queued, first, and the dispatcher is woken
    /// to write it. Call on the connection's worker; elsewhere it only wakes the dispatcher.
    fn write_direct(&self) {
        let mut inner = self.lock();
        inner.write_scheduled = false;
        if !inner.direct || inner.frames.is_empty() {
            return;
        }
        // `direct` implies the body is alive (`gone` clears it), so the socket is the
        // connection's while the lock is held. The hub may wait for the lock meanwhile; a
        // non-blocking send is short.
        let written = match &self.socket {
            Some(socket) => socket.send(&inner.frames),
            None => Err(std::io::ErrorKind::Unsupported.into()),
        };
        let total: usize = inner.frames.iter().map(Bytes::len).sum();
        match written {
            Ok(n) if n == total => inner.frames.clear(),
            // Partly written, or not at all: the client is not reading, the socket failed (the
            // dispatcher finds out and ends the connection), or this is not the worker.
            written => {
                consume(&mut inner.frames, written.unwrap_or(0));
                let waker = inner.leave_direct();
                drop(inner);
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
        }
    }

    /// Queues the close frame after whatever is waiting; the connection ends once it is
    /// written. Later frames are refused.
    pub fn close(&self, code: u16, description: &str) {
        let mut inner = self.lock();
        if inner.closing || inner.gone {
            return;
        }
        inner.closing = true;
        // The dispatcher writes the close frame, then ends the body.
        inner.direct = false;
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
        inner.direct = false;
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

/// What makes a queued frame leave.
enum Next {
    /// Already on its way: the dispatcher is awake, or a direct write is scheduled.
    Nothing,
    /// Wake the dispatcher.
    Wake(Waker),
    /// Write it straight to the socket, on the connection's worker.
    WriteDirect,
}

impl Inner {
    /// Hands writing back to the dispatcher; returns its waker, to wake.
    fn leave_direct(&mut self) -> Option<Waker> {
        self.direct = false;
        self.waker.take()
    }
}

/// Drops the first `n` bytes of `frames`.
fn consume(frames: &mut SmallVec<[Bytes; 1]>, mut n: usize) {
    let whole = frames
        .iter()
        .take_while(|frame| {
            let fits = frame.len() <= n;
            if fits {
                n -= frame.len();
            }
            fits
        })
        .count();
    frames.drain(..whole);
    if n > 0 {
        frames[0].advance(n);
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

/// Wakes one actix worker's dispatchers, and makes its direct writes, on that worker's
/// thread.
pub struct Doorbell {
    /// Unbounded, yet bounded in effect: a waker is handed over at most once per wait of
    /// its dispatcher, and an outbox at most once per direct write, so no more are in flight
    /// than twice the worker's connections.
    batches: mpsc::UnboundedSender<Batch>,
}

/// One worker's share of a delivery.
#[derive(Default)]
pub struct Batch {
    wakers: Vec<Waker>,
    writes: Vec<Arc<Outbox>>,
}

impl Batch {
    /// Runs on the worker's thread (or, if the worker has stopped, anywhere: a direct write
    /// off its thread only wakes the dispatcher).
    fn run(self) {
        self.wakers.into_iter().for_each(Waker::wake);
        self.writes.iter().for_each(|outbox| outbox.write_direct());
    }
}

thread_local! {
    static DOORBELL: OnceCell<Arc<Doorbell>> = const { OnceCell::new() };
}

impl Doorbell {
    /// The doorbell of the current actix worker (started on first use, on its runtime).
    pub fn current() -> Arc<Doorbell> {
        DOORBELL.with(|cell| {
            cell.get_or_init(|| {
                let (batches, mut received) = mpsc::unbounded_channel::<Batch>();
                actix_web::rt::spawn(async move {
                    while let Some(batch) = received.recv().await {
                        batch.run();
                    }
                });
                Arc::new(Doorbell { batches })
            })
            .clone()
        })
    }

    fn ring(&self, batch: Batch) {
        // The worker has stopped: run it from here, as a fallback.
        if let Err(unsent) = self.batches.send(batch) {
            unsent.0.run();
        }
    }
}

/// What a delivery leaves for the workers to do, by worker.
#[derive(Default)]
pub struct WorkerBatches {
    by_worker: Vec<(Arc<Doorbell>, Batch)>,
}

impl WorkerBatches {
    fn batch(&mut self, doorbell: &Arc<Doorbell>) -> &mut Batch {
        // A handful of workers: a linear search beats hashing.
        let index = match self
            .by_worker
            .iter()
            .position(|(d, _)| Arc::ptr_eq(d, doorbell))
        {
            Some(index) => index,
            None => {
                self.by_worker.push((doorbell.clone(), Batch::default()));
                self.by_worker.len() - 1
            }
        };
        &mut self.by_worker[index].1
    }

    /// Rings each worker's doorbell once with its share.
    pub fn ring(self) {
        for (doorbell, batch) in self.by_worker {
            doorbell.ring(batch);
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
            if this.outbox.socket.is_some() {
                inner.direct = actix_http::h1::write_buffer_empty();
                if std::mem::take(&mut inner.just_yielded) && !inner.direct {
                    // What it was just given is still in the dispatcher's buffer: poll again
                    // after its flush, which normally empties it, to go direct then.
                    cx.waker().wake_by_ref();
                }
            }
            return Poll::Pending;
        }
        inner.direct = false;
        inner.just_yielded = true;
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
        inner.direct = false;
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
    fn consume_drops_whole_frames_then_part_of_the_next() {
        let mut frames: SmallVec<[Bytes; 1]> = SmallVec::from_vec(vec![
            Bytes::from_static(b"abc"),
            Bytes::from_static(b"defg"),
        ]);
        consume(&mut frames, 5);
        assert_eq!(frames.as_slice(), &[Bytes::from_static(b"fg")]);
        consume(&mut frames, 2);
        assert!(frames.is_empty());
    }

    /// A direct write goes straight to the socket; once the socket is full, the rest (and
    /// everything after it) leaves through the body, with no byte lost, doubled or reordered.
    #[tokio::test]
    async fn direct_writes_hand_over_to_the_body_in_order_when_the_socket_is_full() {
        use std::io::Read;
        use tokio::io::AsyncWriteExt;

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let mut server = actix_web::rt::net::TcpStream::from_std(server).unwrap();
        let socket = SocketHandle::of(&server);
        socket.cap_send_buffer(4096);
        let outbox = Outbox::new(10_000, None, Some(socket));
        let mut body = outbox.body();
        // As the dispatcher leaves it when it has written everything and waits.
        outbox.lock().direct = true;

        outbox.text("first").unwrap();
        assert!(outbox.lock().frames.is_empty(), "written at once");
        let mut head = [0u8; 7];
        client.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"\x81\x05first");

        // The client does not read: the socket fills, and frames start to queue.
        let mut expected = Vec::new();
        let mut n = 0u32;
        while outbox.lock().direct {
            let text = format!("{n:05}").repeat(400);
            expected.extend_from_slice(&text_frame(&text));
            outbox.text(&text).unwrap();
            n += 1;
        }
        for n in n..n + 3 {
            let text = format!("{n:05}").repeat(400);
            expected.extend_from_slice(&text_frame(&text));
            outbox.text(&text).unwrap();
        }
        outbox.finish();
        let expected_len = expected.len();
        let reader = std::thread::spawn(move || {
            let mut received = vec![0u8; expected_len];
            client.read_exact(&mut received).unwrap();
            received
        });
        // Play the dispatcher: write what the body yields.
        while let Some(chunk) = body.next().await {
            server.write_all(&chunk.unwrap()).await.unwrap();
        }
        let received = reader.join().unwrap();
        assert!(received == expected, "every byte once, in order");
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
