use std::any::Any;

use actix_web::body::BodyStream;
use actix_web::dev::Extensions;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, web};

use super::base_url;
use crate::auth::bearer_token;
use crate::error::AppError;
use crate::realtime::session::{self, MAX_FRAME_BYTES};
use crate::realtime::socket::SocketHandle;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(connect);
}

/// `HttpServer::on_connect`: notes each TCP connection's socket, for its WebSocket.
pub fn remember_socket(connection: &dyn Any, data: &mut Extensions) {
    if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
        data.insert(SocketHandle::of(tcp));
    }
}

/// The WebSocket. Authenticates by `Authorization` header or by the first frame; tokens are
/// never taken from the URL.
#[get("/ws")]
async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    // A header that is there but not a bearer token fails at once, like a bad token.
    let header_auth = req.headers().contains_key(header::AUTHORIZATION).then(|| {
        let token = bearer_token(&req)
            .ok_or_else(|| AppError::unauthorized("unauthorized", "not a bearer token"))?;
        state.tokens.verify(token)
    });
    let base = base_url(&req);
    // actix-ws checks the handshake and parses the client's frames; what goes out is the
    // connection's outbox (see realtime::outbox), so actix-ws's own session is not used.
    let (response, _unused_session, stream) = actix_ws::handle(&req, body)?;
    let socket = req.conn_data::<SocketHandle>().copied();
    // With the kernel's autotuning, a client that stops reading parks megabytes there before
    // its outbox fills and it is closed with 4008; capped (64 KiB), it is found out after
    // about a thousand events. Downloads (other connections) keep autotuning.
    if let Some(socket) = socket
        && state.settings.ws_send_buffer_bytes > 0
    {
        socket.cap_send_buffer(state.settings.ws_send_buffer_bytes);
    }
    let outbox = state.events.hub().new_outbox(socket);
    let response = response
        .set_body(BodyStream::new(outbox.body()))
        .map_into_boxed_body();
    let stream = stream
        .max_frame_size(MAX_FRAME_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME_BYTES);
    actix_web::rt::spawn(session::run(
        state.clone(),
        outbox,
        stream,
        header_auth,
        base,
    ));
    Ok(response)
}
