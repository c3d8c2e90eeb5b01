//! A real-time chat server whose attachments live in S3.
//!
//! Layout: `config` (settings), `startup` (building the app), `telemetry` (logs), `error`
//! (the one error type and its codes), `db` (diesel over PostgreSQL or SQLite), `auth`
//! (passwords, JWTs), `client_addr` (who is asking, behind trusted proxies), `links` (signed
//! download links), `storage` (the file store), `uploads` (receiving files), `direct` (direct uploads: the browser sends
//! the bytes straight to the store), `idempotency`
//! (safe retries: `Idempotency-Key` and the socket's `client_id`), `chat` (the chat core: what
//! REST and the socket both call), `emoji` (what a reaction may be), `media` (image metadata
//! stripped on the way in, previews made in the background), `realtime` (channel events, the
//! hub, WebSocket sessions on sockets they own), `routes` (thin HTTP handlers), `state` (what
//! handlers share), `metrics` (Prometheus metrics, on a listener of their own), `gc` (the
//! sweeper), `verify` (the store checked against the table, for `chatserver verify`).
//!
//! Dependency rules (checked by `tests/api/layout.rs`): nothing imports `routes` but
//! `startup`; `db` imports nothing from `uploads`, `storage`, `chat` or `realtime`;
//! `realtime` knows `chat`, never the HTTP handlers.
#![forbid(unsafe_code)]

pub mod auth;
pub mod chat;
pub mod client_addr;
pub mod config;
pub mod db;
pub mod direct;
pub mod emoji;
pub mod error;
pub mod gc;
pub mod idempotency;
pub mod links;
pub mod media;
pub mod metrics;
pub mod ratelimit;
pub mod realtime;
pub mod routes;
pub mod startup;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod uploads;
pub mod verify;
