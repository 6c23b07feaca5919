//! `/metrics`, `/healthz` and `/readyz`.
//!
//! Ready means the start-up checks passed and the caches are synced, leader
//! or not: a standby replica that is ready to take over is ready, so a
//! rolling update of two replicas completes. Not ready answers 503 with the
//! reason, the same line the log has.

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::ops::metrics::Metrics;

/// Whether the process is ready, and if not, why.
#[derive(Debug)]
pub struct Readiness(RwLock<Result<(), String>>);

impl Default for Readiness {
    fn default() -> Self {
        Readiness(RwLock::new(Err("starting".into())))
    }
}

impl Readiness {
    pub fn ready(&self) {
        *self.0.write().expect("not poisoned") = Ok(());
    }

    pub fn not_ready(&self, reason: impl Into<String>) {
        *self.0.write().expect("not poisoned") = Err(reason.into());
    }

    pub fn get(&self) -> Result<(), String> {
        self.0.read().expect("not poisoned").clone()
    }
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
) {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.get();
                async move {
                    match ready {
                        Ok(()) => (StatusCode::OK, "ready".to_string()).into_response(),
                        Err(why) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {why}\n"),
                        )
                            .into_response(),
                    }
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the HTTP server stopped");
    }
}
