//! Frames a client sends over the WebSocket, and the server's own (non-event) frames.

use crate::error::ErrorCode;
use serde::Deserialize;
use serde_json::{Value, json};

pub const MAX_CLIENT_ID_CHARS: usize = 64;

#[derive(Debug)]
pub enum ClientFrame {
    Auth {
        token: String,
    },
    Message {
        channel_id: i32,
        content: String,
        client_id: Option<String>,
        thread_id: Option<i32>,
    },
    Edit {
        channel_id: i32,
        message_id: i32,
        content: String,
    },
    Delete {
        channel_id: i32,
        message_id: i32,
    },
    /// `add`: a `react` frame; otherwise `unreact`.
    React {
        channel_id: i32,
        message_id: i32,
        emoji: String,
        add: bool,
    },
    Typing {
        channel_id: i32,
    },
    Ping,
}

/// Why a frame was refused: answered with an `error` frame, the connection stays open.
#[derive(Debug, PartialEq, Eq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
}

impl FrameError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        FrameError {
            code,
            message: message.into(),
        }
    }
}

#[derive(Deserialize)]
struct AuthFields {
    token: String,
}

#[derive(Deserialize)]
struct MessageFields {
    channel_id: i32,
    content: String,
    client_id: Option<String>,
    thread_id: Option<i32>,
}

#[derive(Deserialize)]
struct EditFields {
    channel_id: i32,
    message_id: i32,
    content: String,
}

#[derive(Deserialize)]
struct DeleteFields {
    channel_id: i32,
    message_id: i32,
}

#[derive(Deserialize)]
struct ReactFields {
    channel_id: i32,
    message_id: i32,
    emoji: String,
}

#[derive(Deserialize)]
struct TypingFields {
    channel_id: i32,
}

pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|_| FrameError::new(ErrorCode::InvalidJson, "the frame is not a JSON object"))?;
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| FrameError::new(ErrorCode::BadRequest, "the frame has no \"type\""))?
        .to_owned();
    let fields = |e: serde_json::Error| {
        FrameError::new(
            ErrorCode::BadRequest,
            format!("invalid {kind:?} frame: {e}"),
        )
    };
    Ok(match kind.as_str() {
        "auth" => {
            let f: AuthFields = serde_json::from_value(value).map_err(fields)?;
            ClientFrame::Auth { token: f.token }
        }
        "message" => {
            let f: MessageFields = serde_json::from_value(value).map_err(fields)?;
            if f.client_id
                .as_ref()
                .is_some_and(|id| id.chars().count() > MAX_CLIENT_ID_CHARS)
            {
                return Err(FrameError::new(
                    ErrorCode::BadRequest,
                    format!("client_id has at most {MAX_CLIENT_ID_CHARS} characters"),
                ));
            }
            ClientFrame::Message {
                channel_id: f.channel_id,
                content: f.content,
                client_id: f.client_id,
                thread_id: f.thread_id,
            }
        }
        "edit" => {
            let f: EditFields = serde_json::from_value(value).map_err(fields)?;
            ClientFrame::Edit {
                channel_id: f.channel_id,
                message_id: f.message_id,
                content: f.content,
            }
        }
        "delete" => {
            let f: DeleteFields = serde_json::from_value(value).map_err(fields)?;
            ClientFrame::Delete {
                channel_id: f.channel_id,
                message_id: f.message_id,
            }
        }
        "react" | "unreact" => {
            let f: ReactFields = serde_json::from_value(value).map_err(fields)?;
            ClientFrame::React {
                channel_id: f.channel_id,
                message_id: f.message_id,
                emoji: f.emoji,
                add: kind == "react",
            }
        }
        "typing" => {
            let f: TypingFields = serde_json::from_value(value).map_err(fields)?;
            ClientFrame::Typing {
                channel_id: f.channel_id,
            }
        }
        "ping" => ClientFrame::Ping,
        other => {
            return Err(FrameError::new(
                ErrorCode::UnknownType,
                format!("unknown frame type {other:?}"),
            ));
        }
    })
}

pub fn ready(user_id: i32, channel_ids: &[i32]) -> String {
    json!({ "type": "ready", "user_id": user_id, "channel_ids": channel_ids }).to_string()
}

pub fn pong() -> String {
    json!({ "type": "pong" }).to_string()
}

/// A `message_created` sent again to the socket that re-sent a `client_id` it had already
/// posted: `data` is the first one's, unchanged.
pub fn replayed_message(channel_id: i32, data: Value) -> String {
    json!({ "type": "message_created", "channel_id": channel_id, "data": data, "replayed": true })
        .to_string()
}

pub fn error(code: ErrorCode, message: &str, client_id: Option<&str>) -> String {
    let mut frame = json!({ "type": "error", "code": code, "message": message });
    if let Some(client_id) = client_id {
        frame["client_id"] = json!(client_id);
    }
    frame.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_or_say_why_not() {
        assert!(matches!(parse(r#"{"type":"ping"}"#), Ok(ClientFrame::Ping)));
        assert!(matches!(
            parse(r#"{"type":"message","channel_id":3,"content":"hi","client_id":"c1"}"#),
            Ok(ClientFrame::Message { channel_id: 3, .. })
        ));
        assert!(matches!(
            parse(r#"{"type":"message","channel_id":3,"content":"hi","thread_id":9}"#),
            Ok(ClientFrame::Message {
                thread_id: Some(9),
                ..
            })
        ));
        assert!(matches!(
            parse(r#"{"type":"unreact","channel_id":3,"message_id":4,"emoji":"x"}"#),
            Ok(ClientFrame::React { add: false, .. })
        ));
        assert_eq!(
            parse(r#"{"type":"edit","channel_id":3}"#).unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(parse("{nope").unwrap_err().code, ErrorCode::InvalidJson);
        assert_eq!(
            parse(r#"{"type":"dance"}"#).unwrap_err().code,
            ErrorCode::UnknownType
        );
        assert_eq!(
            parse(r#"{"type":"typing"}"#).unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(parse(r#"[1,2]"#).unwrap_err().code, ErrorCode::BadRequest);
    }
}
