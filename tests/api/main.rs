//! One test binary for the whole API (one link step, one shared target dir).

mod attention;
mod auth;
mod channels;
mod cli;
mod conversations;
mod errors;
mod files;
mod fixtures;
mod governance;
mod health;
mod helpers;
mod idempotency;
mod layout;
mod messages;
mod metrics;
mod migrations;
mod openapi;
mod redis;
mod s3;
mod shutdown;
mod sweeps;
mod tokens;
mod verify;
mod writes;
mod ws;
