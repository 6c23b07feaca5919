//! Leader election on a coordination.k8s.io Lease, with get, create and update
//! only (the verbs config/rbac grants): every change is an update carrying the
//! resourceVersion read, so two replicas can never both win.
//!
//! Expiry is judged as client-go does, on this process's own monotonic clock:
//! a lease is free when its record has not changed for a full lease duration
//! since we first saw it, whatever the holder's clock said.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tracing::{info, warn};

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    pub duration: Duration,
    pub retry: Duration,
    /// resourceVersion we last saw and when we first saw it
    observed: Option<(String, Instant)>,
    gate: LeaseGate,
    renew_deadline: Duration,
}

/// Until when this process may still speak as the leader. Another replica can
/// take the lease only after it has seen our last renewal unchanged for a full
/// lease duration, so a renewal that started at `t` keeps us safe until
/// `t + renew deadline` (shorter than the duration). A leader that could not
/// renew by then (the API server gone, or the process paused and resumed)
/// must send nothing more, not even a lease request: [`GateLayer`] refuses
/// every request, and the elector gives up without asking (the process exits
/// and a new one, as a kubelet starts it, competes afresh).
#[derive(Clone, Default)]
pub struct LeaseGate(Arc<Mutex<GateState>>);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum GateState {
    /// Not leading yet, or no leader election: caches may read.
    #[default]
    Open,
    /// Leading until this instant.
    Leading(Instant),
}

impl LeaseGate {
    /// A renewal that started at `started` succeeded.
    pub fn renewed(&self, started: Instant, renew_deadline: Duration) {
        *self.0.lock().expect("not poisoned") = GateState::Leading(started + renew_deadline);
    }

    /// Whether a request may go out at `now`. A lease request is no
    /// exception: the bound counts every request after the lease
    /// could have passed to another replica, and one sent to learn that it
    /// did would itself break it.
    pub fn allows(&self, now: Instant) -> bool {
        !self.expired(now)
    }

    /// Whether we led and the renew deadline has passed by `now`.
    pub fn expired(&self, now: Instant) -> bool {
        match *self.0.lock().expect("not poisoned") {
            GateState::Open => false,
            GateState::Leading(until) => now >= until,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("not sent: the leader lease could not be renewed in time, so another replica may lead now")]
pub struct LeaseExpired;

/// Puts a [`LeaseGate`] in front of the client's HTTP stack.
pub struct GateLayer(pub LeaseGate);

impl<S> tower::Layer<S> for GateLayer {
    type Service = Gated<S>;
    fn layer(&self, inner: S) -> Gated<S> {
        Gated {
            inner,
            gate: self.0.clone(),
        }
    }
}

pub struct Gated<S> {
    inner: S,
    gate: LeaseGate,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<axum::http::Request<B>> for Gated<S>
where
    S: tower::Service<axum::http::Request<B>>,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
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
        if !self.gate.allows(Instant::now()) {
            return Box::pin(std::future::ready(Err(LeaseExpired.into())));
        }
        let sent = self.inner.call(request);
        Box::pin(async move { sent.await.map_err(Into::into) })
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "lease {namespace}/{name}: {}",
    crate::controller::error::readable(source)
)]
pub struct LeaseError {
    namespace: String,
    name: String,
    #[source]
    source: kube::Error,
}

impl LeaderElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
        retry: Duration,
        gate: LeaseGate,
    ) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
            retry,
            observed: None,
            gate,
            renew_deadline: duration * 2 / 3,
        }
    }

    fn err(&self, source: kube::Error) -> LeaseError {
        LeaseError {
            namespace: self.api.namespace().unwrap_or_default().to_string(),
            name: self.name.clone(),
            source,
        }
    }

    fn spec(&self, acquire: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: Some(acquire.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One attempt to take or keep the lease; true while we hold it. An
    /// attempt that does not finish within the retry period counts as failed.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaseError> {
        let limit = self.retry.max(Duration::from_secs(1));
        let started = Instant::now();
        match tokio::time::timeout(limit, self.attempt()).await {
            Ok(Ok(true)) => {
                self.gate.renewed(started, self.renew_deadline);
                Ok(true)
            }
            Ok(r) => r,
            Err(_) => Err(self.err(kube::Error::Service(
                format!("lease request timed out after {limit:?}").into(),
            ))),
        }
    }

    async fn attempt(&mut self) -> Result<bool, LeaseError> {
        let current = match self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.err(e))?
        {
            Some(l) => l,
            None => {
                let lease = Lease {
                    metadata: kube::api::ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(None, 0)),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    // another replica created it first
                    Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(false),
                    Err(e) => Err(self.err(e)),
                };
            }
        };
        let rv = current
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        match &self.observed {
            Some((seen, _)) if *seen == rv => {}
            _ => self.observed = Some((rv, Instant::now())),
        }
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.identity;
        let expired = self
            .observed
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() > self.duration);
        if !ours && !holder.is_empty() && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + if ours { 0 } else { 1 };
        let acquire = if ours {
            spec.acquire_time.clone()
        } else {
            None
        };
        let mut updated = current.clone();
        updated.spec = Some(self.spec(acquire, transitions));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &updated)
            .await
        {
            Ok(l) => {
                self.observed = Some((
                    l.metadata.resource_version.unwrap_or_default(),
                    Instant::now(),
                ));
                if !ours {
                    info!(lease = %self.name, identity = %self.identity, "acquired the leader lease");
                }
                Ok(true)
            }
            // someone else wrote first: not ours this round
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Waits until we hold the lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.retry).await;
        }
    }

    /// Renews until the renew deadline of the last successful renewal has
    /// passed (then another replica may take over, so we stop), or until
    /// another replica holds the lease. The deadline is the gate's, so the
    /// elector stops exactly when the gate closes and never asks past it.
    pub async fn hold(&mut self) {
        loop {
            tokio::time::sleep(self.retry).await;
            // a process paused past its deadline learns it here, before it
            // sends anything
            if self.gate.expired(Instant::now()) {
                warn!(lease = %self.name, "could not renew the leader lease in time");
                return;
            }
            #[cfg(feature = "failpoints")]
            crate::controller::failpoint::before_renew(self.api.namespace().unwrap_or_default())
                .await;
            match self.try_acquire_or_renew().await {
                Ok(true) => {}
                Ok(false) => {
                    warn!(lease = %self.name, "the leader lease is held by another replica");
                    return;
                }
                Err(e) => warn!(error = %e, "renewing the leader lease failed"),
            }
            // an attempt under way when the deadline passed (its read answered
            // late, or the process was paused in it) had its update refused
            if self.gate.expired(Instant::now()) {
                warn!(lease = %self.name, "could not renew the leader lease in time");
                return;
            }
        }
    }

    /// Gives the lease up so a standby takes over at once, not after expiry.
    pub async fn release(&mut self) {
        let Ok(Ok(Some(mut lease))) =
            tokio::time::timeout(self.duration, self.api.get_opt(&self.name)).await
        else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        let pp = PostParams::default();
        let release = self.api.replace(&self.name, &pp, &lease);
        match tokio::time::timeout(self.duration, release).await {
            Ok(Ok(_)) => info!(lease = %self.name, "released the leader lease"),
            Ok(Err(e)) => warn!(error = %e, "releasing the leader lease failed"),
            Err(_) => warn!(lease = %self.name, "releasing the leader lease timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service};

    const ROLE: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/roles/x";
    const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/teamaccess";

    #[test]
    fn a_leader_past_its_renew_deadline_may_send_nothing_not_even_for_its_lease() {
        let gate = LeaseGate::default();
        let t0 = Instant::now();
        // caches read before the lease is won, and without leader election
        assert!(gate.allows(t0 + Duration::from_secs(3600)));
        assert!(!gate.expired(t0 + Duration::from_secs(3600)));
        gate.renewed(t0, Duration::from_secs(10));
        assert!(gate.allows(t0 + Duration::from_secs(9)));
        assert!(!gate.allows(t0 + Duration::from_secs(10)));
        assert!(gate.expired(t0 + Duration::from_secs(10)));
        // a renewal reopens it
        gate.renewed(t0 + Duration::from_secs(20), Duration::from_secs(10));
        assert!(gate.allows(t0 + Duration::from_secs(29)));
    }

    #[tokio::test]
    async fn a_refused_request_never_reaches_the_api_server() {
        let gate = LeaseGate::default();
        let sent = Arc::new(Mutex::new(Vec::<String>::new()));
        let inner = {
            let sent = sent.clone();
            tower::service_fn(move |r: axum::http::Request<()>| {
                sent.lock().unwrap().push(r.uri().path().to_string());
                std::future::ready(Ok::<_, tower::BoxError>(()))
            })
        };
        let mut gated = GateLayer(gate.clone()).layer(inner);
        let request = |path: &str| axum::http::Request::get(path).body(()).unwrap();
        gated.call(request(ROLE)).await.unwrap();
        // renewed long enough ago that its deadline has passed
        gate.renewed(
            Instant::now() - Duration::from_secs(20),
            Duration::from_secs(10),
        );
        for path in [ROLE, LEASE] {
            let refused = gated.call(request(path)).await.unwrap_err();
            assert!(refused.to_string().contains("could not be renewed in time"));
        }
        assert_eq!(*sent.lock().unwrap(), vec![ROLE.to_string()]);
    }

    fn lease_json(rv: u32) -> String {
        serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "teamaccess", "namespace": "ops", "resourceVersion": rv.to_string()},
            "spec": {"holderIdentity": "me", "leaseDurationSeconds": 1},
        })
        .to_string()
    }

    /// A process paused (or starved) in the middle of a renewal: its read of
    /// the lease answers after the renew deadline. The update that would
    /// follow is never sent, and `hold` returns, so the process exits.
    #[tokio::test]
    async fn a_renewal_whose_read_answers_past_the_deadline_sends_no_update() {
        let gate = LeaseGate::default();
        let sent = Arc::new(Mutex::new(Vec::<String>::new()));
        let api_server = {
            let sent = sent.clone();
            tower::service_fn(move |r: axum::http::Request<kube::client::Body>| {
                let n = {
                    let mut sent = sent.lock().unwrap();
                    sent.push(r.method().to_string());
                    sent.len() as u32
                };
                async move {
                    // the third request is the second renewal's read
                    if n == 3 {
                        tokio::time::sleep(Duration::from_millis(700)).await;
                    }
                    Ok::<_, tower::BoxError>(axum::http::Response::new(lease_json(n)))
                }
            })
        };
        let client = Client::new(GateLayer(gate.clone()).layer(api_server), "ops");
        // renew deadline 1 s (2/3 of 1.5 s), a renewal every 0.5 s
        let mut elector = LeaderElector::new(
            client,
            "ops",
            "teamaccess",
            "me",
            Duration::from_millis(1500),
            Duration::from_millis(500),
            gate.clone(),
        );
        assert!(elector.try_acquire_or_renew().await.unwrap());
        tokio::time::timeout(Duration::from_secs(5), elector.hold())
            .await
            .expect("hold returns once the deadline has passed");
        assert_eq!(*sent.lock().unwrap(), ["GET", "PUT", "GET"]);
        assert!(gate.expired(Instant::now()));
    }
}
