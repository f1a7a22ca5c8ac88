//! Kubernetes Events (`events.k8s.io/v1`) that keep their messages.
//!
//! kube-runtime's `Recorder` folds Events into a series by type, reason, action and the regarding
//! object, but not by note: three different scale changes under one reason became one Event
//! (count 3) that still read "workers 0 -> 13". This recorder puts the note into the key, so
//!
//! - every distinct change is its own Event with its own note;
//! - the same change repeated within [`SERIES_WINDOW`] (the window client-go and kube use) is one
//!   Event whose `series.count` grows, so a flapping condition cannot flood the namespace.
//!
//! Notes are cut to the API's 1 kB limit. Failures are returned to the caller, which logs them:
//! an Event is never worth failing a reconcile.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
pub use kube::runtime::events::EventType;
use serde_json::json;
use tokio::sync::Mutex;

/// Repeats of one change within this window extend its series instead of creating an Event.
pub const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);
/// The API server's limit on `note`.
pub const MAX_NOTE_BYTES: usize = 1024;

/// One Event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub type_: EventType,
    /// CamelCase, at most 128 characters; says what happened (`ScaledUp`, `KillSwitchOnManual`).
    pub reason: String,
    /// CamelCase, what the operator did or observed (`Scale`, `KillSwitch`).
    pub action: String,
    /// The human-readable message.
    pub note: String,
}

impl Event {
    pub fn normal(reason: &str, action: &str, note: impl Into<String>) -> Self {
        Self::new(EventType::Normal, reason, action, note)
    }

    pub fn warning(reason: &str, action: &str, note: impl Into<String>) -> Self {
        Self::new(EventType::Warning, reason, action, note)
    }

    fn new(type_: EventType, reason: &str, action: &str, note: impl Into<String>) -> Self {
        Self {
            type_,
            reason: reason.into(),
            action: action.into(),
            note: truncate(note.into(), MAX_NOTE_BYTES),
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    regarding_uid: Option<String>,
    regarding_namespace: Option<String>,
    regarding_name: Option<String>,
    type_: EventType,
    reason: String,
    action: String,
    note: String,
}

#[derive(Debug, Clone)]
struct Sent {
    name: String,
    namespace: String,
    count: i32,
    last: Timestamp,
}

/// Publishes Events as one reporting controller instance.
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    sent: Mutex<HashMap<Key, Sent>>,
}

impl Recorder {
    /// `instance` is the pod name (several operator replicas report apart).
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        Self {
            client,
            controller: controller.into(),
            instance: instance.unwrap_or_else(|| controller.into()),
            sent: Mutex::new(HashMap::new()),
        }
    }

    /// Creates the Event, or extends its series if the same change was published within
    /// [`SERIES_WINDOW`].
    pub async fn publish(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let window = jiff::SignedDuration::try_from(SERIES_WINDOW).unwrap_or_default();
        let key = Key {
            regarding_uid: regarding.uid.clone(),
            regarding_namespace: regarding.namespace.clone(),
            regarding_name: regarding.name.clone(),
            type_: ev.type_,
            reason: ev.reason.clone(),
            action: ev.action.clone(),
            note: ev.note.clone(),
        };
        let earlier = {
            let mut sent = self.sent.lock().await;
            sent.retain(|_, s| s.last + window > now);
            sent.get(&key).cloned()
        };
        let sent = match earlier {
            Some(mut s) => {
                s.count += 1;
                s.last = now;
                let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &s.namespace);
                let patch =
                    json!({"series": {"count": s.count, "lastObservedTime": MicroTime(now)}});
                api.patch(&s.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                s
            }
            None => {
                let namespace = regarding
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                let name = format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(&self.controller),
                    now.as_nanosecond()
                );
                let event = K8sEvent {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    action: Some(ev.action.clone()),
                    reason: Some(ev.reason.clone()),
                    note: Some(ev.note.clone()),
                    type_: Some(
                        match ev.type_ {
                            EventType::Normal => "Normal",
                            EventType::Warning => "Warning",
                        }
                        .into(),
                    ),
                    event_time: Some(MicroTime(now)),
                    regarding: Some(regarding.clone()),
                    reporting_controller: Some(self.controller.clone()),
                    reporting_instance: Some(self.instance.clone()),
                    ..K8sEvent::default()
                };
                let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
                api.create(&PostParams::default(), &event).await?;
                Sent {
                    name,
                    namespace,
                    count: 1,
                    last: now,
                }
            }
        };
        self.sent.lock().await.insert(key, sent);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{expect, expect_prefix, serve};
    use crate::render::test_support::minimal;
    use http::Method;
    use kube::Resource;

    const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/study/events";

    #[test]
    fn notes_are_cut_at_a_char_boundary() {
        let long = "é".repeat(600);
        let ev = Event::normal("ScaledUp", "Scale", long);
        assert!(ev.note.len() <= MAX_NOTE_BYTES);
        assert!(ev.note.chars().all(|c| c == 'é'));
    }

    /// Two different changes under one reason are two Events with their own notes; the same
    /// change again is a series on the first.
    #[tokio::test]
    async fn each_distinct_change_keeps_its_note_and_repeats_become_a_series() {
        let (service, handle) = tower_test::mock::pair();
        let client = Client::new(service, "default");
        let p = minimal();
        let (server, _) = serve(
            handle,
            &p,
            vec![
                expect(Method::POST, EVENTS),
                expect(Method::POST, EVENTS),
                expect_prefix(Method::PATCH, &format!("{EVENTS}/biology.")),
            ],
        );
        let rec = Recorder::new(client, "flashcard-operator", Some("pod-a".into()));
        let regarding = p.object_ref(&());
        let up1 = Event::normal("ScaledUp", "Scale", "workers 0 -> 13");
        let up2 = Event::normal("ScaledUp", "Scale", "workers 13 -> 20");
        rec.publish(&up1, &regarding).await.unwrap();
        rec.publish(&up2, &regarding).await.unwrap();
        rec.publish(&up1, &regarding).await.unwrap();
        let seen = server.await.unwrap();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0].body["note"], "workers 0 -> 13");
        assert_eq!(seen[1].body["note"], "workers 13 -> 20");
        assert_eq!(seen[0].body["reportingInstance"], "pod-a");
        assert_eq!(seen[0].body["regarding"]["name"], "biology");
        // The repeat patches the first Event's series.
        let first = seen[0].body["metadata"]["name"].as_str().unwrap();
        assert!(
            seen[2].uri.contains(&format!("/events/{first}")),
            "{}",
            seen[2].uri
        );
        assert_eq!(seen[2].body["series"]["count"], 2);
    }
}
