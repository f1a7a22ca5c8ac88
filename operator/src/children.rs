//! What the watches say about the children the operator applied, and whether each is still the
//! way the operator left it.
//!
//! The controller watches the Deployments (in full: their status feeds `status.api` and
//! `status.workers`) and, metadata only, the Services, ConfigMaps and Ingresses that carry the
//! operator's `managed-by` label. Each change triggers the owning pipeline's reconcile, which
//! compares the watched object with what its last apply returned:
//!
//! - gone (deleted, or its label removed) -> apply again;
//! - a Deployment whose `metadata.generation` moved past the applied one (someone edited the
//!   spec, e.g. `kubectl scale`) -> apply again; status-only updates leave the generation alone;
//! - any other kind whose resourceVersion is neither the applied one nor the one seen before the
//!   apply (a watch that has not caught up yet) -> apply again.
//!
//! So drift is repaired as soon as the watch event arrives, and an idle pipeline sends nothing:
//! no periodic re-apply of watched children. Kinds that are not watched (PrometheusRule,
//! ServiceMonitor) and kinds whose watch has not listed yet fall back to a slow resync.

use std::sync::Arc;

use futures::FutureExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::Resource;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};

/// Label selector of every watch on children (all children carry it).
pub const CHILD_SELECTOR: &str = "app.kubernetes.io/managed-by=flashcard-operator";

/// The parts of a child's metadata that tell whether it changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Version {
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
}

impl Version {
    pub fn of<K: Resource>(obj: &K) -> Self {
        let m = obj.meta();
        Self {
            resource_version: m.resource_version.clone(),
            generation: m.generation,
        }
    }
}

/// What the watch of one kind reports about one child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The kind is not watched, or its watch has not finished its first list: unknown.
    Unknown,
    /// The watch has listed and the child is not there.
    Absent,
    Present(Version),
}

/// The operator's record of its last apply of one child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Hash of the rendered object.
    pub hash: u64,
    /// The watched version just before the apply (a watch that still shows it is behind).
    pub before: Option<Version>,
    /// The version the apply returned.
    pub after: Version,
}

/// Whether the watched child still is what the operator applied. `Unknown` counts as in sync:
/// the caller's slow resync covers it.
pub fn in_sync(applied: &Applied, seen: &Seen, tracks_generation: bool) -> bool {
    match seen {
        Seen::Unknown => true,
        Seen::Absent => false,
        Seen::Present(v) => {
            if tracks_generation
                && let (Some(now), Some(ours)) = (v.generation, applied.after.generation)
            {
                // Generations only grow; a smaller one is a watch that lags behind our apply.
                return now <= ours;
            }
            *v == applied.after || applied.before.as_ref() == Some(v)
        }
    }
}

/// Read handles of the child watches.
#[derive(Clone)]
pub struct ChildStores {
    pub deployments: Store<Deployment>,
    pub services: Store<PartialObjectMeta<Service>>,
    pub config_maps: Store<PartialObjectMeta<ConfigMap>>,
    pub ingresses: Store<PartialObjectMeta<Ingress>>,
}

/// Write halves, consumed by the watch streams (see `controller`).
pub struct ChildWriters {
    pub deployments: Writer<Deployment>,
    pub services: Writer<PartialObjectMeta<Service>>,
    pub config_maps: Writer<PartialObjectMeta<ConfigMap>>,
    pub ingresses: Writer<PartialObjectMeta<Ingress>>,
}

impl ChildStores {
    /// Empty stores and their writers.
    pub fn new() -> (Self, ChildWriters) {
        let (deployments, dw) = reflector::store();
        let (services, sw) = reflector::store();
        let (config_maps, cw) = reflector::store();
        let (ingresses, iw) = reflector::store();
        (
            Self {
                deployments,
                services,
                config_maps,
                ingresses,
            },
            ChildWriters {
                deployments: dw,
                services: sw,
                config_maps: cw,
                ingresses: iw,
            },
        )
    }

    /// What the watch says about the child `kind`/`name` in `ns`.
    pub fn seen(&self, kind: &str, ns: &str, name: &str) -> Seen {
        fn look<K>(store: &Store<K>, ns: &str, name: &str) -> Seen
        where
            K: Resource<DynamicType = ()> + Clone + 'static,
        {
            // Before the first list completes an absent object means nothing.
            if !matches!(store.wait_until_ready().now_or_never(), Some(Ok(()))) {
                return Seen::Unknown;
            }
            match store.get(&ObjectRef::new(name).within(ns)) {
                Some(obj) => Seen::Present(Version::of(obj.as_ref())),
                None => Seen::Absent,
            }
        }
        match kind {
            "Deployment" => look(&self.deployments, ns, name),
            "Service" => look(&self.services, ns, name),
            "ConfigMap" => look(&self.config_maps, ns, name),
            "Ingress" => look(&self.ingresses, ns, name),
            _ => Seen::Unknown,
        }
    }

    /// The watched Deployment, with its status.
    pub fn deployment(&self, ns: &str, name: &str) -> Option<Arc<Deployment>> {
        self.deployments.get(&ObjectRef::new(name).within(ns))
    }
}

#[cfg(test)]
pub mod test_support {
    use super::*;
    use kube::runtime::watcher::Event;

    /// Stores filled with `objects` (already listed, so "absent" means deleted).
    pub fn stores(
        deployments: Vec<Deployment>,
        services: Vec<PartialObjectMeta<Service>>,
        config_maps: Vec<PartialObjectMeta<ConfigMap>>,
        ingresses: Vec<PartialObjectMeta<Ingress>>,
    ) -> ChildStores {
        fn fill<K>(w: &mut Writer<K>, objs: Vec<K>)
        where
            K: Resource<DynamicType = ()> + Clone + 'static,
        {
            w.apply_watcher_event(&Event::Init);
            for o in objs {
                w.apply_watcher_event(&Event::InitApply(o));
            }
            w.apply_watcher_event(&Event::InitDone);
        }
        let (stores, mut w) = ChildStores::new();
        fill(&mut w.deployments, deployments);
        fill(&mut w.services, services);
        fill(&mut w.config_maps, config_maps);
        fill(&mut w.ingresses, ingresses);
        // Readers keep the state (and readiness) after the writers are gone.
        drop(w);
        stores
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(rv: &str, generation: Option<i64>) -> Version {
        Version {
            resource_version: Some(rv.into()),
            generation,
        }
    }

    fn applied(before: Option<Version>, after: Version) -> Applied {
        Applied {
            hash: 1,
            before,
            after,
        }
    }

    #[test]
    fn deleted_child_is_drift() {
        let a = applied(None, v("5", Some(2)));
        assert!(!in_sync(&a, &Seen::Absent, true));
        assert!(!in_sync(&a, &Seen::Absent, false));
    }

    #[test]
    fn hand_scaled_deployment_is_drift_but_status_updates_are_not() {
        let a = applied(Some(v("4", Some(1))), v("5", Some(2)));
        // The deployment controller wrote status: new resourceVersion, same generation.
        assert!(in_sync(&a, &Seen::Present(v("9", Some(2))), true));
        // `kubectl scale`: the generation moves on.
        assert!(!in_sync(&a, &Seen::Present(v("10", Some(3))), true));
        // A watch that has not caught up with our apply yet.
        assert!(in_sync(&a, &Seen::Present(v("4", Some(1))), true));
    }

    #[test]
    fn other_kinds_compare_resource_versions() {
        let a = applied(Some(v("4", None)), v("5", None));
        assert!(in_sync(&a, &Seen::Present(v("5", None)), false));
        assert!(
            in_sync(&a, &Seen::Present(v("4", None)), false),
            "watch lagging"
        );
        assert!(!in_sync(&a, &Seen::Present(v("6", None)), false), "edited");
    }

    #[test]
    fn unknown_is_left_to_the_resync() {
        let a = applied(None, v("5", None));
        assert!(in_sync(&a, &Seen::Unknown, false));
    }

    #[test]
    fn stores_report_absent_only_after_the_first_list() {
        let (stores, _writers) = ChildStores::new();
        assert_eq!(stores.seen("Service", "study", "x"), Seen::Unknown);
        let filled = test_support::stores(vec![], vec![], vec![], vec![]);
        assert_eq!(filled.seen("Service", "study", "x"), Seen::Absent);
        assert_eq!(filled.seen("PrometheusRule", "study", "x"), Seen::Unknown);
    }
}
