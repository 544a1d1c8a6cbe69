//! Release state in the home cluster: the Release object, its spec (what
//! people ask for) and its status (the engine's state), written with
//! optimistic concurrency so two writers never lose each other's fields.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::Value;

use super::{ClusterHandle, Error, Result};
use crate::spec::release::ReleaseDocument;
use crate::spec::{Release, ReleaseStatus};

/// The Releases of one namespace of the home cluster. It lends the home
/// cluster's client rather than keeping an `Api` (272 bytes, most of it
/// the client): a controller keeps one store in the drive of every release.
#[derive(Clone)]
pub struct ReleaseStore<'a> {
    home: &'a ClusterHandle,
    pub namespace: String,
}

impl<'a> ReleaseStore<'a> {
    pub fn new(home: &'a ClusterHandle, namespace: &str) -> Self {
        ReleaseStore {
            home,
            namespace: namespace.to_string(),
        }
    }

    fn api(&self) -> Api<Release> {
        Api::namespaced(self.home.client.clone(), &self.namespace)
    }

    pub async fn get(&self, name: &str) -> Result<Option<Release>> {
        self.api()
            .get_opt(name)
            .await
            .map_err(Error::api(&self.home.name))
    }

    /// Every Release of the namespace, and what cannot be read of those
    /// that do not decode (`Release name: why`). When one does not, they
    /// are listed again untyped and decoded one by one: the server stores a
    /// spec its CRD's schema allows and cutover refuses, and one such
    /// Release must not hide all the others.
    pub async fn list(&self) -> Result<(Vec<Release>, Vec<String>)> {
        match self.api().list(&Default::default()).await {
            Ok(l) => return Ok((l.items, Vec::new())),
            Err(kube::Error::SerdeError(_)) => {}
            Err(e) => return Err(Error::api(&self.home.name)(e)),
        }
        let list = untyped_releases(self.home, Some(&self.namespace))
            .list(&Default::default())
            .await
            .map_err(Error::api(&self.home.name))?;
        let (mut releases, mut unreadable) = (Vec::new(), Vec::new());
        for obj in list.items {
            let name = obj.metadata.name.clone().unwrap_or_default();
            match decode(obj) {
                Ok(r) => releases.push(r),
                Err(why) => unreadable.push(format!("Release {name}: {why}")),
            }
        }
        Ok((releases, unreadable))
    }

    /// The API of this namespace's Releases, for a watch.
    pub fn watch_api(&self) -> Api<Release> {
        self.api()
    }

    /// Merges `status_patch` into a Release's status (the controller's
    /// conditions); the engine's state is written only by `write_status`.
    pub async fn patch_status(&self, name: &str, status_patch: Value) -> Result<()> {
        let patch = serde_json::json!({ "status": status_patch });
        self.api()
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(|_| ())
            .map_err(Error::api(&self.home.name))
    }

    /// Creates the Release, or brings an existing one's spec to the document's
    /// (keeping its status, so a rerun resumes). Returns the object as stored.
    pub async fn upsert(&self, doc: &ReleaseDocument) -> Result<Release> {
        let name = &doc.metadata.name;
        for _ in 0..5 {
            match self.get(name).await? {
                None => {
                    let mut r = Release::new(name, doc.spec.clone());
                    r.metadata.labels = Some(doc.metadata.labels.clone()).filter(|l| !l.is_empty());
                    r.metadata.annotations =
                        Some(doc.metadata.annotations.clone()).filter(|a| !a.is_empty());
                    match self.api().create(&PostParams::default(), &r).await {
                        Ok(r) => return Ok(r),
                        Err(kube::Error::Api(s)) if s.code == 409 => continue,
                        Err(e) => return Err(Error::api(&self.home.name)(e)),
                    }
                }
                Some(existing) if same_intent(&existing.spec, &doc.spec) => return Ok(existing),
                Some(mut existing) => {
                    // Keep what people set on the live object (pause, promote,
                    // abort); a request about another version is left behind.
                    let mut spec = doc.spec.clone();
                    spec.paused |= existing.spec.paused;
                    if existing.spec.version == doc.spec.version {
                        spec.promote = spec.promote.or(existing.spec.promote.clone());
                        spec.abort = spec.abort.or(existing.spec.abort.clone());
                    }
                    existing.spec = spec;
                    match self
                        .api()
                        .replace(name, &PostParams::default(), &existing)
                        .await
                    {
                        Ok(r) => return Ok(r),
                        Err(kube::Error::Api(s)) if s.code == 409 => continue,
                        Err(e) => return Err(Error::api(&self.home.name)(e)),
                    }
                }
            }
        }
        Err(Error::Conflict(format!(
            "{}: Release {name} kept changing while being updated",
            self.home.name
        )))
    }

    /// Writes `status` over the status of `current`; fails with `Conflict` if
    /// the object changed since `current` was read.
    pub async fn write_status(&self, current: &Release, status: &ReleaseStatus) -> Result<Release> {
        // The status subresource takes only `.status` from the body (and
        // checks its resourceVersion): "PUT requests to the /status
        // subresource take a custom resource object, and ignore changes to
        // anything except the status stanza" (apiextensions/v1
        // `CustomResourceSubresourceStatus`; kube-apiserver's status strategy
        // for custom resources copies the rest from the stored object). So
        // the body is the object's identity and the status, serialised from
        // borrows: no copy of the spec or of the status (mostly its history).
        let body = status_body(current, status);
        self.api()
            .replace_subresource("status", body.metadata.name, &PostParams::default(), &body)
            .await
            .map_err(Error::api(&self.home.name))
    }

    /// Changes what people ask of a release (pause, promote, abort) with a merge patch.
    pub async fn patch_spec(&self, name: &str, spec_patch: Value) -> Result<Release> {
        let patch = serde_json::json!({ "spec": spec_patch });
        match self
            .api()
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 404 => Err(Error::NotFound(format!(
                "{}: no Release {name} in this namespace",
                self.home.name
            ))),
            r => r.map_err(Error::api(&self.home.name)),
        }
    }
}

/// A status write's body: what of the object the status subresource reads.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody<'a> {
    api_version: std::borrow::Cow<'static, str>,
    kind: std::borrow::Cow<'static, str>,
    metadata: StatusMeta<'a>,
    status: &'a ReleaseStatus,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusMeta<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_version: Option<&'a str>,
}

fn status_body<'a>(current: &'a Release, status: &'a ReleaseStatus) -> StatusBody<'a> {
    use kube::Resource;
    StatusBody {
        api_version: Release::api_version(&()),
        kind: Release::kind(&()),
        metadata: StatusMeta {
            name: current.metadata.name.as_deref().unwrap_or_default(),
            namespace: current.metadata.namespace.as_deref(),
            resource_version: current.metadata.resource_version.as_deref(),
        },
        status,
    }
}

/// Whether two specs ask for the same thing, ignoring what people toggle live.
fn same_intent(live: &crate::spec::ReleaseSpec, file: &crate::spec::ReleaseSpec) -> bool {
    let strip = |s: &crate::spec::ReleaseSpec| {
        let mut s = s.clone();
        s.paused = false;
        s.promote = None;
        s.abort = None;
        s
    };
    strip(live) == strip(file)
}

/// Releases as untyped objects, so one malformed Release cannot stop a watch:
/// the API the controller's reconciler watches, in `namespace` or in all.
pub fn untyped_releases(home: &ClusterHandle, namespace: Option<&str>) -> Api<DynamicObject> {
    let resource = release_resource();
    match namespace {
        Some(ns) => Api::namespaced_with(home.client.clone(), ns, &resource),
        None => Api::all_with(home.client.clone(), &resource),
    }
}

/// Decodes a Release read untyped, or says which field does not decode
/// and why (`field `spec.gates[0].interval`: …`).
pub fn decode(obj: DynamicObject) -> std::result::Result<Release, String> {
    let value = serde_json::to_value(obj).map_err(|e| e.to_string())?;
    serde_path_to_error::deserialize(value)
        .map_err(|e| format!("field `{}`: {}", e.path(), e.inner()))
}

/// The Release kind as an untyped resource.
pub fn release_resource() -> ApiResource {
    ApiResource::erase::<Release>(&())
}

/// The longest Event message (`note`) a server accepts once `eventTime` is
/// set: 1 KiB (kube-apiserver's Event validation, `NoteLengthLimit`).
pub const EVENT_NOTE_LIMIT: usize = 1024;
/// The longest `reportingInstance` (and `action`, `reason`): 128 characters.
pub const EVENT_FIELD_LIMIT: usize = 128;

/// `text` cut to at most `limit` bytes on a character boundary, marked with
/// `…` when cut. Events carry this; the full text stays on the object.
pub fn clip(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut cut = limit.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

/// Kubernetes Events about Releases, written to the home cluster as
/// `instance`: one Event created per transition, and nothing kept.
///
/// Not kube's `Recorder`, nor client-go's aggregation it follows: they key
/// an Event by its regarding object, reason and action but not its note, so
/// a release's second `StepStarted` would be patched into the first one's
/// series and show the first one's text (`x2`, "canary started") where the
/// ramp started; and they keep every key for six minutes, one per release
/// and reason (12 MB of a controller driving 1,000 releases). A transition
/// happens once; its Event says what it says.
#[derive(Clone)]
pub struct EventRecorder {
    client: kube::Client,
    instance: String,
}

impl EventRecorder {
    pub fn new(home: &ClusterHandle, instance: &str) -> EventRecorder {
        EventRecorder {
            client: home.client.clone(),
            instance: clip(instance, EVENT_FIELD_LIMIT),
        }
    }

    /// Creates an Event about `regarding` (in its namespace), its note cut to
    /// what a server accepts.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        note: &str,
    ) -> std::result::Result<(), kube::Error> {
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let event = Event {
            metadata: ObjectMeta {
                // `<name>.` and a suffix the server picks: never two alike.
                generate_name: Some(format!(
                    "{}.",
                    regarding.name.as_deref().unwrap_or("cutover")
                )),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(jiff::Timestamp::now())),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            reason: Some(clip(reason, EVENT_FIELD_LIMIT)),
            action: Some("Drive".into()),
            note: Some(clip(note, EVENT_NOTE_LIMIT)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some("cutover".into()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text_on_a_character_boundary() {
        assert_eq!(clip("frozen", 10), "frozen");
        let long = "é".repeat(700);
        let cut = clip(&long, EVENT_NOTE_LIMIT);
        assert!(cut.len() <= EVENT_NOTE_LIMIT, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(long.starts_with(cut.trim_end_matches('…')));
    }

    #[test]
    fn a_status_write_sends_the_identity_and_status_but_not_the_spec() {
        let text = include_str!("../../examples/checkout/release.yaml");
        let doc: ReleaseDocument = crate::spec::Source::new("release.yaml", text)
            .decode()
            .unwrap();
        let mut current = Release::new("checkout", doc.spec);
        current.metadata.namespace = Some("shop".into());
        current.metadata.resource_version = Some("41".into());
        current.metadata.labels = Some([("team".to_string(), "shop".to_string())].into());
        let status = ReleaseStatus {
            message: Some("canary on prod-a".into()),
            ..Default::default()
        };
        let body = serde_json::to_value(status_body(&current, &status)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "apiVersion": "cutover.dev/v1alpha1",
                "kind": "Release",
                "metadata": {"name": "checkout", "namespace": "shop", "resourceVersion": "41"},
                "status": serde_json::to_value(&status).unwrap(),
            })
        );
    }
}
