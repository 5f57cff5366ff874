//! Object I/O on one cluster: server-side apply of any kind (resolved through discovery, cached
//! per cluster), deletion that treats "already gone" as success, and listing by label.

use std::collections::HashMap;
use std::sync::Arc;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::core::{GroupVersionKind, TypeMeta};
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::Client;
use serde_json::Value;
use tokio::sync::RwLock;

use crate::kube::fleet::describe_kube_error;

/// The field manager fleetspawn applies with.
pub const FIELD_MANAGER: &str = "fleetspawn";

/// An object I/O failure, naming the object and carrying the API server's message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{object}: {message}")]
pub struct ObjectError {
    /// `Kind namespace/name`.
    pub object: String,
    pub message: String,
    /// The HTTP status the API server answered, if it answered.
    pub code: Option<u16>,
}

impl ObjectError {
    fn of(object: String, e: &kube::Error) -> ObjectError {
        let code = match e {
            kube::Error::Api(s) => Some(s.code),
            _ => None,
        };
        ObjectError { object, message: describe_kube_error(e), code }
    }
}

/// Identifies one object of a bundle (what an inventory lists).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ObjectRef {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

impl ObjectRef {
    /// The reference of a full manifest.
    pub fn of(manifest: &Value) -> Result<ObjectRef, ObjectError> {
        let text = |ptr: &str| manifest.pointer(ptr).and_then(Value::as_str).map(str::to_string);
        let bad = |what: &str| ObjectError { object: "object".into(), message: format!("manifest has no {what}"), code: None };
        Ok(ObjectRef {
            api_version: text("/apiVersion").ok_or_else(|| bad("apiVersion"))?,
            kind: text("/kind").ok_or_else(|| bad("kind"))?,
            namespace: text("/metadata/namespace"),
            name: text("/metadata/name").ok_or_else(|| bad("metadata.name"))?,
        })
    }

    fn error(&self, e: &kube::Error) -> ObjectError {
        ObjectError::of(self.to_string(), e)
    }
}

/// An object found by [`ClusterApi::list_refs`].
#[derive(Clone, Debug)]
pub struct Listed {
    pub r: ObjectRef,
    pub uid: Option<String>,
    pub created: Option<k8s_openapi::jiff::Timestamp>,
    /// Its `fleetspawn.io/instance` label.
    pub instance: Option<String>,
    /// Its `fleetspawn.io/owner` label (the UID of the `UserServer` it claims).
    pub owner: Option<String>,
    /// Its `fleetspawn.io/home` label (the installation it claims).
    pub home: Option<String>,
}

/// Discovery results per (apiVersion, kind).
type KindCache = HashMap<(String, String), (ApiResource, ApiCapabilities)>;

/// One cluster's client and its discovery cache.
#[derive(Clone)]
pub struct ClusterApi {
    client: Client,
    kinds: Arc<RwLock<KindCache>>,
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl ClusterApi {
    pub fn new(client: Client) -> Self {
        ClusterApi { client, kinds: Arc::default() }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Resolves a kind through discovery, once per cluster.
    async fn resolve(&self, r: &ObjectRef) -> Result<(ApiResource, ApiCapabilities), ObjectError> {
        let key = (r.api_version.clone(), r.kind.clone());
        if let Some(found) = self.kinds.read().await.get(&key) {
            return Ok(found.clone());
        }
        let tm = TypeMeta { api_version: r.api_version.clone(), kind: r.kind.clone() };
        let gvk = GroupVersionKind::try_from(&tm).map_err(|e| ObjectError { object: r.to_string(), message: format!("bad apiVersion: {e}"), code: None })?;
        let found = kube::discovery::pinned_kind(&self.client, &gvk).await.map_err(|e| r.error(&e))?;
        self.kinds.write().await.insert(key, found.clone());
        Ok(found)
    }

    async fn api(&self, r: &ObjectRef) -> Result<Api<DynamicObject>, ObjectError> {
        let (resource, caps) = self.resolve(r).await?;
        Ok(match (caps.scope, &r.namespace) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &resource),
            (Scope::Namespaced, None) => Api::default_namespaced_with(self.client.clone(), &resource),
            (Scope::Cluster, _) => Api::all_with(self.client.clone(), &resource),
        })
    }

    /// Server-side applies a full manifest with fleetspawn's field manager.
    pub async fn apply(&self, manifest: &Value) -> Result<DynamicObject, ObjectError> {
        let r = ObjectRef::of(manifest)?;
        let api = self.api(&r).await?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(&r.name, &params, &Patch::Apply(manifest)).await.map_err(|e| r.error(&e))
    }

    /// Whether the object exists.
    pub async fn exists(&self, r: &ObjectRef) -> Result<bool, ObjectError> {
        let api = self.api(r).await?;
        api.get_metadata_opt(&r.name).await.map(|o| o.is_some()).map_err(|e| r.error(&e))
    }

    /// Deletes the object; one already gone counts as deleted. Returns whether it existed.
    /// With `uid`, only that very object: one deleted and created again under the same name
    /// (a new spawn of the same server) stays, and the API server answers 409.
    pub async fn delete(&self, r: &ObjectRef, uid: Option<&str>) -> Result<bool, ObjectError> {
        let api = self.api(r).await?;
        let preconditions = uid.map(|uid| Preconditions { uid: Some(uid.to_string()), resource_version: None });
        let params = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), preconditions, ..Default::default() };
        match api.delete(&r.name, &params).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(r.error(&e)),
        }
    }

    /// The objects of a kind matching a label selector, across namespaces (metadata only).
    pub async fn list_refs(&self, api_version: &str, kind: &str, selector: &str) -> Result<Vec<Listed>, ObjectError> {
        let probe = ObjectRef { api_version: api_version.into(), kind: kind.into(), namespace: None, name: String::new() };
        let (resource, _) = self.resolve(&probe).await?;
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
        let list = api.list_metadata(&ListParams::default().labels(selector)).await.map_err(|e| probe.error(&e))?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|m| {
                let meta = m.metadata;
                let created = meta.creation_timestamp.as_ref().map(|t| t.0);
                let label = |name: &str| meta.labels.as_ref().and_then(|l| l.get(name)).cloned();
                let (instance, owner, home) =
                    (label(fleetspawn_core::labels::INSTANCE), label(fleetspawn_core::labels::OWNER), label(fleetspawn_core::labels::HOME));
                let r = ObjectRef { api_version: api_version.into(), kind: kind.into(), namespace: meta.namespace, name: meta.name? };
                Some(Listed { r, uid: meta.uid, created, instance, owner, home })
            })
            .collect())
    }
}

/// What a SelfSubjectAccessReview answered for one right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// Refused; the authorizer's reason, if it gave one.
    Denied(String),
    /// The kind could not be resolved through discovery (not served: a missing CRD).
    Unresolved(String),
}

impl ClusterApi {
    /// Asks the API server whether this context's credentials may do `right`. Returns the
    /// resource as RBAC names it (`ingresses.networking.k8s.io`, `userservers/status`) with
    /// the answer; an error only when the review itself could not be made.
    pub async fn review(&self, right: &fleetspawn_core::rights::Right) -> Result<(String, Access), ObjectError> {
        use fleetspawn_core::rights::Scope as RightScope;
        use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
        let probe = ObjectRef { api_version: right.api_version.clone(), kind: right.kind.clone(), namespace: None, name: String::new() };
        let plural = match &right.resource {
            Some(known) => known.clone(),
            None => match self.resolve(&probe).await {
                Ok((resource, _)) => resource.plural,
                Err(e) => return Ok((format!("{} ({})", right.kind, right.api_version), Access::Unresolved(e.message))),
            },
        };
        let group = right.group();
        let mut shown = if group.is_empty() { plural.clone() } else { format!("{plural}.{group}") };
        if let Some(sub) = right.subresource {
            shown = format!("{shown}/{sub}");
        }
        let namespace = match &right.scope {
            RightScope::Namespace(ns) => Some(ns.clone()),
            RightScope::AllNamespaces | RightScope::Cluster => None,
        };
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(group.to_string()),
                    resource: Some(plural),
                    subresource: right.subresource.map(str::to_string),
                    name: right.name.clone(),
                    namespace,
                    verb: Some(right.verb.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SelfSubjectAccessReview> = Api::all(self.client.clone());
        let answer = api.create(&kube::api::PostParams::default(), &review).await.map_err(|e| ObjectError::of("SelfSubjectAccessReview".into(), &e))?;
        let status = answer.status.unwrap_or_default();
        let access = if status.allowed { Access::Allowed } else { Access::Denied(status.reason.unwrap_or_default()) };
        Ok((shown, access))
    }
}
