//! The bundle: every Kubernetes object a spawn applies, computed from a
//! profile, a user, a server name and the user's options, without I/O.
//!
//! Objects come from minijinja templates shipped in the binary
//! (`src/templates/*.yaml.j2`, overridable by files of the same name in the
//! configured `templates_dir`) and from the profile's `objects`. Then the
//! profile's `patches` are applied (strategic merge), and finally the
//! fleetspawn labels and annotations are forced onto every object.
//!
//! **User values are data.** Templates receive them as variables, never as
//! template source, and every `{{ ... }}` in a YAML template (names ending in
//! `.yaml` or `.yaml.j2`) is written as JSON, which YAML reads back as the
//! same scalar: a username such as `{{ 7*7 }}` or `a\nkind: ClusterRole` comes
//! out literally. Compose strings inside the expression
//! (`{{ name ~ "-dask" }}`), not around it. Plain-string templates (the
//! namespace, environment values, patch target names) are not escaped: their
//! output is used as a value, and a namespace must be a DNS-1123 label.

use std::collections::BTreeMap;
use std::fmt;

use minijinja::value::{Serde, Value as Jinja};
use minijinja::{context, AutoEscape, Environment, UndefinedBehavior};
use serde_json::{json, Map, Value};

use crate::diagnostic::Diagnostics;
use crate::labels;
use crate::merge_patch::strategic_merge;
use crate::naming::{self, is_dns1123_label, InstanceKey};
use crate::profiles::spec::{AppKind, NetworkPolicySpec, PatchSpec, ProbeType, SecuritySpec};
use crate::profiles::{self, Blame, OptionError, Profile, ProfileSet, ProfileSpec, ResolvedOptions, Route};
use crate::spans::{KeyPath, Seg};

/// Whether `name` is one of the built-in templates (the names `templates_dir` may override).
pub fn is_template_name(name: &str) -> bool {
    BUILTIN_TEMPLATES.iter().any(|(n, _)| *n == name)
}

/// The built-in templates' names, in rendering order.
pub fn template_names() -> Vec<&'static str> {
    BUILTIN_TEMPLATES.iter().map(|(n, _)| *n).collect()
}

/// Port the server listens on unless the profile sets `port`.
pub const NOTEBOOK_PORT: u16 = 8888;

/// The built-in templates, in the order they are rendered.
const BUILTIN_TEMPLATES: &[(&str, &str)] = &[
    ("namespace.yaml.j2", include_str!("templates/namespace.yaml.j2")),
    ("serviceaccount.yaml.j2", include_str!("templates/serviceaccount.yaml.j2")),
    ("secret.yaml.j2", include_str!("templates/secret.yaml.j2")),
    ("pvc.yaml.j2", include_str!("templates/pvc.yaml.j2")),
    ("pod.yaml.j2", include_str!("templates/pod.yaml.j2")),
    ("service.yaml.j2", include_str!("templates/service.yaml.j2")),
    ("ingress.yaml.j2", include_str!("templates/ingress.yaml.j2")),
    ("httproute.yaml.j2", include_str!("templates/httproute.yaml.j2")),
    ("networkpolicy.yaml.j2", include_str!("templates/networkpolicy.yaml.j2")),
];

/// Kinds fleetspawn's own templates create, swept by stop and garbage collection.
pub const BUILTIN_KINDS: &[(&str, &str)] = &[
    ("v1", "Pod"),
    ("v1", "Service"),
    ("networking.k8s.io/v1", "Ingress"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("v1", "Secret"),
    ("v1", "ServiceAccount"),
    ("v1", "ConfigMap"),
    ("v1", "PersistentVolumeClaim"),
];

/// Kinds that live outside namespaces (no `metadata.namespace` is added).
const CLUSTER_SCOPED_KINDS: &[&str] = &[
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "RuntimeClass",
    "CustomResourceDefinition",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// What a spawn is asked for.
#[derive(Debug, Clone, Copy)]
pub struct SpawnInput<'a> {
    /// The raw username.
    pub user: &'a str,
    /// The raw server name (`""` for the default server).
    pub server: &'a str,
    /// The profile.
    pub profile: &'a Profile,
    /// The user's option values.
    pub options: &'a BTreeMap<String, String>,
    /// The kubeconfig context chosen (one of the profile's).
    pub context: &'a str,
    /// Secret environment variables (e.g. `JUPYTERHUB_API_TOKEN`): they go
    /// only into the Secret, which the pod reads through `envFrom`.
    pub secret_env: &'a BTreeMap<String, String>,
    /// URL path prefix override (e.g. from the hub); default
    /// [`naming::url_prefix`].
    pub url_prefix: Option<&'a str>,
    /// The hub's per-spawn parameters, checked against the profile's declarations
    /// ([`crate::profiles::hub_parameters::resolve`]); templates see them as `hub_parameters`.
    pub hub_parameters: &'a serde_json::Map<String, Value>,
    /// The `UserServer` the objects belong to (`None` only for previews, e.g. `fleetspawn render`).
    pub owner: Option<&'a Owner>,
}

/// Who owns a spawn's objects: labelled on every one of them ([`labels::OWNER`], [`labels::HOME`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The `UserServer`'s UID.
    pub uid: String,
    /// The installation's home namespace.
    pub home: String,
}

/// Order in which objects are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// The namespace (only with `create_namespace`).
    Namespace,
    /// ServiceAccount, Secret, PVC and the profile's extra objects.
    Prerequisites,
    /// The Pod.
    Workload,
    /// Service and Ingress (or HTTPRoute).
    Exposure,
}

impl Tier {
    fn of(kind: &str) -> Self {
        match kind {
            "Namespace" => Tier::Namespace,
            "Pod" => Tier::Workload,
            "Service" | "Ingress" | "HTTPRoute" => Tier::Exposure,
            _ => Tier::Prerequisites,
        }
    }
}

/// One object of a bundle.
#[derive(Clone, PartialEq)]
pub struct BundleObject {
    /// When it is applied.
    pub tier: Tier,
    /// The full manifest.
    pub object: Value,
}

impl BundleObject {
    /// `kind` of the manifest.
    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }

    /// `metadata.name` of the manifest.
    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }
}

/// Debug output never shows a Secret's values.
impl fmt::Debug for BundleObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.object.clone();
        if self.kind() == "Secret" {
            for field in ["data", "stringData"] {
                if let Some(Value::Object(map)) = shown.get_mut(field) {
                    map.values_mut().for_each(|v| *v = json!("<redacted>"));
                }
            }
        }
        f.debug_struct("BundleObject").field("tier", &self.tier).field("object", &shown).finish()
    }
}

/// Everything a spawn applies.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The instance key.
    pub key: InstanceKey,
    /// The namespace of the namespaced objects.
    pub namespace: String,
    /// The server's public URL: the context's ingress URL + the prefix.
    pub url: String,
    /// The objects, sorted by (tier, kind, name).
    pub objects: Vec<BundleObject>,
}

/// Where a template comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateRef {
    /// A built-in (or operator-overridden) template file.
    Builtin(String),
    /// A template in the profile, at this key path.
    Profile(KeyPath),
}

impl fmt::Display for TemplateRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateRef::Builtin(name) => f.write_str(name),
            TemplateRef::Profile(path) => write!(f, "{path}"),
        }
    }
}

/// Why a bundle cannot be computed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BundleError {
    /// An operator template overrides no built-in template (a misspelt name).
    #[error("{name}: not a template fleetspawn knows (expected one of: {known})")]
    UnknownTemplate {
        /// The template's (file) name.
        name: String,
        /// The built-in template names.
        known: String,
    },
    /// A template does not parse or fails to render.
    #[error("template {template}: {message}")]
    Template {
        /// The template.
        template: TemplateRef,
        /// minijinja's error.
        message: String,
    },
    /// A rendered template is not one YAML mapping.
    #[error("template {template}: rendered output is not a YAML object: {message}")]
    Yaml {
        /// The template.
        template: TemplateRef,
        /// What is wrong.
        message: String,
    },
    /// A rendered object is malformed or clashes with another.
    #[error("template {template}: object {object}: {message}")]
    Object {
        /// The template it came from (or the patch that changed it).
        template: TemplateRef,
        /// `Kind/name` of the object.
        object: String,
        /// What is wrong.
        message: String,
    },
    /// A patch cannot be applied.
    #[error("{template}: cannot patch {object}: {message}")]
    Patch {
        /// The patch.
        template: TemplateRef,
        /// `Kind/name` of the object.
        object: String,
        /// The merge error.
        message: String,
    },
    /// The rendered namespace is not a DNS-1123 label.
    #[error("namespace: {namespace:?} is not a DNS-1123 label")]
    Namespace {
        /// The rendered namespace.
        namespace: String,
    },
    /// The user's options cannot be applied.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// The context is not one of the profile's.
    #[error("context {context:?} is not one of profile {profile:?}'s contexts ({contexts})")]
    UnknownContext {
        /// The context asked for.
        context: String,
        /// The profile.
        profile: String,
        /// Its contexts.
        contexts: String,
    },
    /// The URL prefix override is not an absolute path.
    #[error("url prefix {0:?} must start with '/'")]
    UrlPrefix(String),
}

impl BundleError {
    /// The profile key path to blame, when the error comes from a profile
    /// template.
    pub fn profile_path(&self) -> Option<KeyPath> {
        match self {
            BundleError::Template { template, .. }
            | BundleError::Yaml { template, .. }
            | BundleError::Object { template, .. }
            | BundleError::Patch { template, .. } => match template {
                TemplateRef::Profile(path) => Some(path.clone()),
                TemplateRef::Builtin(_) => None,
            },
            BundleError::Namespace { .. } => Some(key_path(&["namespace"])),
            _ => None,
        }
    }
}

/// Renders bundles; holds the templates, loaded once.
#[derive(Debug)]
pub struct Renderer {
    env: Environment<'static>,
}

fn key_path(keys: &[&str]) -> KeyPath {
    KeyPath(keys.iter().map(|k| Seg::Key((*k).to_owned())).collect())
}

/// Templates whose name ends in `.yaml` or `.yaml.j2` write every value as
/// JSON; others (plain strings) are not escaped.
fn template_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_auto_escape_callback(|name| if name.ends_with(".yaml") || name.ends_with(".yaml.j2") { AutoEscape::Json } else { AutoEscape::None });
    env
}

impl Renderer {
    /// The built-in templates only.
    pub fn builtin() -> Result<Self, BundleError> {
        Self::with_overrides(&BTreeMap::new())
    }

    /// The built-in templates, each replaced by the operator's template of the same name
    /// (file name → source, as read from `templates_dir` by the daemon). A name that is not
    /// a built-in template is an error: a misspelt override would otherwise be ignored.
    pub fn with_overrides(overrides: &BTreeMap<String, String>) -> Result<Self, BundleError> {
        if let Some(name) = overrides.keys().find(|name| !is_template_name(name)) {
            return Err(BundleError::UnknownTemplate { name: name.clone(), known: template_names().join(", ") });
        }
        let mut env = template_env();
        for (name, builtin) in BUILTIN_TEMPLATES {
            let source = overrides.get(*name).cloned().unwrap_or_else(|| (*builtin).to_owned());
            env.add_template_owned(*name, source).map_err(|err| template_error(TemplateRef::Builtin((*name).to_owned()), &err))?;
        }
        Ok(Self { env })
    }

    /// Checks the profiles in `text` (see [`profiles::parse`]), rendering each once for a
    /// sample user with these templates, so a profile these templates cannot render is
    /// reported at its line.
    pub fn parse_profiles(&self, file: &str, text: &str) -> Result<ProfileSet, Diagnostics> {
        profiles::parse(file, text, &|profile| self.check(profile))
    }

    /// Renders the profile for a sample user on its first context, so templates
    /// that do not parse or render, and patches or objects that are not YAML, are
    /// reported at load. Returns the key path to blame and the message.
    fn check(&self, profile: &Profile) -> Result<(), Blame> {
        let context = profile.contexts.first().map(String::as_str).unwrap_or_default();
        let hub_parameters = crate::profiles::hub_parameters::samples(&profile.hub_parameters);
        let input = SpawnInput {
            user: "jovyan",
            server: "",
            profile,
            options: &BTreeMap::new(),
            context,
            secret_env: &BTreeMap::new(),
            url_prefix: None,
            hub_parameters: &hub_parameters,
            owner: None,
        };
        self.render(&input).map(drop).map_err(|err| {
            let at = err.profile_path().unwrap_or_default();
            let message = err.to_string();
            let shown = at.to_string();
            let message = message
                .strip_prefix(&format!("template {shown}: "))
                .or_else(|| message.strip_prefix(&format!("{shown}: ")))
                .map_or_else(|| message.clone(), str::to_owned);
            (at, message)
        })
    }

    /// Computes the bundle for `input`: resolves the options, renders the
    /// built-in templates and the profile's objects, applies its patches, then
    /// finishes and sorts the objects.
    pub fn render(&self, input: &SpawnInput<'_>) -> Result<Bundle, BundleError> {
        let resolved = input.profile.resolve_options(input.options)?;
        let profile = &resolved.profile;
        let identity = Identity::new(input, profile)?;
        let mut ctx = template_context(input, &identity, &resolved);
        // Templates see `ctx` converted once (not once per template): the conversion of a
        // whole profile's settings would otherwise cost more than most renders.
        let early = Jinja::from(Serde(&ctx));

        let namespace = self.render_text(TemplateRef::Profile(key_path(&["namespace"])), &profile.namespace, &early)?.trim().to_owned();
        if !is_dns1123_label(&namespace) {
            return Err(BundleError::Namespace { namespace });
        }
        let with_namespace = context! { namespace => namespace.as_str(), ..early };
        ctx["namespace"] = json!(namespace);
        self.add_pod_settings(&mut ctx, &with_namespace, profile, &identity.url_prefix)?;
        let full = Jinja::from(Serde(&ctx));

        let mut rendered = self.render_builtins(&profile.spec, identity.route, input.secret_env, &full)?;
        self.render_objects(&profile.spec, &full, &mut rendered)?;
        for (id, patch) in &profile.spec.patches {
            self.apply_patch(id, patch, &full, &mut rendered)?;
        }
        let objects = finish_objects(rendered, &namespace, &identity.labels, &identity.annotations)?;
        Ok(Bundle { key: identity.key, namespace, url: identity.url, objects })
    }

    /// Renders the built-in templates the profile wants (the Namespace only with
    /// `create_namespace`, the PVC only with `storage`, the Ingress or the HTTPRoute as the
    /// context routes); only the Secret sees `secret_env`.
    fn render_builtins(
        &self,
        spec: &ProfileSpec,
        route: &Route,
        secret_env: &BTreeMap<String, String>,
        ctx: &Jinja,
    ) -> Result<Vec<(TemplateRef, Value)>, BundleError> {
        let mut rendered = Vec::new();
        for (file, _) in BUILTIN_TEMPLATES {
            let wanted = match *file {
                "namespace.yaml.j2" => spec.create_namespace,
                "pvc.yaml.j2" => spec.storage.is_some(),
                "networkpolicy.yaml.j2" => spec.network_policy.enabled,
                "ingress.yaml.j2" => *route == Route::Ingress,
                "httproute.yaml.j2" => matches!(route, Route::HttpRoute { .. }),
                _ => true,
            };
            if !wanted {
                continue;
            }
            let template = TemplateRef::Builtin((*file).to_owned());
            let text = if *file == "secret.yaml.j2" {
                self.render_builtin(file, &context! { secret_env => Jinja::from(Serde(secret_env)), ..ctx.clone() })?
            } else {
                self.render_builtin(file, ctx)?
            };
            if let Some(object) = parse_object(&template, &text)? {
                rendered.push((template, object));
            }
        }
        Ok(rendered)
    }

    /// Renders the profile's `objects`, adding them to `rendered`.
    fn render_objects(&self, spec: &ProfileSpec, ctx: &Jinja, rendered: &mut Vec<(TemplateRef, Value)>) -> Result<(), BundleError> {
        for (id, source) in &spec.objects {
            let template = TemplateRef::Profile(key_path(&["objects", id]));
            let text = self.render_text_named(&template, &format!("objects.{id}.yaml"), source, ctx)?;
            if let Some(object) = parse_object(&template, &text)? {
                rendered.push((template, object));
            }
        }
        Ok(())
    }

    /// Renders patch `id` and applies it to every rendered object it targets,
    /// which then count as coming from the patch.
    fn apply_patch(&self, id: &str, patch: &PatchSpec, ctx: &Jinja, rendered: &mut [(TemplateRef, Value)]) -> Result<(), BundleError> {
        let template = TemplateRef::Profile(key_path(&["patches", id]));
        let target_name = patch
            .target
            .name
            .as_ref()
            .map(|n| self.render_text(TemplateRef::Profile(key_path(&["patches", id, "target", "name"])), n, ctx).map(|s| s.trim().to_owned()))
            .transpose()?;
        let patch_ref = TemplateRef::Profile(key_path(&["patches", id, "patch"]));
        let text = self.render_text_named(&patch_ref, &format!("patches.{id}.yaml"), &patch.patch, ctx)?;
        let Some(patch_value) = parse_object(&patch_ref, &text)? else {
            return Ok(());
        };
        for (origin, object) in rendered.iter_mut() {
            let matches = object["kind"] == json!(patch.target.kind) && target_name.as_ref().is_none_or(|n| object["metadata"]["name"] == json!(n));
            if !matches {
                continue;
            }
            *object = patch_object(&template, object, &patch_value)?;
            *origin = template.clone();
        }
        Ok(())
    }

    /// Adds the pod's settings, shaped as Kubernetes expects them, to `ctx` (`jinja` is what
    /// the profile's `environment` templates see: `ctx` so far).
    fn add_pod_settings(&self, ctx: &mut Value, jinja: &Jinja, profile: &Profile, url_prefix: &str) -> Result<(), BundleError> {
        let spec = &profile.spec;
        let env = self.pod_env(ctx, jinja, spec, url_prefix)?;
        let (pod_sc, container_sc) = security_contexts(&spec.security_context);
        let claim_name = claim_name(spec, ctx);
        let (volumes, mounts) = volumes(spec, &claim_name);
        let fields = [
            ("image", json!(profile.image)),
            ("image_pull_policy", json!(spec.image_pull_policy)),
            ("cmd", json!(spec.cmd)),
            ("args", json!(spec.args)),
            ("env", json!(env)),
            ("resources", Value::Object(resources(spec))),
            ("pod_security_context", Value::Object(pod_sc)),
            ("security_context", Value::Object(container_sc)),
            ("node_selector", json!(spec.node_selector)),
            ("tolerations", json!(spec.tolerations)),
            ("volumes", json!(volumes)),
            ("volume_mounts", json!(mounts)),
            ("storage", json!(spec.storage)),
            ("claim_name", claim_name),
            ("ingress", json!(spec.ingress)),
            ("network_policy", network_policy(&spec.network_policy)),
            ("mount_service_account_token", json!(spec.mount_service_account_token)),
            ("readiness", self.readiness(spec, jinja, ctx, url_prefix)?),
        ];
        for (key, value) in fields {
            ctx[key] = value;
        }
        Ok(())
    }

    /// The container's environment, by name: JupyterHub's variables, then the
    /// profile's `environment` (rendered; it may replace them).
    fn pod_env(&self, ctx: &Value, jinja: &Jinja, spec: &ProfileSpec, url_prefix: &str) -> Result<Vec<Value>, BundleError> {
        let mut env = BTreeMap::new();
        if spec.kind == AppKind::Jupyter {
            env.extend([
                ("JUPYTERHUB_USER".to_owned(), ctx["username"].clone()),
                ("JUPYTERHUB_SERVER_NAME".to_owned(), ctx["servername"].clone()),
                ("JUPYTERHUB_SERVICE_PREFIX".to_owned(), json!(url_prefix)),
                ("JUPYTERHUB_SERVICE_URL".to_owned(), json!(format!("http://0.0.0.0:{}{url_prefix}", ctx["port"]))),
            ]);
        }
        for (var, template) in &spec.environment {
            let value = self.render_text(TemplateRef::Profile(key_path(&["environment", var])), template, jinja)?;
            env.insert(var.clone(), json!(value));
        }
        Ok(env.into_iter().map(|(name, value)| json!({"name": name, "value": value})).collect())
    }

    /// The container's readiness probe (`null`: none): HTTP on `readiness.path` (rendered),
    /// else on the path the kind implies, or TCP, on `readiness.port` or the app's port.
    fn readiness(&self, spec: &ProfileSpec, jinja: &Jinja, ctx: &Value, url_prefix: &str) -> Result<Value, BundleError> {
        let port = spec.readiness.port.map_or_else(|| ctx["port"].clone(), Value::from);
        let handler = match spec.readiness.probe {
            ProbeType::None => return Ok(Value::Null),
            ProbeType::Tcp => json!({ "tcpSocket": { "port": port } }),
            ProbeType::Http => {
                let path = match (&spec.readiness.path, spec.kind, spec.strip_prefix) {
                    (Some(template), _, _) => self.render_text(TemplateRef::Profile(key_path(&["readiness", "path"])), template, jinja)?,
                    (None, _, true) => "/".to_owned(),
                    (None, AppKind::Jupyter, false) => format!("{url_prefix}api"),
                    (None, AppKind::Web, false) => url_prefix.to_owned(),
                };
                json!({ "httpGet": { "path": path, "port": port } })
            }
        };
        let mut probe = handler;
        probe["periodSeconds"] = json!(2);
        probe["failureThreshold"] = json!(3);
        Ok(probe)
    }

    fn render_builtin(&self, name: &str, ctx: &Jinja) -> Result<String, BundleError> {
        let template = TemplateRef::Builtin(name.to_owned());
        self.env.get_template(name).and_then(|t| t.render(ctx)).map_err(|err| template_error(template, &err))
    }

    /// Renders a plain-string profile template (not escaped).
    fn render_text(&self, template: TemplateRef, source: &str, ctx: &Jinja) -> Result<String, BundleError> {
        let name = template.to_string();
        self.render_text_named(&template, &name, source, ctx)
    }

    /// Renders a profile template under `name` (which selects escaping).
    fn render_text_named(&self, template: &TemplateRef, name: &str, source: &str, ctx: &Jinja) -> Result<String, BundleError> {
        self.env.render_named_str(name, source, ctx).map_err(|err| template_error(template.clone(), &err))
    }
}

/// Who a bundle is for and where it is reached: what its objects are labelled with.
struct Identity<'a> {
    key: InstanceKey,
    ingress_url: &'a str,
    route: &'a Route,
    url_prefix: String,
    url: String,
    labels: Value,
    annotations: Value,
}

impl<'a> Identity<'a> {
    /// The identity of `input`'s server on `input.context`, which must be one of the profile's.
    fn new(input: &SpawnInput<'_>, profile: &'a Profile) -> Result<Self, BundleError> {
        let unknown =
            || BundleError::UnknownContext { context: input.context.to_owned(), profile: profile.slug.clone(), contexts: profile.contexts.join(", ") };
        let ingress_url = profile.ingress_public_url(input.context).filter(|_| profile.contexts.iter().any(|c| c == input.context)).ok_or_else(unknown)?;
        let route = profile.route(input.context).ok_or_else(unknown)?;
        let key = InstanceKey::new(input.user, input.server);
        let url_prefix = match input.url_prefix {
            Some(prefix) if !prefix.starts_with('/') => return Err(BundleError::UrlPrefix(prefix.to_owned())),
            Some(prefix) if prefix.ends_with('/') => prefix.to_owned(),
            Some(prefix) => format!("{prefix}/"),
            None => naming::url_prefix(input.user, input.server),
        };
        let url = format!("{}{url_prefix}", ingress_url.trim_end_matches('/'));
        let mut labels = json!({
            labels::MANAGED_BY: labels::MANAGED_BY_VALUE,
            labels::INSTANCE: key.key(),
            labels::USER: key.safe_user(),
            labels::SERVER: key.safe_server(),
            labels::PROFILE: profile.slug,
        });
        if let (Some(owner), Value::Object(map)) = (input.owner, &mut labels) {
            map.insert(labels::OWNER.to_owned(), json!(owner.uid));
            map.insert(labels::HOME.to_owned(), json!(owner.home));
        }
        let annotations = json!({
            labels::USERNAME: input.user,
            labels::SERVERNAME: input.server,
            labels::CONTEXT: input.context,
            labels::URL: url,
        });
        Ok(Self { key, ingress_url, route, url_prefix, url, labels, annotations })
    }
}

/// What every template sees (before the namespace and the pod's settings are added).
fn template_context(input: &SpawnInput<'_>, identity: &Identity<'_>, resolved: &ResolvedOptions) -> Value {
    let profile = &resolved.profile;
    let key = &identity.key;
    let mut profile_value = profile.settings().clone();
    if let Value::Object(map) = &mut profile_value {
        map.insert("slug".to_owned(), json!(profile.slug));
        map.insert("display_name".to_owned(), json!(profile.display_name));
    }
    json!({
        "key": key.key(),
        "user_key": InstanceKey::new(input.user, "").key(),
        "name": key.object_name(),
        "username": input.user,
        "safe_username": key.safe_user(),
        "servername": input.server,
        "safe_servername": key.safe_server(),
        "profile_slug": profile.slug,
        "profile": profile_value,
        "options": resolved.chosen,
        "hub_parameters": input.hub_parameters,
        "url_prefix": identity.url_prefix,
        "route_path": naming::route_path(&identity.url_prefix),
        "gateway": match identity.route {
            Route::Ingress => Value::Null,
            Route::HttpRoute { namespace, name } => json!({ "namespace": namespace, "name": name }),
        },
        "url": identity.url,
        "context": input.context,
        "ingress_public_url": identity.ingress_url,
        "labels": identity.labels,
        "annotations": identity.annotations,
        "selector": { labels::INSTANCE: key.key() },
        "port": profile.spec.port.unwrap_or(NOTEBOOK_PORT),
        "strip_prefix": profile.spec.strip_prefix,
    })
}

/// `object` with `patch` merged in (strategic merge); the patch may not change its kind or name.
fn patch_object(template: &TemplateRef, object: &Value, patch: &Value) -> Result<Value, BundleError> {
    let before = object_id(object);
    let patched =
        strategic_merge(object, patch).map_err(|err| BundleError::Patch { template: template.clone(), object: before.clone(), message: err.to_string() })?;
    if object_id(&patched) != before {
        return Err(BundleError::Patch { template: template.clone(), object: before, message: "a patch may not change an object's kind or name".to_owned() });
    }
    Ok(patched)
}

/// The rendered objects, finished (see [`finish_object`]), each kind and name
/// once, sorted by (tier, kind, name).
fn finish_objects(rendered: Vec<(TemplateRef, Value)>, namespace: &str, labels: &Value, annotations: &Value) -> Result<Vec<BundleObject>, BundleError> {
    let mut objects = Vec::with_capacity(rendered.len());
    let mut seen = BTreeMap::new();
    for (template, mut object) in rendered {
        finish_object(&template, &mut object, namespace, labels, annotations)?;
        let id = object_id(&object);
        if seen.insert(id.clone(), ()).is_some() {
            return Err(BundleError::Object { template, object: id, message: "another object of the bundle has the same kind and name".to_owned() });
        }
        let tier = Tier::of(object["kind"].as_str().unwrap_or_default());
        objects.push(BundleObject { tier, object });
    }
    objects.sort_by(|a, b| (a.tier, a.kind(), a.name()).cmp(&(b.tier, b.kind(), b.name())));
    Ok(objects)
}

/// The container's `resources`: limits and requests, each only when set.
fn resources(spec: &ProfileSpec) -> Map<String, Value> {
    let mut limits = Map::new();
    let mut requests = Map::new();
    put(&mut limits, "cpu", spec.cpu_limit.as_ref().map(|q| &q.0));
    put(&mut requests, "cpu", spec.cpu_guarantee.as_ref().map(|q| &q.0));
    put(&mut limits, "memory", spec.mem_limit.as_ref().map(|q| &q.0));
    put(&mut requests, "memory", spec.mem_guarantee.as_ref().map(|q| &q.0));
    for (name, q) in &spec.extra_resource_limits {
        put(&mut limits, name, Some(&q.0));
    }
    for (name, q) in &spec.extra_resource_guarantees {
        put(&mut requests, name, Some(&q.0));
    }
    let mut resources = Map::new();
    for (key, map) in [("limits", limits), ("requests", requests)] {
        if !map.is_empty() {
            resources.insert(key.to_owned(), Value::Object(map));
        }
    }
    resources
}

/// The pod's and the container's security contexts.
/// The NetworkPolicy's settings for its template: egress open to every address but the denied
/// ones, as one IPv4 and one IPv6 block (an `except` must lie inside its block's range).
fn network_policy(policy: &NetworkPolicySpec) -> Value {
    let (v4, v6): (Vec<&String>, Vec<&String>) = policy.egress_deny_cidrs.iter().partition(|c| !c.contains(':'));
    let block = |cidr: &str, except: Vec<&String>| if except.is_empty() { json!({ "cidr": cidr }) } else { json!({ "cidr": cidr, "except": except }) };
    json!({
        "ingress_from_namespaces": policy.ingress_from_namespaces,
        "ingress_from_cidrs": policy.ingress_from_cidrs,
        "egress": [block("0.0.0.0/0", v4), block("::/0", v6)],
    })
}

fn security_contexts(sc: &SecuritySpec) -> (Map<String, Value>, Map<String, Value>) {
    let mut pod_sc = Map::new();
    put(&mut pod_sc, "runAsUser", sc.uid);
    put(&mut pod_sc, "runAsGroup", sc.gid);
    put(&mut pod_sc, "fsGroup", sc.fs_gid);
    put(&mut pod_sc, "runAsNonRoot", Some(sc.run_as_non_root));
    let mut container_sc = Map::new();
    put(&mut container_sc, "allowPrivilegeEscalation", Some(sc.allow_privilege_escalation));
    put(&mut container_sc, "runAsNonRoot", Some(sc.run_as_non_root));
    (pod_sc, container_sc)
}

/// The pod's volumes and the container's mounts: the profile's, then the home
/// volume (claim `name`) with `storage`.
fn volumes(spec: &ProfileSpec, name: &Value) -> (Vec<Value>, Vec<Value>) {
    let mut volumes: Vec<Value> = spec.volumes.iter().cloned().map(Value::Object).collect();
    let mut mounts: Vec<Value> = spec.volume_mounts.iter().cloned().map(Value::Object).collect();
    if let Some(storage) = &spec.storage {
        volumes.push(json!({"name": "home", "persistentVolumeClaim": {"claimName": name}}));
        mounts.push(json!({"name": "home", "mountPath": storage.mount_path}));
    }
    (volumes, mounts)
}

/// The name of the server's claim: its objects' name, or with `naming = "kubespawner"`
/// KubeSpawner's name for it (checked at load: the template expands).
fn claim_name(spec: &ProfileSpec, ctx: &Value) -> Value {
    match (&spec.storage, spec.naming) {
        (Some(storage), crate::profiles::spec::Naming::Kubespawner) => {
            let (user, server) = (ctx["username"].as_str().unwrap_or_default(), ctx["servername"].as_str().unwrap_or_default());
            crate::kubespawner_names::expand(storage.claim_name_template(), user, server).map_or_else(|_| ctx["name"].clone(), Value::String)
        }
        _ => ctx["name"].clone(),
    }
}

/// Sets `map[key]` when there is a value.
fn put<T: serde::Serialize>(map: &mut Map<String, Value>, key: &str, value: Option<T>) {
    if let Some(value) = value {
        map.insert(key.to_owned(), json!(value));
    }
}

fn template_error(template: TemplateRef, err: &minijinja::Error) -> BundleError {
    // minijinja's message ends with "(in <name>:<line>)".
    BundleError::Template { template, message: err.to_string() }
}

/// Parses rendered YAML: `None` for an empty document (a template may render
/// nothing to drop its object), an error for anything but one mapping.
fn parse_object(template: &TemplateRef, text: &str) -> Result<Option<Value>, BundleError> {
    let value: Value = serde_yaml::from_str(text).map_err(|err| BundleError::Yaml { template: template.clone(), message: err.to_string() })?;
    match value {
        Value::Null => Ok(None),
        Value::Object(_) => Ok(Some(value)),
        other => Err(BundleError::Yaml { template: template.clone(), message: format!("expected a mapping, got {}", type_name(&other)) }),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn object_id(object: &Value) -> String {
    format!("{}/{}", object["kind"].as_str().unwrap_or("?"), object["metadata"]["name"].as_str().unwrap_or("?"))
}

/// Checks an object's identity fields, adds the namespace to namespaced
/// objects that have none, and forces the fleetspawn labels and annotations.
/// A Namespace, shared by many servers, only gets the managed-by label.
fn finish_object(template: &TemplateRef, object: &mut Value, namespace: &str, labels: &Value, annotations: &Value) -> Result<(), BundleError> {
    let id = object_id(object);
    let invalid = |message: &str| BundleError::Object { template: template.clone(), object: id.clone(), message: message.to_owned() };
    let non_empty = |v: &Value| v.as_str().is_some_and(|s| !s.is_empty());
    if !non_empty(&object["apiVersion"]) || !non_empty(&object["kind"]) {
        return Err(invalid("needs a string apiVersion and kind"));
    }
    if !non_empty(&object["metadata"]["name"]) {
        return Err(invalid("needs a string metadata.name"));
    }
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return Err(invalid("metadata must be a mapping"));
    };
    if !CLUSTER_SCOPED_KINDS.contains(&kind.as_str()) && !metadata.contains_key("namespace") {
        metadata.insert("namespace".to_owned(), json!(namespace));
    }
    let (labels, annotations) =
        if kind == "Namespace" { (json!({ labels::MANAGED_BY: labels::MANAGED_BY_VALUE }), json!({})) } else { (labels.clone(), annotations.clone()) };
    for (field, forced) in [("labels", labels), ("annotations", annotations)] {
        let entry = metadata.entry(field).or_insert_with(|| json!({}));
        if entry.is_null() {
            *entry = json!({});
        }
        let Some(map) = entry.as_object_mut() else {
            return Err(invalid(&format!("metadata.{field} must be a mapping")));
        };
        if let Value::Object(forced) = forced {
            map.extend(forced);
        }
    }
    Ok(())
}

/// The bundle as multi-document YAML, `---` separated, in apply order.
pub fn to_yaml(bundle: &Bundle) -> String {
    bundle
        .objects
        .iter()
        .map(|o| serde_yaml::to_string(&o.object).unwrap_or_else(|err| format!("# cannot write {}: {err}\n", object_id(&o.object))))
        .collect::<Vec<_>>()
        .join("---\n")
}
