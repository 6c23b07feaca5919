//! Counts every request the client sends, by method and answer, in
//! `teamaccess_api_requests_total`: how hard the operator presses an API
//! server that is failing shows here, in its own metrics, even when the
//! server cannot record anything (its storage down).

use std::sync::Arc;

use crate::ops::metrics::Metrics;

/// Puts the request counter in front of the client's HTTP stack.
pub struct CountLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for CountLayer {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            metrics: self.0.clone(),
        }
    }
}

pub struct Counted<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<axum::http::Request<B>> for Counted<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<R>>,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = BoxFuture<Result<S::Response, tower::BoxError>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let mut count = Count {
            method: request.method().to_string(),
            metrics: self.metrics.clone(),
            answer: Answer::Cancelled,
        };
        let sent = self.inner.call(request);
        Box::pin(async move {
            let answer = sent.await.map_err(Into::into);
            count.answer = match &answer {
                Ok(r) => Answer::Status(r.status().as_u16()),
                Err(_) => Answer::Failed,
            };
            drop(count);
            answer
        })
    }
}

enum Answer {
    Status(u16),
    Failed,
    /// Dropped before an answer came: a deadline abandoned it. Under a
    /// failing server these are most requests, so they must count too.
    Cancelled,
}

/// Counts its request when dropped, however the request ended.
struct Count {
    method: String,
    metrics: Arc<Metrics>,
    answer: Answer,
}

impl Drop for Count {
    fn drop(&mut self) {
        let code = match self.answer {
            Answer::Status(s) => Some(s),
            Answer::Failed => None,
            Answer::Cancelled => {
                self.metrics.api_request_cancelled(&self.method);
                return;
            }
        };
        self.metrics.api_request(&self.method, code);
    }
}
