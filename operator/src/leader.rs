//! Leader election with a `coordination.k8s.io/v1` Lease: one replica reconciles (the leader),
//! every replica serves the admission webhook. A leader that cannot renew its lease within the
//! lease's duration stops (its process exits and is restarted), so two replicas never write at
//! once for longer than one renew interval.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Where the lease is and how long it lasts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LeaderElection {
    /// The Lease's namespace (the operator's own).
    pub namespace: String,
    /// The Lease's name.
    #[serde(default = "default_name")]
    pub name: String,
    /// How long a lease holds without renewal.
    #[serde(default = "default_lease_duration")]
    pub lease_duration: eventplug_contract::Duration,
    /// How often the leader renews it (well under the duration).
    #[serde(default = "default_renew_interval")]
    pub renew_interval: eventplug_contract::Duration,
}

fn default_name() -> String {
    "eventplug-operator".into()
}

fn default_lease_duration() -> eventplug_contract::Duration {
    eventplug_contract::Duration::from_secs(15)
}

fn default_renew_interval() -> eventplug_contract::Duration {
    eventplug_contract::Duration::from_secs(5)
}

impl LeaderElection {
    /// Checks the durations.
    pub fn check(&self) -> Result<(), String> {
        if self.renew_interval.get().is_zero()
            || self.renew_interval.get() >= self.lease_duration.get()
        {
            return Err(format!(
                "leaderElection.renewInterval ({}) must be more than 0 and less than leaseDuration ({})",
                self.renew_interval, self.lease_duration
            ));
        }
        Ok(())
    }
}

/// A replica taking part in the election.
pub struct Candidate {
    api: Api<Lease>,
    settings: LeaderElection,
    identity: String,
}

/// What the lease says now, for one decision.
enum Holder {
    /// Nobody holds it (no Lease yet).
    Nobody,
    /// This replica holds it.
    Us(Lease),
    /// Another replica holds it, until it expires.
    Other { lease: Lease, expired: bool },
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

impl Candidate {
    /// A candidate named `identity` (the pod's name, say).
    pub fn new(client: Client, settings: LeaderElection, identity: String) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            identity,
        }
    }

    /// This replica's name in the lease.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    async fn holder(&self) -> Result<Holder, kube::Error> {
        let Some(lease) = self.api.get_opt(&self.settings.name).await? else {
            return Ok(Holder::Nobody);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() == Some(self.identity.as_str()) {
            return Ok(Holder::Us(lease));
        }
        let duration = spec
            .lease_duration_seconds
            .map_or(self.settings.lease_duration.get(), |s| {
                Duration::from_secs(u64::try_from(s).unwrap_or(0))
            });
        let expired = match (&spec.holder_identity, &spec.renew_time) {
            (None, _) | (_, None) => true,
            (Some(_), Some(renewed)) => {
                let age = jiff::Timestamp::now().duration_since(renewed.0);
                age.as_secs_f64() > duration.as_secs_f64()
            }
        };
        Ok(Holder::Other { lease, expired })
    }

    fn spec(&self, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: i32::try_from(self.settings.lease_duration.get().as_secs())
                .ok(),
            acquire_time: Some(acquired.unwrap_or_else(now)),
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One try to hold the lease: `true` when this replica leads now. Conflicts (another replica
    /// wrote first) are a `false`, not an error.
    async fn try_lead(&self) -> Result<bool, kube::Error> {
        let written = match self.holder().await? {
            Holder::Nobody => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.settings.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(0, None)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Holder::Us(mut lease) => {
                let old = lease.spec.clone().unwrap_or_default();
                lease.spec = Some(self.spec(old.lease_transitions.unwrap_or(0), old.acquire_time));
                self.api
                    .replace(&self.settings.name, &PostParams::default(), &lease)
                    .await
            }
            Holder::Other { expired: false, .. } => return Ok(false),
            Holder::Other {
                mut lease,
                expired: true,
            } => {
                let transitions = lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.lease_transitions)
                    .unwrap_or(0)
                    .saturating_add(1);
                lease.spec = Some(self.spec(transitions, None));
                self.api
                    .replace(&self.settings.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica leads.
    pub async fn acquire(&self) {
        loop {
            match self.try_lead().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "leader election: cannot read or write the lease")
                }
            }
            tokio::time::sleep(self.settings.renew_interval.get()).await;
        }
    }

    /// Renews the lease while this replica leads; returns (with the reason) once it cannot be
    /// sure it still does.
    pub async fn hold(&self) -> String {
        let mut renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.settings.renew_interval.get()).await;
            match self.try_lead().await {
                Ok(true) => renewed = tokio::time::Instant::now(),
                Ok(false) => return "another replica holds the lease".into(),
                Err(error) => {
                    if renewed.elapsed() >= self.settings.lease_duration.get() {
                        return format!(
                            "the lease could not be renewed for {}: {error}",
                            self.settings.lease_duration
                        );
                    }
                    tracing::warn!(%error, "leader election: renewing the lease failed; trying again");
                }
            }
        }
    }
}
