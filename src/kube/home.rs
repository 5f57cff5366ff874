//! The home cluster: where the `UserServer` records live (one namespace of one context). This
//! module says to its API server only what the records need: install the CRD, make sure the
//! namespace exists, create, patch and delete records and their env Secrets. Errors keep the
//! client's error as their source.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt as _, Resource as _};
use serde_json::{json, Value};

use super::fleet::describe_kube_error;
use super::userserver::{UserServer, UserServerStatus};

/// Field manager of fleetspawn's writes to the home cluster.
const FIELD_MANAGER: &str = "fleetspawn";

/// A request to the home cluster failed.
#[derive(Debug, thiserror::Error)]
#[error("home cluster: {action}: {message}")]
pub struct HomeError {
    pub action: String,
    pub message: String,
    /// The HTTP status of an API error (409: someone else changed the record first).
    pub code: Option<u16>,
    #[source]
    pub source: Option<kube::Error>,
}

impl HomeError {
    pub fn from_kube(action: impl Into<String>, e: kube::Error) -> HomeError {
        let code = match &e {
            kube::Error::Api(s) => Some(s.code),
            _ => None,
        };
        HomeError { action: action.into(), message: describe_kube_error(&e), code, source: Some(e) }
    }

    /// Another writer changed the record first (optimistic concurrency).
    pub fn is_conflict(&self) -> bool {
        self.code == Some(409)
    }

    pub fn is_not_found(&self) -> bool {
        self.code == Some(404)
    }
}

/// The records' namespace of the home cluster.
#[derive(Clone)]
pub struct Home {
    client: Client,
    namespace: String,
    servers: Api<UserServer>,
    secrets: Api<Secret>,
}

impl Home {
    pub fn new(client: Client, namespace: &str) -> Home {
        Home {
            servers: Api::namespaced(client.clone(), namespace),
            secrets: Api::namespaced(client.clone(), namespace),
            namespace: namespace.to_string(),
            client,
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn servers(&self) -> &Api<UserServer> {
        &self.servers
    }

    /// Installs or upgrades the CRD (server-side apply), then waits for it to be served.
    pub async fn install_crd(&self) -> Result<(), HomeError> {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let crd = UserServer::crd();
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&crd))
            .await
            .map_err(|e| HomeError::from_kube("installing the UserServer CRD", e))?;
        let established = kube::runtime::wait::await_condition(crds, &name, kube::runtime::wait::conditions::is_crd_established());
        match tokio::time::timeout(std::time::Duration::from_secs(30), established).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(HomeError { action: "waiting for the UserServer CRD".into(), message: e.to_string(), code: None, source: None }),
            Err(_) => {
                Err(HomeError { action: "waiting for the UserServer CRD".into(), message: "not established within 30s".into(), code: None, source: None })
            }
        }
    }

    /// Creates the namespace if it does not exist (an existing one is left as it is).
    pub async fn ensure_namespace(&self) -> Result<(), HomeError> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let action = format!("reading namespace {}", self.namespace);
        if namespaces.get_metadata_opt(&self.namespace).await.map_err(|e| HomeError::from_kube(action, e))?.is_some() {
            return Ok(());
        }
        let ns = Namespace { metadata: ObjectMeta { name: Some(self.namespace.clone()), ..Default::default() }, ..Default::default() };
        match namespaces.create(&PostParams::default(), &ns).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(HomeError::from_kube(format!("creating namespace {}", self.namespace), e)),
        }
    }

    /// Creates a record; 409 if one of that name exists.
    pub async fn create(&self, us: &UserServer) -> Result<UserServer, HomeError> {
        self.servers
            .create(&PostParams::default(), us)
            .await
            .map_err(|e| HomeError::from_kube(format!("creating UserServer {}", us.metadata.name.as_deref().unwrap_or("")), e))
    }

    /// Replaces a record's spec (and annotations), failing with 409 if it changed since `us`
    /// was read.
    pub async fn replace(&self, us: &UserServer) -> Result<UserServer, HomeError> {
        let name = us.metadata.name.clone().unwrap_or_default();
        self.servers.replace(&name, &PostParams::default(), us).await.map_err(|e| HomeError::from_kube(format!("updating UserServer {name}"), e))
    }

    /// Merge-patches a record's metadata or spec.
    pub async fn patch(&self, name: &str, patch: &Value) -> Result<UserServer, HomeError> {
        self.servers
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|e| HomeError::from_kube(format!("updating UserServer {name}"), e))
    }

    /// Writes a record's whole status. With `resource_version`, only if the record is still
    /// at it (409 otherwise: the caller decided on a stale view).
    pub async fn write_status(&self, name: &str, status: &UserServerStatus, resource_version: Option<&str>) -> Result<UserServer, HomeError> {
        let mut patch = status.as_merge_patch();
        if let Some(rv) = resource_version {
            patch["metadata"] = json!({ "resourceVersion": rv });
        }
        self.servers
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| HomeError::from_kube(format!("writing the status of UserServer {name}"), e))
    }

    /// Merge-patches part of a record's status (e.g. `{"lastActivity": ...}`), leaving the rest.
    pub async fn patch_status(&self, name: &str, status: &Value) -> Result<UserServer, HomeError> {
        let patch = json!({ "status": status });
        self.servers
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| HomeError::from_kube(format!("writing the status of UserServer {name}"), e))
    }

    /// Deletes a record (its finalizer then removes what runs).
    pub async fn delete(&self, name: &str) -> Result<(), HomeError> {
        match self.servers.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(HomeError::from_kube(format!("deleting UserServer {name}"), e)),
        }
    }

    /// Writes the env Secret of a record (owned by it, so it goes with it).
    pub async fn write_env_secret(&self, owner: &UserServer, name: &str, env: &BTreeMap<String, String>) -> Result<(), HomeError> {
        let owner_ref = OwnerReference {
            api_version: UserServer::api_version(&()).to_string(),
            kind: UserServer::kind(&()).to_string(),
            name: owner.metadata.name.clone().unwrap_or_default(),
            uid: owner.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: None,
        };
        let secret = Secret {
            metadata: ObjectMeta { name: Some(name.to_string()), owner_references: Some(vec![owner_ref]), ..Default::default() },
            string_data: Some(env.clone()),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        let mut manifest = serde_json::to_value(&secret).unwrap_or_default();
        manifest["apiVersion"] = json!("v1");
        manifest["kind"] = json!("Secret");
        self.secrets
            .patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&manifest))
            .await
            .map(drop)
            .map_err(|e| HomeError::from_kube(format!("writing Secret {name}"), e))
    }

    /// The env a record's Secret holds.
    pub async fn read_env_secret(&self, name: &str) -> Result<BTreeMap<String, String>, HomeError> {
        let secret = self.secrets.get(name).await.map_err(|e| HomeError::from_kube(format!("reading Secret {name}"), e))?;
        Ok(secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned())).collect())
    }
}
