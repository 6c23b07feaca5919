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
        let method = request.method().to_string();
        let metrics = self.metrics.clone();
        let sent = self.inner.call(request);
        Box::pin(async move {
            let answer = sent.await.map_err(Into::into);
            let status = answer.as_ref().ok().map(|r| r.status().as_u16());
            metrics.api_request(&method, status);
            answer
        })
    }
}
