//! Settings from the environment (and a `.env` file), validated once at start.
//!
//! Every problem is reported as one line naming the variable, so a bad deploy fails fast
//! with a reason instead of limping along.

use std::path::{Path, PathBuf};
use std::{env, fs};

use rand::RngCore;

/// Where the relational data lives; the scheme of `DATABASE_URL` picks the backend.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    Postgres(String),
    Sqlite(PathBuf),
}

impl std::fmt::Debug for DatabaseTarget {
    // The PostgreSQL URL may carry a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseTarget::Postgres(_) => f.write_str("Postgres(<redacted>)"),
            DatabaseTarget::Sqlite(path) => write!(f, "Sqlite({})", path.display()),
        }
    }
}

impl DatabaseTarget {
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseTarget::Postgres(url.to_owned()));
        }
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(ConfigError::new(
                    "DATABASE_URL",
                    "sqlite:// needs a file path",
                ));
            }
            return Ok(DatabaseTarget::Sqlite(PathBuf::from(path)));
        }
        let scheme = url.split("://").next().unwrap_or_default();
        Err(ConfigError::new(
            "DATABASE_URL",
            format!("unknown scheme {scheme:?}: use postgres://... or sqlite://PATH"),
        ))
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            DatabaseTarget::Postgres(_) => "postgres",
            DatabaseTarget::Sqlite(_) => "sqlite",
        }
    }
}

/// An HS256 key that never shows up in `Debug` output or logs.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A URL that may carry a password (`redis://:password@host`): `Debug` shows it without.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // scheme://[user[:password]@]host...: keep the scheme and what follows the `@`.
        match (self.0.split_once("://"), self.0.rsplit_once('@')) {
            (Some((scheme, _)), Some((_, host))) => write!(f, "{scheme}://<redacted>@{host}"),
            _ => f.write_str(&self.0),
        }
    }
}

#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    pub region: String,
    pub endpoint: Option<String>,
    /// Where browsers reach the same server (`AWS_S3_PUBLIC_ENDPOINT`), when the server's own
    /// `endpoint` is a private address: presigned URLs (downloads, direct upload parts) are
    /// made for it. SigV4 signs the host, so a URL cannot be rewritten afterwards.
    pub public_endpoint: Option<String>,
    /// Explicit keys; when unset the standard AWS chain (profile, instance role...) is used.
    pub credentials: Option<S3Credentials>,
    /// Limits on each call to the store, so that a store that stops answering fails the
    /// request with 503 instead of holding it.
    pub timeouts: S3Timeouts,
    /// Server-side encryption asked for every object the server writes.
    pub encryption: Option<S3Encryption>,
}

/// `AWS_S3_SSE` (and `AWS_S3_SSE_KMS_KEY_ID` for `aws:kms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Encryption {
    /// SSE-S3: keys managed by S3.
    Aes256,
    /// SSE-KMS, with this key (or the account's default `aws/s3` key).
    Kms { key_id: Option<String> },
}

#[derive(Debug, Clone, Copy)]
pub struct S3Timeouts {
    /// Opening a connection (`AWS_S3_CONNECT_TIMEOUT_SECONDS`).
    pub connect: std::time::Duration,
    /// Waiting for the next bytes of an answer (`AWS_S3_READ_TIMEOUT_SECONDS`).
    pub read: std::time::Duration,
    /// One call, retries included (`AWS_S3_OPERATION_TIMEOUT_SECONDS`); one part of a
    /// multipart upload is one call.
    pub operation: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseTarget,
    /// `DATABASE_BUSY_TIMEOUT_MS`: how long a SQLite write waits for a lock another process
    /// holds before the request is answered `503 database_unavailable`.
    pub database_busy_timeout: std::time::Duration,
    pub auth: AuthSettings,
    pub store: StoreSettings,
    pub limits: LimitSettings,
    pub realtime: RealtimeSettings,
    pub media: MediaSettings,
}

/// Images: metadata stripping and background previews.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    /// `STRIP_IMAGE_METADATA` (default true): remove EXIF, XMP and comments from JPEG, PNG and
    /// WebP uploads, keeping the orientation.
    pub strip_image_metadata: bool,
    /// `MEDIA_WORKERS` (default 1): previews made at once by this instance; 0 makes none.
    pub workers: usize,
    /// `MAX_IMAGE_PIXELS` (default 50 million): larger images get no preview.
    pub max_image_pixels: u64,
    /// `MEDIA_JOB_TIMEOUT_SECONDS` (default 30): a preview job that takes longer is given up.
    pub job_timeout_seconds: u64,
}

/// Where and how the HTTP server runs.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub bind_addr: String,
    /// `METRICS_BIND_ADDR`: where `GET /metrics` is served, on a listener of its own. Unset:
    /// no metrics listener.
    pub metrics_bind_addr: Option<String>,
    /// After SIGTERM, how long requests in flight (uploads) may take to finish before the
    /// server stops anyway; the Redis publishing queue is flushed within the same time.
    pub shutdown_grace_seconds: u64,
    pub workers: usize,
    pub static_dir: PathBuf,
    pub data_dir: PathBuf,
    /// `TRUSTED_PROXIES`: peers whose `X-Forwarded-For` names the client (for per-address
    /// limits) and whose `Forwarded`/`X-Forwarded-Proto`/`-Host` name the links' base URL;
    /// nobody else's is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// Tokens, links and passwords.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub jwt_secret: Secret,
    pub jwt_ttl_seconds: i64,
    pub download_url_ttl_seconds: i64,
    pub admin_usernames: Vec<String>,
    /// Password hashes computed at once; more wait, so a flood of logins cannot take every
    /// core from everything else.
    pub password_hash_concurrency: usize,
}

/// The file store and its sweeper.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub s3: Option<S3Settings>,
    /// `STORE_KEY_PREFIX`: where this deployment's objects live in the store. Unset: a name
    /// recorded in the database on first start.
    pub key_prefix: Option<String>,
    /// How long a deleted file's object is kept before the sweeper removes it.
    pub file_purge_after_seconds: i64,
    /// Objects with no row are removed once older than this (a crash between put and commit).
    pub orphan_min_age_seconds: i64,
    /// How often the background sweeper runs; 0 turns it off.
    pub gc_interval_seconds: u64,
    /// `FILE_RETENTION_DAYS`: files older than this are deleted (a channel's own, shorter,
    /// limit wins); `None`: kept until deleted.
    pub file_retention_days: Option<u32>,
    /// `UPLOAD_SESSION_TTL_SECONDS`: a direct upload not completed, or completed and not
    /// attached, within this long expires (its parts and object deleted).
    pub upload_session_ttl_seconds: i64,
    /// `DIRECT_UPLOAD_PART_SIZE_BYTES`: the part size of direct uploads (grown for files
    /// that would need more than 10,000 parts). S3 wants at least 5 MiB; smaller is for
    /// tests against stores that allow it.
    pub direct_upload_part_size: u64,
    /// `AWS_S3_CORS_ORIGINS`: origins whose browsers may `PUT` parts to the bucket; set as
    /// the bucket's CORS rule at start. Empty: the bucket's CORS is left as it is.
    pub s3_cors_origins: Vec<String>,
}

/// What one user or request may do.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    pub max_file_size_mb: u64,
    /// `USER_QUOTA_MB`: bytes of live files one user may keep; `None`: unlimited.
    pub user_quota_bytes: Option<u64>,
    /// An upload body that sends nothing for this long is cut off (408).
    pub body_idle_timeout_seconds: u64,
    /// Uploads one user may have in flight at once, per instance (429 beyond).
    pub max_concurrent_uploads_per_user: usize,
    /// `MAX_PENDING_UPLOADS`: direct uploads one user may have open (not yet attached) at
    /// once, across instances (429 beyond).
    pub max_pending_uploads: usize,
    pub allowed_file_types: Vec<String>,
    /// Download-link requests a user may make per minute.
    pub download_links_per_minute: u32,
    /// Failed logins per username per client address per minute (each costs an Argon2
    /// hash). Per address too, so a stranger cannot lock the owner out.
    pub login_attempts_per_minute: u32,
    /// Failed logins per client address per minute, whatever the usernames (a spray).
    pub login_attempts_per_minute_per_address: u32,
    /// Registrations per client address per minute.
    pub registrations_per_minute_per_address: u32,
}

/// WebSockets and the Redis bridge between instances.
#[derive(Debug, Clone)]
pub struct RealtimeSettings {
    pub redis_url: Option<SecretUrl>,
    /// The Redis pub/sub channel the instances of one deployment share.
    pub redis_channel: String,
    /// Events an instance holds for Redis while it cannot publish them.
    pub redis_publish_queue: usize,
    /// Events a WebSocket may have waiting before it is closed as too slow (4008).
    pub ws_queue_capacity: usize,
    pub ws_max_connections_per_user: usize,
    /// A WebSocket's kernel send buffer (SO_SNDBUF) in bytes; 0 leaves the kernel's
    /// autotuning (which lets a client that does not read park megabytes there).
    pub ws_send_buffer_bytes: usize,
    /// How long a WebSocket's close frame may wait for the client to read it before the
    /// socket is shut down.
    pub ws_close_timeout_seconds: u64,
    /// How often the server pings a WebSocket; one silent for three times as long is closed.
    pub ws_heartbeat_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {variable}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub reason: String,
}

impl ConfigError {
    fn new(variable: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            variable,
            reason: reason.into(),
        }
    }
}

pub const DEFAULT_ALLOWED_FILE_TYPES: &str = "image/*,application/pdf,\
application/msword,application/vnd.openxmlformats-officedocument.wordprocessingml.document,\
application/vnd.ms-excel,application/vnd.openxmlformats-officedocument.spreadsheetml.sheet,\
application/vnd.ms-powerpoint,application/vnd.openxmlformats-officedocument.presentationml.presentation,\
application/vnd.oasis.opendocument.text,application/vnd.oasis.opendocument.spreadsheet,\
application/vnd.oasis.opendocument.presentation,\
text/plain,text/csv,application/zip,audio/*,video/*";

/// Minimum HS256 key length (RFC 7518 §3.2: at least the hash output size).
const MIN_JWT_SECRET_BYTES: usize = 32;

impl Settings {
    /// Reads `.env` (if present) and the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env is normal; a malformed one is a configuration error.
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => return Err(ConfigError::new(".env", e.to_string())),
        }
        Self::from_lookup(|key| env::var(key).ok().filter(|v| !v.trim().is_empty()))
    }

    /// Builds settings from any key lookup; tests pass a map instead of the environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let data_dir = PathBuf::from(get("DATA_DIR").unwrap_or_else(|| "data".into()));
        let database = DatabaseTarget::parse(
            &get("DATABASE_URL").unwrap_or_else(|| "sqlite://data/chat.db".into()),
        )?;
        let jwt_secret = match get("JWT_SECRET") {
            Some(s) if s.len() < MIN_JWT_SECRET_BYTES => {
                return Err(ConfigError::new(
                    "JWT_SECRET",
                    format!(
                        "must be at least {MIN_JWT_SECRET_BYTES} bytes, got {}",
                        s.len()
                    ),
                ));
            }
            Some(s) => Some(Secret(s.into_bytes())),
            // Generated (or read) once everything else has been checked: a configuration
            // that is refused leaves nothing behind.
            None => None,
        };
        let seconds = |key, default, range| {
            parse_number(&get, key, default, range).map(std::time::Duration::from_secs)
        };
        let s3_timeouts = S3Timeouts {
            connect: seconds("AWS_S3_CONNECT_TIMEOUT_SECONDS", 3, 1..=300)?,
            read: seconds("AWS_S3_READ_TIMEOUT_SECONDS", 20, 1..=3600)?,
            operation: seconds("AWS_S3_OPERATION_TIMEOUT_SECONDS", 60, 1..=3600)?,
        };
        let s3_encryption = match get("AWS_S3_SSE").as_deref() {
            None => None,
            Some("AES256") => Some(S3Encryption::Aes256),
            Some("aws:kms") => Some(S3Encryption::Kms {
                key_id: get("AWS_S3_SSE_KMS_KEY_ID"),
            }),
            Some(other) => {
                return Err(ConfigError::new(
                    "AWS_S3_SSE",
                    format!("{other:?}: use AES256 or aws:kms"),
                ));
            }
        };
        if get("AWS_S3_SSE_KMS_KEY_ID").is_some()
            && !matches!(s3_encryption, Some(S3Encryption::Kms { .. }))
        {
            return Err(ConfigError::new(
                "AWS_S3_SSE_KMS_KEY_ID",
                "a KMS key needs AWS_S3_SSE=aws:kms",
            ));
        }
        let s3 = get("AWS_S3_BUCKET_NAME").map(|bucket| S3Settings {
            bucket,
            region: get("AWS_S3_REGION").unwrap_or_else(|| "us-east-1".into()),
            endpoint: get("AWS_S3_ENDPOINT"),
            public_endpoint: get("AWS_S3_PUBLIC_ENDPOINT"),
            credentials: match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
                (Some(access_key_id), Some(secret)) => Some(S3Credentials {
                    access_key_id,
                    secret_access_key: Secret(secret.into_bytes()),
                    session_token: get("AWS_SESSION_TOKEN").map(|t| Secret(t.into_bytes())),
                }),
                _ => None,
            },
            timeouts: s3_timeouts,
            encryption: s3_encryption,
        });
        let static_dir = get("STATIC_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(default_static_dir);
        let allowed_file_types = parse_list(
            &get("ALLOWED_FILE_TYPES").unwrap_or_else(|| DEFAULT_ALLOWED_FILE_TYPES.into()),
        )
        .into_iter()
        .map(|t| t.to_ascii_lowercase())
        .collect::<Vec<_>>();
        if let Some(bad) = allowed_file_types.iter().find(|t| !t.contains('/')) {
            return Err(ConfigError::new(
                "ALLOWED_FILE_TYPES",
                format!("{bad:?} is not a MIME type or type/*"),
            ));
        }
        let mut settings = Settings {
            server: ServerSettings {
                bind_addr: get("BIND_ADDR").unwrap_or_else(|| "127.0.0.1:8080".into()),
                metrics_bind_addr: get("METRICS_BIND_ADDR"),
                shutdown_grace_seconds: parse_number(&get, "SHUTDOWN_GRACE_SECONDS", 30, 0..=3600)?,
                workers: parse_number(&get, "WORKERS", default_workers(), 1..=256)?,
                static_dir,
                data_dir,
                trusted_proxies: crate::client_addr::parse_trusted_proxies(
                    &get("TRUSTED_PROXIES").unwrap_or_default(),
                )
                .map_err(|reason| ConfigError::new("TRUSTED_PROXIES", reason))?,
            },
            database,
            database_busy_timeout: std::time::Duration::from_millis(parse_number(
                &get,
                "DATABASE_BUSY_TIMEOUT_MS",
                crate::db::DEFAULT_BUSY_TIMEOUT.as_millis() as u64,
                1..=600_000,
            )?),
            auth: AuthSettings {
                jwt_secret: jwt_secret.clone().unwrap_or_else(|| Secret(Vec::new())),
                jwt_ttl_seconds: parse_number(&get, "JWT_TTL_SECONDS", 86_400, 60..=31_536_000)?,
                download_url_ttl_seconds: parse_number(
                    &get,
                    "DOWNLOAD_URL_TTL_SECONDS",
                    900,
                    1..=604_800,
                )?,
                admin_usernames: parse_list(&get("ADMIN_USERNAMES").unwrap_or_default()),
                password_hash_concurrency: parse_number(
                    &get,
                    "PASSWORD_HASH_CONCURRENCY",
                    (default_workers() / 2).max(1),
                    1..=1024,
                )?,
            },
            store: StoreSettings {
                s3,
                key_prefix: parse_key_prefix(get("STORE_KEY_PREFIX"))?,
                file_purge_after_seconds: parse_number(
                    &get,
                    "FILE_PURGE_AFTER_SECONDS",
                    3600,
                    0..=31_536_000,
                )?,
                orphan_min_age_seconds: parse_number(
                    &get,
                    "ORPHAN_MIN_AGE_SECONDS",
                    86_400,
                    0..=31_536_000,
                )?,
                gc_interval_seconds: parse_number(&get, "GC_INTERVAL_SECONDS", 600, 0..=86_400)?,
                file_retention_days: match get("FILE_RETENTION_DAYS") {
                    None => None,
                    Some(_) => Some(parse_number(&get, "FILE_RETENTION_DAYS", 0, 1..=36_500)?),
                },
                upload_session_ttl_seconds: parse_number(
                    &get,
                    "UPLOAD_SESSION_TTL_SECONDS",
                    86_400,
                    1..=2_592_000,
                )?,
                direct_upload_part_size: parse_number(
                    &get,
                    "DIRECT_UPLOAD_PART_SIZE_BYTES",
                    8 * 1024 * 1024,
                    1024..=5 * 1024 * 1024 * 1024,
                )?,
                s3_cors_origins: parse_list(&get("AWS_S3_CORS_ORIGINS").unwrap_or_default()),
            },
            limits: LimitSettings {
                max_file_size_mb: parse_number(&get, "MAX_FILE_SIZE_MB", 50, 1..=1_048_576)?,
                user_quota_bytes: match get("USER_QUOTA_MB") {
                    None => None,
                    Some(_) => {
                        let mb: u64 = parse_number(&get, "USER_QUOTA_MB", 0, 1..=1 << 30)?;
                        Some(mb * 1024 * 1024)
                    }
                },
                body_idle_timeout_seconds: parse_number(
                    &get,
                    "BODY_IDLE_TIMEOUT_SECONDS",
                    30,
                    1..=3600,
                )?,
                max_concurrent_uploads_per_user: parse_number(
                    &get,
                    "MAX_CONCURRENT_UPLOADS_PER_USER",
                    4,
                    1..=1000,
                )?,
                max_pending_uploads: parse_number(&get, "MAX_PENDING_UPLOADS", 20, 1..=10_000)?,
                allowed_file_types,
                download_links_per_minute: parse_number(
                    &get,
                    "DOWNLOAD_LINKS_PER_MINUTE",
                    60,
                    1..=100_000,
                )?,
                login_attempts_per_minute: parse_number(
                    &get,
                    "LOGIN_ATTEMPTS_PER_MINUTE",
                    10,
                    1..=100_000,
                )?,
                login_attempts_per_minute_per_address: parse_number(
                    &get,
                    "LOGIN_ATTEMPTS_PER_MINUTE_PER_ADDRESS",
                    30,
                    1..=100_000,
                )?,
                registrations_per_minute_per_address: parse_number(
                    &get,
                    "REGISTRATIONS_PER_MINUTE_PER_ADDRESS",
                    10,
                    1..=100_000,
                )?,
            },
            realtime: RealtimeSettings {
                redis_url: get("REDIS_URL").map(SecretUrl),
                redis_channel: get("REDIS_CHANNEL").unwrap_or_else(|| "chatserver:events".into()),
                redis_publish_queue: parse_number(
                    &get,
                    "REDIS_PUBLISH_QUEUE",
                    8192,
                    1..=1_000_000,
                )?,
                ws_queue_capacity: parse_number(&get, "WS_QUEUE_CAPACITY", 256, 1..=65_536)?,
                ws_max_connections_per_user: parse_number(
                    &get,
                    "WS_MAX_CONNECTIONS_PER_USER",
                    20,
                    1..=10_000,
                )?,
                ws_send_buffer_bytes: parse_number(
                    &get,
                    "WS_SEND_BUFFER_BYTES",
                    64 * 1024,
                    0..=16 * 1024 * 1024,
                )?,
                ws_close_timeout_seconds: parse_number(
                    &get,
                    "WS_CLOSE_TIMEOUT_SECONDS",
                    10,
                    1..=3600,
                )?,
                ws_heartbeat_seconds: parse_number(&get, "WS_HEARTBEAT_SECONDS", 15, 1..=600)?,
            },
            media: MediaSettings {
                strip_image_metadata: parse_bool(&get, "STRIP_IMAGE_METADATA", true)?,
                workers: parse_number(&get, "MEDIA_WORKERS", 1, 0..=64)?,
                max_image_pixels: parse_number(
                    &get,
                    "MAX_IMAGE_PIXELS",
                    50_000_000,
                    1..=1_000_000_000,
                )?,
                job_timeout_seconds: parse_number(&get, "MEDIA_JOB_TIMEOUT_SECONDS", 30, 1..=3600)?,
            },
        };
        if jwt_secret.is_none() {
            settings.auth.jwt_secret = Secret(load_or_create_secret(&settings.server.data_dir)?);
        }
        Ok(settings)
    }
}

fn parse_bool(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match get(name).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if matches!(v.as_str(), "true" | "1" | "yes" | "on") => Ok(true),
        Some(v) if matches!(v.as_str(), "false" | "0" | "no" | "off") => Ok(false),
        Some(v) => Err(ConfigError::new(
            name,
            format!("{v:?} is not true or false"),
        )),
    }
}

fn parse_number<T>(
    get: &impl Fn(&str) -> Option<String>,
    key: &'static str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = get(key) else {
        return Ok(default);
    };
    let value: T = raw
        .trim()
        .parse()
        .map_err(|_| ConfigError::new(key, format!("{raw:?} is not a whole number")))?;
    if !range.contains(&value) {
        return Err(ConfigError::new(
            key,
            format!("{value} is outside {}..={}", range.start(), range.end()),
        ));
    }
    Ok(value)
}

/// 1 to 64 characters of `[a-z0-9._-]` in `/`-separated segments (no empty, `.` or `..`
/// segment), so a prefix can never reach outside the store's key space.
fn parse_key_prefix(raw: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let prefix = raw.trim().trim_matches('/');
    let valid_segment = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    };
    if prefix.is_empty() || prefix.len() > 64 || !prefix.split('/').all(valid_segment) {
        return Err(ConfigError::new(
            "STORE_KEY_PREFIX",
            format!("{raw:?}: use 1 to 64 characters of a-z, 0-9, '.', '_', '-' and '/'"),
        ));
    }
    Ok(Some(prefix.to_owned()))
}

fn parse_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// `static/` next to the working directory, else the one in the source tree.
fn default_static_dir() -> PathBuf {
    let local = PathBuf::from("static");
    if local.is_dir() {
        local
    } else {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/static"))
    }
}

/// With no `JWT_SECRET`, a random key is generated once and kept in the data directory so
/// tokens survive restarts. Several instances must share an explicit `JWT_SECRET`.
fn load_or_create_secret(data_dir: &Path) -> Result<Vec<u8>, ConfigError> {
    let path = data_dir.join("jwt_secret");
    let io_error = |e: std::io::Error| {
        ConfigError::new("JWT_SECRET", format!("unset, and {}: {e}", path.display()))
    };
    if let Ok(existing) = fs::read(&path)
        && existing.len() >= MIN_JWT_SECRET_BYTES
    {
        tracing::warn!(path = %path.display(), "JWT_SECRET is unset; using the generated key kept in the data directory");
        return Ok(existing);
    }
    fs::create_dir_all(data_dir).map_err(io_error)?;
    let mut key = vec![0u8; 64];
    rand::thread_rng().fill_bytes(&mut key);
    write_private_file(&path, &key).map_err(io_error)?;
    tracing::warn!(path = %path.display(), "JWT_SECRET is unset; generated a random key and kept it in the data directory");
    Ok(key)
}

fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    const KEY: (&str, &str) = ("JWT_SECRET", "0123456789abcdef0123456789abcdef");

    #[test]
    fn unknown_database_scheme_is_refused_with_its_name() {
        let err = settings(&[KEY, ("DATABASE_URL", "mysql://x/y")]).unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
        assert!(err.to_string().contains("mysql"), "{err}");
    }

    #[test]
    fn a_short_jwt_secret_is_refused() {
        let err = settings(&[("JWT_SECRET", "short")]).unwrap_err();
        assert_eq!(err.variable, "JWT_SECRET");
    }

    #[test]
    fn defaults_match_the_contract() {
        let s = settings(&[KEY]).unwrap();
        assert_eq!(s.server.bind_addr, "127.0.0.1:8080");
        assert_eq!(s.database, DatabaseTarget::Sqlite("data/chat.db".into()));
        assert_eq!(s.limits.max_file_size_mb, 50);
        assert_eq!(s.auth.download_url_ttl_seconds, 900);
        assert_eq!(s.auth.jwt_ttl_seconds, 86_400);
        assert!(s.store.s3.is_none());
        assert_eq!(s.server.metrics_bind_addr, None);
        assert_eq!(s.server.shutdown_grace_seconds, 30);
    }

    #[test]
    fn numbers_out_of_range_are_refused() {
        let err = settings(&[KEY, ("MAX_FILE_SIZE_MB", "0")]).unwrap_err();
        assert_eq!(err.variable, "MAX_FILE_SIZE_MB");
        let err = settings(&[KEY, ("JWT_TTL_SECONDS", "soon")]).unwrap_err();
        assert_eq!(err.variable, "JWT_TTL_SECONDS");
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let s = settings(&[
            ("JWT_SECRET", "jwt-secret-jwt-secret-jwt-secret-123"),
            ("REDIS_URL", "redis://:redis-pass@cache:6379/0"),
            ("AWS_S3_BUCKET_NAME", "b"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "aws-secret-key"),
            ("AWS_SESSION_TOKEN", "aws-session-token"),
            ("DATABASE_URL", "postgres://u:pg-pass@h/db"),
        ])
        .unwrap();
        let shown = format!("{s:?}");
        for secret in [
            "jwt-secret",
            "redis-pass",
            "aws-secret-key",
            "aws-session-token",
            "pg-pass",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("cache:6379"),
            "the Redis host is still shown"
        );
    }

    #[test]
    fn postgres_urls_are_not_printed() {
        let t = DatabaseTarget::parse("postgres://u:hunter2@h/db").unwrap();
        assert!(!format!("{t:?}").contains("hunter2"));
    }
}
