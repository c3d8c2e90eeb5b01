//! Prometheus metrics: their names, and the small functions the rest of the code calls.
//!
//! Every instance has a registry of its own (held in `AppState`), so several instances in
//! one process (the tests) never mix their numbers. It is served as Prometheus text on
//! `METRICS_BIND_ADDR` only, by a listener of its own (`startup`): never on the public one.
//!
//! Labels stay bounded: routes are actix's patterns (`/api/channels/{id}/messages`, never a
//! path; `unmatched` when nothing matched), methods outside the usual few are `other`, close
//! codes and error codes come from fixed lists in the code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::error::{AppError, ErrorCode};
use crate::state::AppState;

/// The route label of a request that matched no route.
pub const UNMATCHED: &str = "unmatched";

/// This instance's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    websockets_open: IntGauge,
    events_delivered: IntCounter,
    websocket_closes: IntCounterVec,
    upload_bytes: IntCounter,
    upload_refusals: IntCounterVec,
    store_duration: HistogramVec,
    store_errors: IntCounterVec,
    db_duration: HistogramVec,
    db_errors: IntCounterVec,
    db_pool_connections: IntGaugeVec,
    db_pool_max: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let metric = IntCounter::new(name, help).expect("a valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("registered once");
            metric
        };
        let counters = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("registered once");
            metric
        };
        let histograms = |name: &str, help: &str, labels: &[&str]| {
            let metric =
                HistogramVec::new(HistogramOpts::new(name, help), labels).expect("a valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("registered once");
            metric
        };
        let gauge = |name: &str, help: &str| {
            let metric = IntGauge::new(name, help).expect("a valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("registered once");
            metric
        };
        let gauges = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("registered once");
            metric
        };
        let inner = Inner {
            http_requests: counters(
                "chatserver_http_requests_total",
                "HTTP requests answered, by method, route pattern and status.",
                &["method", "route", "status"],
            ),
            http_duration: histograms(
                "chatserver_http_request_duration_seconds",
                "Time to answer an HTTP request (to the response head), by method, route pattern and status.",
                &["method", "route", "status"],
            ),
            websockets_open: gauge(
                "chatserver_websockets_open",
                "WebSocket connections open on this instance (from the upgrade to the socket's end).",
            ),
            events_delivered: counter(
                "chatserver_websocket_events_delivered_total",
                "Channel events queued to WebSocket connections (one per recipient).",
            ),
            websocket_closes: counters(
                "chatserver_websocket_closes_total",
                "WebSocket close frames sent by the server, by close code (4008 too slow, 4009 events lost, 1001 going away...).",
                &["code"],
            ),
            upload_bytes: counter(
                "chatserver_upload_bytes_total",
                "Bytes of uploaded files written to the store.",
            ),
            upload_refusals: counters(
                "chatserver_upload_refusals_total",
                "Uploads refused or failed, by the error code answered.",
                &["reason"],
            ),
            store_duration: histograms(
                "chatserver_store_operation_duration_seconds",
                "Time of file store calls, by operation (a put lasts as long as its upload's body).",
                &["operation"],
            ),
            store_errors: counters(
                "chatserver_store_errors_total",
                "File store calls that failed (the store, not the request), by operation.",
                &["operation"],
            ),
            db_duration: histograms(
                "chatserver_db_query_duration_seconds",
                "Time of database work (waiting for a connection or the writer included), by kind.",
                &["kind"],
            ),
            db_errors: counters(
                "chatserver_db_errors_total",
                "Database work that failed with a database error (not a missing row or a conflict), by kind.",
                &["kind"],
            ),
            db_pool_connections: gauges(
                "chatserver_db_pool_connections",
                "Connections of the database pool, idle or in use, at scrape time.",
                &["state"],
            ),
            db_pool_max: gauge(
                "chatserver_db_pool_max_connections",
                "The database pool's size limit.",
            ),
            registry,
        };
        Metrics(Arc::new(inner))
    }

    /// One HTTP request answered.
    pub fn http_request(&self, method: &Method, route: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        let labels = [method_label(method), route, status.as_str()];
        self.0.http_requests.with_label_values(&labels).inc();
        self.0
            .http_duration
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// A WebSocket is open until the returned guard is dropped.
    pub fn websocket_opened(&self) -> OpenWebSocket {
        self.0.websockets_open.inc();
        OpenWebSocket(self.clone())
    }

    /// `count` events queued to WebSocket connections.
    pub fn events_delivered(&self, count: u64) {
        if count > 0 {
            self.0.events_delivered.inc_by(count);
        }
    }

    /// The server sent a close frame with this code.
    pub fn websocket_closed(&self, code: u16) {
        self.0
            .websocket_closes
            .with_label_values(&[&code.to_string()])
            .inc();
    }

    /// A file of `bytes` bytes was written to the store by an upload.
    pub fn upload_stored(&self, bytes: u64) {
        self.0.upload_bytes.inc_by(bytes);
    }

    /// An upload was refused (or failed) with this code.
    pub fn upload_refused(&self, code: ErrorCode) {
        self.0
            .upload_refusals
            .with_label_values(&[code.as_str()])
            .inc();
    }

    /// One file store call, timed from `started`.
    pub fn store_call<T>(
        &self,
        operation: &'static str,
        started: Instant,
        result: &Result<T, AppError>,
    ) {
        self.0
            .store_duration
            .with_label_values(&[operation])
            .observe(started.elapsed().as_secs_f64());
        if result.as_ref().is_err_and(is_dependency_failure) {
            self.0.store_errors.with_label_values(&[operation]).inc();
        }
    }

    /// One piece of database work (`read` or `write`), timed from `started`.
    pub fn db_call<T>(&self, kind: &'static str, started: Instant, result: &Result<T, AppError>) {
        self.0
            .db_duration
            .with_label_values(&[kind])
            .observe(started.elapsed().as_secs_f64());
        if result.as_ref().is_err_and(is_dependency_failure) {
            self.0.db_errors.with_label_values(&[kind]).inc();
        }
    }

    /// Everything, in the Prometheus text format, with the pool's state as of now.
    pub fn render(&self, pool: PoolState) -> String {
        let gauge = |state: &str, value: u32| {
            self.0
                .db_pool_connections
                .with_label_values(&[state])
                .set(i64::from(value));
        };
        gauge("idle", pool.idle);
        gauge("in_use", pool.connections.saturating_sub(pool.idle));
        self.0.db_pool_max.set(i64::from(pool.max));
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.0.registry.gather(), &mut text)
            .expect("the text format takes any metric");
        String::from_utf8(text).expect("the text format is UTF-8")
    }
}

/// The database pool at one moment.
#[derive(Debug, Clone, Copy)]
pub struct PoolState {
    /// Open connections, idle or in use.
    pub connections: u32,
    pub idle: u32,
    pub max: u32,
}

/// Counts one open WebSocket until dropped.
pub struct OpenWebSocket(Metrics);

impl Drop for OpenWebSocket {
    fn drop(&mut self) {
        self.0.0.websockets_open.dec();
    }
}

/// A failure of the dependency itself, not a refusal of the request (a missing row, a
/// conflict, a body too large).
fn is_dependency_failure(error: &AppError) -> bool {
    matches!(
        error,
        AppError::StorageUnavailable(_) | AppError::DatabaseUnavailable(_) | AppError::Internal(_)
    )
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware for the public app: counts and times every request by its route pattern.
pub async fn track_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.metrics.clone());
    let method = req.method().clone();
    let started = Instant::now();
    let response = next.call(req).await?;
    if let Some(metrics) = metrics {
        let route = response
            .request()
            .match_pattern()
            .filter(|pattern| !pattern.is_empty())
            .unwrap_or_else(|| UNMATCHED.to_owned());
        metrics.http_request(
            &method,
            &route,
            response.status().as_u16(),
            started.elapsed(),
        );
    }
    Ok(response)
}

/// `GET /metrics`, on the metrics listener.
pub async fn scrape(state: web::Data<AppState>) -> HttpResponse {
    let text = state.metrics.render(state.db.pool_state());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_rendered_with_their_labels() {
        let metrics = Metrics::new();
        metrics.http_request(
            &Method::GET,
            "/api/channels/{id}",
            200,
            Duration::from_millis(3),
        );
        metrics.http_request(
            &Method::from_bytes(b"BREW").unwrap(),
            UNMATCHED,
            404,
            Duration::ZERO,
        );
        metrics.websocket_closed(4008);
        let open = metrics.websocket_opened();
        let text = metrics.render(PoolState {
            connections: 3,
            idle: 1,
            max: 8,
        });
        for line in [
            r#"chatserver_http_requests_total{method="GET",route="/api/channels/{id}",status="200"} 1"#,
            r#"chatserver_http_requests_total{method="other",route="unmatched",status="404"} 1"#,
            r#"chatserver_websocket_closes_total{code="4008"} 1"#,
            "chatserver_websockets_open 1",
            r#"chatserver_db_pool_connections{state="in_use"} 2"#,
            "chatserver_db_pool_max_connections 8",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        drop(open);
        let text = metrics.render(PoolState {
            connections: 0,
            idle: 0,
            max: 8,
        });
        assert!(text.lines().any(|l| l == "chatserver_websockets_open 0"));
    }
}
