//! A WebSocket's TCP socket, as far as the server touches it besides actix-http: its send
//! buffer's size, frames written while actix-http's dispatcher is idle (see
//! `outbox::Outbox::write_direct`), and cutting off a client that does not read its close
//! frame.
//!
//! actix-http owns the socket; this keeps only its descriptor (noted by
//! `HttpServer::on_connect`) and the worker thread that serves the connection. The
//! descriptor is valid as long as the connection's dispatcher lives, and the dispatcher runs
//! on that thread: code on that thread that knows the dispatcher is alive may use it.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::thread::{self, ThreadId};

use actix_web::rt::net::TcpStream;
use bytes::Bytes;
use smallvec::SmallVec;

#[derive(Debug, Clone, Copy)]
pub struct SocketHandle {
    fd: RawFd,
    thread: ThreadId,
}

impl SocketHandle {
    /// Called by `on_connect`, on the worker that serves the connection.
    pub fn of(tcp: &TcpStream) -> SocketHandle {
        SocketHandle {
            fd: tcp.as_raw_fd(),
            thread: thread::current().id(),
        }
    }

    /// The socket, if the caller is on the connection's worker. The caller must know that
    /// the connection's dispatcher is alive (a request being handled, an outbox's body not
    /// dropped), so that the descriptor is still this connection's.
    fn borrow(&self) -> Option<BorrowedFd<'_>> {
        // SAFETY: on the connection's worker, with its dispatcher alive (the callers'
        // contract), the descriptor is open and belongs to this connection: the
        // dispatcher closes it only when dropped, on this same thread.
        (thread::current().id() == self.thread).then(|| unsafe { BorrowedFd::borrow_raw(self.fd) })
    }

    /// Caps the kernel's send buffer (SO_SNDBUF). Call while handling the upgrade request.
    pub fn cap_send_buffer(&self, bytes: usize) {
        let Some(fd) = self.borrow() else { return };
        if let Err(e) = socket2::SockRef::from(&fd).set_send_buffer_size(bytes) {
            tracing::warn!(error = %e, "could not cap a WebSocket's send buffer");
        }
    }

    /// Writes `frames` without blocking, as far as the socket takes them; returns the bytes
    /// written. Only on the connection's worker (elsewhere: `Unsupported`), while its
    /// dispatcher is alive and has nothing of its own waiting to be written (the outbox's
    /// direct mode), so that these bytes follow the dispatcher's in order.
    pub fn send(&self, frames: &[Bytes]) -> io::Result<usize> {
        let Some(fd) = self.borrow() else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        let socket = socket2::SockRef::from(&fd);
        match frames {
            [frame] => socket.send(frame),
            _ => {
                // A backlog beyond this goes out in part (well under the kernel's IOV_MAX);
                // the caller handles a short write.
                let slices: SmallVec<[IoSlice<'_>; 8]> = frames
                    .iter()
                    .take(64)
                    .map(|frame| IoSlice::new(frame))
                    .collect();
                socket.send_vectored(&slices)
            }
        }
    }

    /// Shuts the socket down both ways: the dispatcher's blocked write fails, and it drops
    /// the connection. Call only while the connection's outbox body is alive.
    pub fn shut_down(&self) {
        if let Some(fd) = self.borrow() {
            let socket = socket2::SockRef::from(&fd);
            // Linger 0: when the dispatcher then closes it, what the client never read is
            // dropped with a reset, instead of the kernel trying to deliver it for minutes.
            let _ = socket.set_linger(Some(std::time::Duration::ZERO));
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}
