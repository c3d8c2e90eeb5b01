//! Reading a client's WebSocket frames from the socket the session owns, with a bound on
//! what one connection can make the server hold.
//!
//! Frames are parsed by actix-http's `ws::Parser` (masking, control frame rules), but the
//! header's declared length is checked first: a frame over `max_message` is refused (1009)
//! as soon as its header arrives, before any of its payload is read or buffered. The read
//! buffer never holds more than one frame's worth (`max_message` plus a header); a message
//! in fragments is gathered up to `max_message` in all and `MAX_FRAGMENTS` pieces (empty
//! continuation frames cannot grow anything). An idle connection holds no buffer.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use actix_http::ws::{OpCode, Parser};
use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;

/// Fragments one message may arrive in.
const MAX_FRAGMENTS: usize = 1024;
/// The longest frame header: 2 bytes, a 64-bit length, a mask.
const MAX_HEADER: usize = 14;
/// What one read takes from the kernel at most.
const READ_CHUNK: usize = 8 * 1024;

/// A message from the client.
#[derive(Debug)]
pub enum ClientMessage {
    Text(String),
    Binary,
    Ping(Bytes),
    Pong,
    Close,
}

/// Why the connection must close, as a close code and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolClose(pub u16, pub &'static str);

const TOO_LARGE: ProtocolClose = ProtocolClose(1009, "frame too large");
const MESSAGE_TOO_LARGE: ProtocolClose = ProtocolClose(1009, "message too large");
const PROTOCOL_ERROR: ProtocolClose = ProtocolClose(1002, "protocol error");
const NOT_UTF8: ProtocolClose = ProtocolClose(1007, "text is not UTF-8");

pub struct FrameReader {
    socket: Arc<TcpStream>,
    max_message: usize,
    /// Bytes read and not yet parsed: at most one frame (`max_message` + a header).
    buffer: BytesMut,
    /// A fragmented message being gathered: its opcode, payload and fragment count.
    partial: Option<(OpCode, BytesMut, usize)>,
    /// The socket has ended or failed.
    ended: bool,
}

impl FrameReader {
    /// `leftover` is what the client sent right after its handshake, already read.
    pub fn new(socket: Arc<TcpStream>, leftover: BytesMut, max_message: usize) -> FrameReader {
        FrameReader {
            socket,
            max_message,
            buffer: leftover,
            partial: None,
            ended: false,
        }
    }

    /// The next message; `None` when the socket has ended. Cancel-safe (everything read is
    /// kept in `self`), for the session's `select!`.
    pub async fn next(&mut self) -> Option<Result<ClientMessage, ProtocolClose>> {
        loop {
            match self.parse() {
                Ok(Some(message)) => return Some(Ok(message)),
                Ok(None) => {}
                Err(close) => return Some(Err(close)),
            }
            if self.ended {
                return None;
            }
            if self.socket.readable().await.is_err() {
                self.ended = true;
                continue;
            }
            self.read_some();
        }
    }

    /// Ends the connection gracefully once everything has been written: sends FIN, then
    /// reads and discards what the client still sends until it closes too, or `timeout`
    /// passes. Closing with unread bytes would make the kernel answer with a reset, which
    /// can destroy the close frame before the client reads it.
    pub async fn linger(&mut self, timeout: Duration) {
        let _ = socket2::SockRef::from(&*self.socket).shutdown(std::net::Shutdown::Write);
        self.buffer = BytesMut::new();
        let _ = tokio::time::timeout(timeout, async {
            let mut chunk = [0u8; READ_CHUNK];
            loop {
                if self.socket.readable().await.is_err() {
                    return;
                }
                match self.socket.try_read(&mut chunk) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        })
        .await;
    }

    /// Makes the coming close a reset: what the client never read is dropped at once
    /// instead of the kernel trying to deliver it for minutes.
    pub fn reset_on_close(&self) {
        let _ = socket2::SockRef::from(&*self.socket).set_linger(Some(Duration::ZERO));
    }

    /// Reads what the socket has, up to what completes the buffer's one frame.
    fn read_some(&mut self) {
        let room = (self.max_message + MAX_HEADER).saturating_sub(self.buffer.len());
        let mut chunk = [0u8; READ_CHUNK];
        let want = room.clamp(1, READ_CHUNK);
        match self.socket.try_read(&mut chunk[..want]) {
            Ok(0) => self.ended = true,
            Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => self.ended = true,
        }
    }

    /// Parses complete frames from the buffer until one finishes a message.
    fn parse(&mut self) -> Result<Option<ClientMessage>, ProtocolClose> {
        loop {
            if self.buffer.is_empty() {
                // Let go of the allocation while the client is quiet.
                self.buffer = BytesMut::new();
                return Ok(None);
            }
            if let Some(length) = declared_length(&self.buffer)
                && length > self.max_message as u64
            {
                return Err(TOO_LARGE);
            }
            let parsed =
                Parser::parse(&mut self.buffer, true, self.max_message).map_err(|e| match e {
                    actix_http::ws::ProtocolError::Overflow => TOO_LARGE,
                    _ => PROTOCOL_ERROR,
                })?;
            let Some((fin, opcode, payload)) = parsed else {
                return Ok(None);
            };
            let payload = payload.unwrap_or_default();
            if let Some(message) = self.on_frame(fin, opcode, payload)? {
                return Ok(Some(message));
            }
        }
    }

    fn on_frame(
        &mut self,
        fin: bool,
        opcode: OpCode,
        payload: BytesMut,
    ) -> Result<Option<ClientMessage>, ProtocolClose> {
        match opcode {
            OpCode::Ping | OpCode::Pong | OpCode::Close if !fin => Err(PROTOCOL_ERROR),
            OpCode::Ping => Ok(Some(ClientMessage::Ping(payload.freeze()))),
            OpCode::Pong => Ok(Some(ClientMessage::Pong)),
            OpCode::Close => Ok(Some(ClientMessage::Close)),
            OpCode::Text | OpCode::Binary => {
                if self.partial.is_some() {
                    return Err(PROTOCOL_ERROR);
                }
                if fin {
                    return message(opcode, payload).map(Some);
                }
                self.partial = Some((opcode, payload, 1));
                Ok(None)
            }
            OpCode::Continue => {
                let Some((_, gathered, count)) = &mut self.partial else {
                    return Err(PROTOCOL_ERROR);
                };
                *count += 1;
                if gathered.len() + payload.len() > self.max_message {
                    return Err(MESSAGE_TOO_LARGE);
                }
                if *count > MAX_FRAGMENTS {
                    return Err(PROTOCOL_ERROR);
                }
                gathered.extend_from_slice(&payload);
                if !fin {
                    return Ok(None);
                }
                let (opcode, gathered, _) = self.partial.take().expect("checked above");
                message(opcode, gathered).map(Some)
            }
            OpCode::Bad => Err(PROTOCOL_ERROR),
        }
    }
}

fn message(opcode: OpCode, payload: BytesMut) -> Result<ClientMessage, ProtocolClose> {
    match opcode {
        OpCode::Text => String::from_utf8(payload.to_vec())
            .map(ClientMessage::Text)
            .map_err(|_| NOT_UTF8),
        _ => Ok(ClientMessage::Binary),
    }
}

/// The payload length a frame header declares, once enough of the header has arrived.
fn declared_length(buffer: &[u8]) -> Option<u64> {
    let short = buffer.get(1)? & 0x7f;
    match short {
        126 => buffer
            .get(2..4)
            .map(|b| u64::from(u16::from_be_bytes([b[0], b[1]]))),
        127 => buffer
            .get(2..10)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes"))),
        n => Some(u64::from(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declared_length_is_read_from_each_header_form() {
        assert_eq!(declared_length(&[0x81]), None);
        assert_eq!(declared_length(&[0x81, 0x85]), Some(5));
        assert_eq!(declared_length(&[0x81, 0xfe, 0x01]), None);
        assert_eq!(declared_length(&[0x81, 0xfe, 0x01, 0x00]), Some(256));
        let mut huge = vec![0x81, 0xff];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(declared_length(&huge), Some(1 << 40));
    }
}
