//! Leader election on a `coordination.k8s.io/v1` Lease, so several replicas
//! can run and exactly one reconciles.
//!
//! The semantics follow client-go's: the holder renews every `retry`; another
//! replica takes over once `renewTime + leaseDuration` has passed; a holder
//! that cannot renew for `lease_duration` stops leading (the process exits
//! and is restarted, so no two replicas ever reconcile at once); on a clean
//! shutdown the holder releases the lease so a standby takes over at once.
//! Updates use the lease's resourceVersion, so two candidates can never both
//! win the same round.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::error::{Error, Result};

/// Settings of the election.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub lease_duration: Duration,
    /// How often to try to acquire or renew.
    pub retry: Duration,
}

/// A participant in the election.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl LeaderElector {
    /// A participant using `client`.
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) -> Result<()> {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.config.retry).await;
        }
    }

    /// Keeps renewing; returns when leadership is lost (renewal failed for
    /// a whole lease duration, or someone else holds the lease).
    pub async fn hold(&self) -> Error {
        let mut last_renewal = std::time::Instant::now();
        loop {
            tokio::time::sleep(self.config.retry).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = std::time::Instant::now(),
                Ok(false) => {
                    return Error::Lease {
                        lease: self.config.name.clone(),
                        source: kube::Error::Api(
                            kube::core::Status::failure(
                                "another replica holds the lease",
                                "Conflict",
                            )
                            .boxed(),
                        ),
                    };
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the leader lease failed");
                    if last_renewal.elapsed() >= self.config.lease_duration {
                        return e;
                    }
                }
            }
        }
    }

    /// Gives the lease up so a standby replica takes over without waiting.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self.get().await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.replace(&lease).await.map(|_| ())
    }

    /// One round: true when this replica holds the lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = Timestamp::now();
        let duration_secs = i32::try_from(self.config.lease_duration.as_secs())
            .unwrap_or(15)
            .max(1);
        let Some(mut lease) = self.get().await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(self.err(e)),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.config.identity;
        if !mine && !holder.is_empty() && !expired(spec, now) {
            return Ok(false);
        }
        if !mine {
            spec.holder_identity = Some(self.config.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(duration_secs);
        spec.renew_time = Some(MicroTime(now));
        match self.replace(&lease).await {
            Ok(_) => Ok(true),
            // Someone else updated the lease since we read it.
            Err(Error::Lease {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn get(&self) -> Result<Option<Lease>> {
        self.api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.err(e))
    }

    async fn replace(&self, lease: &Lease) -> Result<Lease> {
        self.api
            .replace(&self.config.name, &PostParams::default(), lease)
            .await
            .map_err(|e| self.err(e))
    }

    fn err(&self, source: kube::Error) -> Error {
        Error::Lease {
            lease: self.config.name.clone(),
            source,
        }
    }
}

/// True when the lease was last renewed more than its duration ago.
fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref() else {
        return true;
    };
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    renewed.0.as_second().saturating_add(secs) < now.as_second()
        || (renewed.0.as_second().saturating_add(secs) == now.as_second()
            && renewed.0.subsec_nanosecond() <= now.subsec_nanosecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_expires_after_its_duration() {
        let now = Timestamp::from_second(1_000).unwrap();
        assert!(!expired(&spec(995, 10), now));
        assert!(expired(&spec(989, 10), now));
        assert!(expired(&spec(990, 10), now));
        assert!(expired(&LeaseSpec::default(), now));
    }
}
