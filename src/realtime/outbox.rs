//! A connection's outgoing frames, written straight to the socket the connection owns.
//!
//! The hub and the session push encoded frames. While nothing is waiting, a pushed frame is
//! written at once with a non-blocking send from whichever thread pushes it (the hub's, for
//! events): no task, channel or thread hand-off sits between an event and the kernel. What
//! the socket does not take waits here, in order, and the connection's session writes it as
//! the socket drains (`Outbox::backlog_writable`, `Outbox::write_backlog`); meanwhile new
//! frames queue behind it, so bytes leave in order. An event's frame is encoded once and
//! shared by all its recipients (`text_frame`), and an idle connection's outbox holds no
//! buffer at all.
//!
//! The socket is a `tokio::net::TcpStream` the session owns (see `realtime::upgrade`), held
//! in an `Arc` by the outbox and the session's reader: it closes when the last of them goes,
//! so no one can write into a descriptor that has since been reused.
//!
//! Large fan-outs. One thread writing to thousands of sockets serialises every send (each
//! also pays the receiver's TCP processing on loopback), so for an event with many
//! recipients the hub only queues the frame (`push_deferred`) and hands each HTTP worker
//! thread the outboxes it serves in one message (`WorkerBatches`, `Doorbell`): the workers
//! write in parallel, one hand-off per worker and event rather than per connection.

use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_http::ws::{CloseCode, CloseReason, OpCode, Parser};
use bytes::{Buf, Bytes, BytesMut};
use smallvec::SmallVec;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};

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
    /// The worker thread serving the connection, for large fan-outs. None in unit tests.
    doorbell: Option<Arc<Doorbell>>,
    inner: Mutex<Inner>,
    /// Tells the session that frames wait for the socket to drain, or that it failed.
    backlog: Notify,
}

#[derive(Default)]
struct Inner {
    /// Encoded frames the socket has not taken yet, in order (the first perhaps in part).
    /// One fits inline, beside the lock.
    frames: SmallVec<[Bytes; 1]>,
    /// A close frame is queued (last), or the session is over: nothing more is accepted.
    closing: bool,
    /// The socket failed or was let go: nothing more can be written.
    failed: bool,
    /// A worker has been handed this outbox to write what is queued (once until it has).
    write_scheduled: bool,
    /// The connection's socket, until the session lets it go (`release`). None in unit
    /// tests: frames stay queued for the test to read.
    socket: Option<Arc<TcpStream>>,
}

impl Outbox {
    /// An outbox that holds at most `capacity` frames besides a final close frame.
    pub fn new(
        capacity: usize,
        socket: Option<Arc<TcpStream>>,
        doorbell: Option<Arc<Doorbell>>,
    ) -> Arc<Outbox> {
        Arc::new(Outbox {
            capacity: capacity.max(1),
            doorbell,
            inner: Mutex::new(Inner {
                socket,
                ..Inner::default()
            }),
            backlog: Notify::new(),
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

    /// Sends an encoded frame: written at once when nothing waits before it, else queued
    /// behind what waits.
    pub fn push(&self, frame: Bytes) -> Result<(), Refused> {
        let mut inner = self.lock();
        if self.enqueue(&mut inner, frame)? {
            self.write_queued(&mut inner);
        }
        Ok(())
    }

    /// Queues a frame; true when nothing was waiting before it and no worker has been
    /// handed the outbox, so that the caller must see it written.
    fn enqueue(&self, inner: &mut Inner, frame: Bytes) -> Result<bool, Refused> {
        if inner.closing || inner.failed {
            return Err(Refused::Closed);
        }
        if inner.frames.len() >= self.capacity {
            return Err(Refused::Full);
        }
        inner.frames.push(frame);
        Ok(inner.frames.len() == 1 && !inner.write_scheduled)
    }

    /// Queues a frame for this connection's worker thread to write: with a doorbell, the
    /// outbox goes into `batches` when nothing else has it written yet. Without one, writes
    /// at once like `push`.
    pub fn push_deferred(
        self: &Arc<Self>,
        frame: Bytes,
        batches: &mut WorkerBatches,
    ) -> Result<(), Refused> {
        let Some(doorbell) = &self.doorbell else {
            return self.push(frame);
        };
        let mut inner = self.lock();
        if self.enqueue(&mut inner, frame)? {
            inner.write_scheduled = true;
            batches.batch(doorbell).push(self.clone());
        }
        Ok(())
    }

    /// A worker's share of a fan-out: writes what is queued.
    fn write_scheduled(&self) {
        let mut inner = self.lock();
        inner.write_scheduled = false;
        if !inner.frames.is_empty() {
            self.write_queued(&mut inner);
        }
    }

    /// Writes what is queued without blocking, as far as the socket takes it; wakes the
    /// session when something is left (or the socket failed), so that it waits for the
    /// socket to drain. The send happens under the lock: nothing can slip in between.
    fn write_queued(&self, inner: &mut Inner) {
        let Some(socket) = &inner.socket else {
            return;
        };
        match send(socket, &inner.frames) {
            Ok(written) => consume(&mut inner.frames, written),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => {
                // The session's reader finds out too; drop what can never leave.
                inner.failed = true;
                inner.frames = SmallVec::new();
            }
        }
        if !inner.frames.is_empty() || inner.failed {
            self.backlog.notify_one();
        }
    }

    /// Resolves once frames wait and the socket can take more (or has failed). Cancel-safe,
    /// for the session's `select!`.
    pub async fn backlog_writable(&self) {
        loop {
            let notified = self.backlog.notified();
            let (waiting, failed, socket) = {
                let inner = self.lock();
                (!inner.frames.is_empty(), inner.failed, inner.socket.clone())
            };
            if failed {
                return;
            }
            if waiting {
                match socket {
                    Some(socket) => {
                        // An error shows up in the next write.
                        let _ = socket.writable().await;
                        return;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            notified.await;
        }
    }

    /// Writes what waits, as far as the socket takes it. Call after `backlog_writable`;
    /// false when the socket has failed.
    pub fn write_backlog(&self) -> bool {
        let mut inner = self.lock();
        // Even if a worker has been handed this outbox: writing now, under the lock, keeps
        // the order, and the worker then finds nothing left (waiting for it would spin).
        if !inner.frames.is_empty() {
            self.write_queued(&mut inner);
        }
        !inner.failed
    }

    /// Queues the close frame after whatever is waiting; later frames are refused. False
    /// when the connection was closing already (or its socket failed): nothing was queued.
    pub fn close(&self, code: u16, description: &str) -> bool {
        self.close_then(code, description, || {})
    }

    /// `close`, running `queued` once the frame is queued and before it can reach the
    /// client (to count it: whoever reads the close may look at the counter next).
    pub fn close_then(&self, code: u16, description: &str, queued: impl FnOnce()) -> bool {
        let mut inner = self.lock();
        if inner.closing || inner.failed {
            return false;
        }
        inner.closing = true;
        let mut close = BytesMut::new();
        let reason = CloseReason {
            code: CloseCode::from(code),
            description: Some(description.to_owned()),
        };
        Parser::write_close(&mut close, Some(reason), false);
        inner.frames.push(close.freeze());
        queued();
        if inner.frames.len() == 1 && !inner.write_scheduled {
            self.write_queued(&mut inner);
        }
        true
    }

    /// Refuses frames from now on (the session is over); what is queued may still leave
    /// through `flush`.
    pub fn finish(&self) {
        self.lock().closing = true;
    }

    /// Writes everything still queued, waiting for the socket to drain for at most `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Flushed {
        let flushed = tokio::time::timeout(timeout, async {
            loop {
                let socket = {
                    let mut inner = self.lock();
                    if !inner.frames.is_empty() {
                        self.write_queued(&mut inner);
                    }
                    if inner.failed {
                        return Flushed::SocketFailed;
                    }
                    if inner.frames.is_empty() {
                        return Flushed::Yes;
                    }
                    inner.socket.clone()
                };
                match socket {
                    Some(socket) => {
                        if socket.writable().await.is_err() {
                            return Flushed::SocketFailed;
                        }
                    }
                    None => return Flushed::SocketFailed,
                }
            }
        })
        .await;
        flushed.unwrap_or(Flushed::TimedOut)
    }

    /// Lets go of the socket and refuses everything from now on: once the session's reader
    /// is gone too, the socket closes, even if the hub still holds this outbox.
    pub fn release(&self) {
        let mut inner = self.lock();
        inner.closing = true;
        inner.failed = true;
        inner.frames = SmallVec::new();
        inner.socket = None;
    }

    /// Everything queued, as one buffer (unit tests have no socket).
    #[cfg(test)]
    pub fn take_queued(&self) -> BytesMut {
        let mut inner = self.lock();
        let mut all = BytesMut::new();
        inner
            .frames
            .drain(..)
            .for_each(|frame| all.extend_from_slice(&frame));
        all
    }
}

/// Runs one HTTP worker thread's share of fan-outs on that thread.
pub struct Doorbell {
    /// Unbounded, yet bounded in effect: an outbox is handed over at most once until its
    /// worker has written it, so no more are in flight than the worker's connections.
    batches: mpsc::UnboundedSender<Vec<Arc<Outbox>>>,
}

thread_local! {
    static DOORBELL: std::cell::OnceCell<Arc<Doorbell>> = const { std::cell::OnceCell::new() };
}

impl Doorbell {
    /// The doorbell of the current worker thread (its task started on first use, on the
    /// thread's runtime).
    pub fn current() -> Arc<Doorbell> {
        DOORBELL.with(|cell| {
            cell.get_or_init(|| {
                let (batches, mut received) = mpsc::unbounded_channel::<Vec<Arc<Outbox>>>();
                tokio::task::spawn_local(async move {
                    while let Some(batch) = received.recv().await {
                        batch.iter().for_each(|outbox| outbox.write_scheduled());
                    }
                });
                Arc::new(Doorbell { batches })
            })
            .clone()
        })
    }

    fn ring(&self, batch: Vec<Arc<Outbox>>) {
        // The worker has stopped: write from here instead.
        if let Err(unsent) = self.batches.send(batch) {
            unsent.0.iter().for_each(|outbox| outbox.write_scheduled());
        }
    }
}

/// What a fan-out leaves for the workers to write, by worker.
#[derive(Default)]
pub struct WorkerBatches {
    by_worker: Vec<(Arc<Doorbell>, Vec<Arc<Outbox>>)>,
}

impl WorkerBatches {
    fn batch(&mut self, doorbell: &Arc<Doorbell>) -> &mut Vec<Arc<Outbox>> {
        // A handful of workers: a linear search beats hashing.
        let index = match self
            .by_worker
            .iter()
            .position(|(d, _)| Arc::ptr_eq(d, doorbell))
        {
            Some(index) => index,
            None => {
                self.by_worker.push((doorbell.clone(), Vec::new()));
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

/// How `Outbox::flush` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued was written.
    Yes,
    /// The client did not read it in time.
    TimedOut,
    /// The socket failed (or there is none).
    SocketFailed,
}

/// Sends `frames` without blocking; returns the bytes the socket took.
fn send(socket: &TcpStream, frames: &[Bytes]) -> io::Result<usize> {
    match frames {
        [frame] => socket.try_write(frame),
        _ => {
            // A backlog beyond this goes out in part (well under the kernel's IOV_MAX); the
            // rest stays queued.
            let slices: SmallVec<[IoSlice<'_>; 8]> = frames
                .iter()
                .take(64)
                .map(|frame| IoSlice::new(frame))
                .collect();
            socket.try_write_vectored(&slices)
        }
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
    if frames.is_empty() && frames.spilled() {
        // Give back the memory of a backlog that outgrew the inline slot.
        *frames = SmallVec::new();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_queue_in_order_and_close_refuses_later_ones() {
        let outbox = Outbox::new(4, None, None);
        outbox.text("a").unwrap();
        outbox.text("bc").unwrap();
        // Two unmasked text frames: 0x81, length, payload.
        assert_eq!(&outbox.take_queued()[..], b"\x81\x01a\x81\x02bc");
        assert!(outbox.close(4008, "x"));
        assert_eq!(outbox.text("late"), Err(Refused::Closed));
        let close = outbox.take_queued();
        assert_eq!(close[0], 0x88, "a close frame");
        assert_eq!(&close[2..4], &4008u16.to_be_bytes());
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

    #[test]
    fn a_full_outbox_refuses_and_a_finished_one_refuses_everything() {
        let outbox = Outbox::new(2, None, None);
        outbox.text("1").unwrap();
        outbox.ping().unwrap();
        assert_eq!(outbox.text("3"), Err(Refused::Full));
        outbox.finish();
        assert_eq!(outbox.pong(b""), Err(Refused::Closed));
    }

    /// Frames go straight to the socket; once it is full, the rest (and everything after
    /// it) waits and leaves as the socket drains, with no byte lost, doubled or reordered.
    #[tokio::test]
    async fn a_full_socket_queues_and_the_backlog_leaves_in_order() {
        use std::io::Read;

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let server = TcpStream::from_std(server).unwrap();
        socket2::SockRef::from(&server)
            .set_send_buffer_size(4096)
            .unwrap();
        // As after the handshake: tokio has seen the socket writable.
        server.writable().await.unwrap();
        let outbox = Outbox::new(10_000, Some(Arc::new(server)), None);

        outbox.text("first").unwrap();
        assert!(outbox.lock().frames.is_empty(), "written at once");
        let mut head = [0u8; 7];
        client.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"\x81\x05first");

        // The client does not read: the socket fills, and frames start to queue.
        let mut expected = Vec::new();
        let mut n = 0u32;
        while outbox.lock().frames.len() < 4 {
            let text = format!("{n:05}").repeat(400);
            expected.extend_from_slice(&text_frame(&text));
            outbox.text(&text).unwrap();
            n += 1;
        }
        outbox.finish();
        let expected_len = expected.len();
        let reader = std::thread::spawn(move || {
            let mut received = vec![0u8; expected_len];
            client.read_exact(&mut received).unwrap();
            received
        });
        assert_eq!(outbox.flush(Duration::from_secs(10)).await, Flushed::Yes);
        let received = reader.join().unwrap();
        assert!(received == expected, "every byte once, in order");
    }
}
