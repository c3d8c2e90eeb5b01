//! The WebSocket handshake, on a socket the session then owns.
//!
//! actix-http hands every HTTP/1 request that asks for a protocol upgrade to this service
//! (`HttpServiceBuilder::upgrade`, wired in `startup`) together with its connection: the
//! `TcpStream` and whatever the client sent after its request head. Here the handshake is
//! checked and answered, and the connection's session runs on the stream it now owns (see
//! `outbox` for writes and `socket` for reads). Other requests never come here; a plain
//! `GET /api/ws` without the upgrade headers is answered by the routes.

use std::convert::Infallible;
use std::sync::Arc;

use actix_codec::Framed;
use actix_http::body::BodySize;
use actix_http::h1::{Codec, Message};
use actix_http::{HttpMessage, Request, Response, StatusCode, ws};
use actix_web::web::Data;
use bytes::{Bytes, BytesMut};
use futures_util::SinkExt;
use tokio::net::TcpStream;
use tracing::Instrument;

use super::outbox::{Doorbell, Outbox};
use super::session::{self, MAX_FRAME_BYTES};
use super::socket::FrameReader;
use crate::auth::{AuthUser, bearer_token_of};
use crate::error::{AppError, ErrorCode};
use crate::state::AppState;
use crate::telemetry;

pub const PATH: &str = "/api/ws";

/// The upgrade service's factory, for `HttpServiceBuilder::upgrade`.
pub fn service(
    state: Data<AppState>,
) -> impl actix_service::ServiceFactory<
    (Request, Framed<TcpStream, Codec>),
    Config = (),
    Response = (),
    Error = Infallible,
    InitError = (),
> {
    actix_service::fn_service(
        move |(request, framed): (Request, Framed<TcpStream, Codec>)| {
            let state = state.clone();
            // Boxed: this future is the connection's for as long as it lives.
            Box::pin(async move {
                let (span, _) =
                    telemetry::request_span(request.headers(), request.method(), request.path());
                let started = std::time::Instant::now();
                let method = request.method().clone();
                let route = if request.path() == PATH {
                    PATH
                } else {
                    crate::metrics::UNMATCHED
                };
                let (status, accepted) = handshake(&state, request, framed).instrument(span).await;
                state
                    .metrics
                    .http_request(&method, route, status, started.elapsed());
                // The session holds nothing of the upgrade request (its headers share the read
                // buffer's allocation), nor a span: an idle connection costs a few KiB.
                if let Some(accepted) = accepted {
                    run_session(state, accepted).await;
                }
                Ok::<_, Infallible>(())
            })
        },
    )
}

/// What the session takes from its upgrade request.
struct Accepted {
    socket: TcpStream,
    /// What the client sent right after its request head.
    leftover: BytesMut,
    header_auth: Option<Result<AuthUser, AppError>>,
    base_url: String,
}

/// Checks and answers the handshake: the status answered, and what the session takes
/// (`None` when the request was refused, and answered).
async fn handshake(
    state: &AppState,
    request: Request,
    mut framed: Framed<TcpStream, Codec>,
) -> (u16, Option<Accepted>) {
    if request.path() != PATH {
        return (refuse(&mut framed, &AppError::NotFound).await, None);
    }
    let mut handshake = match ws::handshake(request.head()) {
        Ok(handshake) => handshake,
        Err(e) => {
            let error = AppError::bad_request(ErrorCode::BadRequest, e.to_string());
            return (refuse(&mut framed, &error).await, None);
        }
    };
    // A header that is there but not a bearer token fails at once, like a bad token.
    let headers = request.headers();
    let header_auth: Option<Result<AuthUser, AppError>> = headers
        .contains_key(actix_http::header::AUTHORIZATION)
        .then(|| {
            let token = bearer_token_of(headers).ok_or_else(|| {
                AppError::unauthorized(ErrorCode::Unauthorized, "not a bearer token")
            })?;
            state.tokens.verify(token)
        });
    // As `routes::base_url`: forwarding headers only from a trusted proxy.
    let peer = framed.io_ref().peer_addr().ok().map(|a| a.ip());
    let from_proxy =
        crate::client_addr::peer_is_trusted(peer, &state.settings.server.trusted_proxies);
    let base_url = crate::links::base_url_of(headers, "localhost", from_proxy);
    let mut response = handshake.finish().drop_body();
    response.head_mut().set_camel_case_headers(false);
    if framed
        .send(Message::Item((response, BodySize::None)))
        .await
        .is_err()
    {
        return (101, None);
    }
    tracing::info!(status = 101, "request");
    let parts = framed.into_parts();
    let accepted = Accepted {
        socket: parts.io,
        // Copied: the read buffer's allocation is shared with the request's headers.
        leftover: BytesMut::from(&parts.read_buf[..]),
        header_auth,
        base_url,
    };
    (101, Some(accepted))
}

async fn run_session(state: Data<AppState>, accepted: Accepted) {
    let _open = state.metrics.websocket_opened();
    let socket = Arc::new(accepted.socket);
    // With the kernel's autotuning, a client that stops reading parks megabytes there before
    // its outbox fills and it is closed with 4008; capped (64 KiB), it is found out after
    // about a thousand events. Downloads (other connections) keep autotuning.
    if state.settings.realtime.ws_send_buffer_bytes > 0
        && let Err(e) = socket2::SockRef::from(&*socket)
            .set_send_buffer_size(state.settings.realtime.ws_send_buffer_bytes)
    {
        tracing::warn!(error = %e, "could not cap a WebSocket's send buffer");
    }
    let outbox = Outbox::new(
        state.settings.realtime.ws_queue_capacity,
        Some(socket.clone()),
        Some(Doorbell::current()),
    );
    let reader = FrameReader::new(socket, accepted.leftover, MAX_FRAME_BYTES);
    session::run(
        state,
        outbox,
        reader,
        accepted.header_auth,
        accepted.base_url,
    )
    .await;
}

/// Answers the upgrade request with an error, in the API's format, and ends the connection;
/// returns the status.
async fn refuse(framed: &mut Framed<TcpStream, Codec>, error: &AppError) -> u16 {
    let status = actix_web::ResponseError::status_code(error).as_u16();
    // The client may be gone already: nothing more to do then.
    let _ = send_error(framed, error).await;
    status
}

async fn send_error(framed: &mut Framed<TcpStream, Codec>, error: &AppError) -> Result<(), ()> {
    let body = Bytes::from(error.body().to_string());
    let status = actix_web::ResponseError::status_code(error);
    let response = Response::build(StatusCode::from_u16(status.as_u16()).unwrap_or_default())
        .insert_header((actix_http::header::CONTENT_TYPE, "application/json"))
        .insert_header((actix_http::header::CONNECTION, "close"))
        .finish()
        .drop_body();
    tracing::info!(status = status.as_u16(), "request");
    framed
        .send(Message::Item((
            response,
            BodySize::Sized(body.len() as u64),
        )))
        .await
        .map_err(drop)?;
    framed
        .send(Message::Chunk(Some(body)))
        .await
        .map_err(drop)?;
    framed.send(Message::Chunk(None)).await.map_err(drop)
}
