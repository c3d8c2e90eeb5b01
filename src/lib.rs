//! A real-time chat server whose attachments live in S3.
//!
//! Layout: `config` (settings), `startup` (building the app), `telemetry` (logs), `error`
//! (the one error type), `db` (diesel over PostgreSQL or SQLite), `auth` (passwords, JWTs),
//! `links` (signed download links), `storage` (the file store), `realtime` (channel
//! events), `routes` (HTTP handlers), `state` (what handlers share).

pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod gc;
pub mod links;
pub mod ratelimit;
pub mod realtime;
pub mod routes;
pub mod startup;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod uploads;
