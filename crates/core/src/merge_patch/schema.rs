//! Merge-key table for the built-in kinds that fleetspawn bundles use.
//!
//! Source: the `patchStrategy` / `patchMergeKey` struct tags of `k8s.io/api`
//! v0.34.4 (`core/v1`, `apps/v1`, `batch/v1`, `networking/v1`, `rbac/v1`,
//! `policy/v1`) and `k8s.io/apimachinery/pkg/apis/meta/v1` (`ObjectMeta`).
//! The tags that matter for these kinds are identical in v0.32.4, the version
//! kubectl v1.32 is built with. kubectl reads the tags from its compiled Go
//! structs; this table keeps only what changes the result of a patch:
//!
//! * every field that carries a tag, and
//! * every field on the way from a kind's root to a tagged field.
//!
//! Two simplifications follow from how the tags are used when a patch is
//! *applied* (as opposed to computed by `kubectl apply`):
//!
//! * `retainKeys` only tells the diff side to emit a `$retainKeys` directive;
//!   applying honours the directive wherever it appears, so
//!   `patchStrategy:"merge,retainKeys"` is recorded as `merge` and a lone
//!   `retainKeys` (`Deployment.spec.strategy`) as the default.
//! * The element type of a list without `patchStrategy:"merge"` is never
//!   consulted (such lists are replaced whole), so those lists are left out,
//!   e.g. `PodStatus.containerStatuses` or `StatefulSet.spec.volumeClaimTemplates`.
//!
//! Fields not in the table behave like untagged fields: objects are merged
//! key by key and lists are replaced.

/// How a field is patched: the effective `patchStrategy` tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Strategy {
    /// No tag: objects are merged key by key, lists are replaced whole.
    Default,
    /// `patchStrategy:"merge"`: lists are merged (by merge key for lists of
    /// objects, as a set for lists of primitives).
    Merge,
    /// `patchStrategy:"replace"`: the patch value replaces the field whole.
    Replace,
}

/// Patch metadata of one field.
#[derive(Clone, Copy, Debug)]
pub(super) struct FieldMeta {
    pub(super) strategy: Strategy,
    /// `patchMergeKey`: identifies the items of a merged list of objects.
    pub(super) merge_key: Option<&'static str>,
    /// Schema of the field's value (of each item, for lists).
    pub(super) schema: Option<TypeSchema>,
}

impl FieldMeta {
    /// A field with no patch metadata at all.
    pub(super) const UNTAGGED: Self = Self { strategy: Strategy::Default, merge_key: None, schema: None };
    /// `patchStrategy:"merge"` on a list of primitives.
    const MERGE_PRIMITIVES: Self = Self { strategy: Strategy::Merge, ..Self::UNTAGGED };
    /// `patchStrategy:"replace"`.
    const REPLACE: Self = Self { strategy: Strategy::Replace, ..Self::UNTAGGED };

    /// An untagged object field whose value has tagged fields of its own.
    const fn nested(schema: TypeSchema) -> Self {
        Self { schema: Some(schema), ..Self::UNTAGGED }
    }

    /// `patchStrategy:"merge" patchMergeKey:"<key>"` on a list of objects.
    const fn merge_by(key: &'static str) -> Self {
        Self { strategy: Strategy::Merge, merge_key: Some(key), schema: None }
    }

    /// Like [`FieldMeta::merge_by`], for items that have tagged fields.
    const fn merge_by_with(key: &'static str, schema: TypeSchema) -> Self {
        Self { schema: Some(schema), ..Self::merge_by(key) }
    }
}

/// The Go struct types (or groups of structurally identical ones) that
/// contain tagged fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TypeSchema {
    /// `metav1.ObjectMeta`.
    ObjectMeta,
    /// Any type whose only tagged fields are under `metadata`: Secret,
    /// ConfigMap, Ingress, NetworkPolicy, the RBAC kinds and
    /// `PersistentVolumeClaimTemplate`.
    MetadataOnly,
    /// Namespace and PersistentVolumeClaim: metadata plus `status.conditions`.
    MetadataAndConditions,
    /// A status whose only tagged field is `conditions` (merged by `type`).
    ConditionsStatus,
    Pod,
    PodSpec,
    PodStatus,
    /// `Container` and `EphemeralContainer` (same tagged fields).
    Container,
    Volume,
    EphemeralVolumeSource,
    PodTemplate,
    PodTemplateSpec,
    /// Deployment, StatefulSet, DaemonSet, ReplicaSet and Job.
    Workload,
    /// Their specs: the tagged fields are all in `spec.template`.
    WorkloadSpec,
    CronJob,
    CronJobSpec,
    JobTemplateSpec,
    Service,
    ServiceSpec,
    ServiceAccount,
    PodDisruptionBudget,
    PodDisruptionBudgetSpec,
}

type Fields = &'static [(&'static str, FieldMeta)];

const METADATA: (&str, FieldMeta) = ("metadata", FieldMeta::nested(TypeSchema::ObjectMeta));
const CONDITIONS_STATUS: (&str, FieldMeta) = ("status", FieldMeta::nested(TypeSchema::ConditionsStatus));

const OBJECT_META: Fields = &[("ownerReferences", FieldMeta::merge_by("uid")), ("finalizers", FieldMeta::MERGE_PRIMITIVES)];
const METADATA_ONLY: Fields = &[METADATA];
const METADATA_AND_CONDITIONS: Fields = &[METADATA, CONDITIONS_STATUS];
const CONDITIONS: Fields = &[("conditions", FieldMeta::merge_by("type"))];

const POD: Fields = &[METADATA, ("spec", FieldMeta::nested(TypeSchema::PodSpec)), ("status", FieldMeta::nested(TypeSchema::PodStatus))];
const POD_SPEC: Fields = &[
    // tag: merge,retainKeys
    ("volumes", FieldMeta::merge_by_with("name", TypeSchema::Volume)),
    ("initContainers", FieldMeta::merge_by_with("name", TypeSchema::Container)),
    ("containers", FieldMeta::merge_by_with("name", TypeSchema::Container)),
    ("ephemeralContainers", FieldMeta::merge_by_with("name", TypeSchema::Container)),
    ("imagePullSecrets", FieldMeta::merge_by("name")),
    ("hostAliases", FieldMeta::merge_by("ip")),
    ("topologySpreadConstraints", FieldMeta::merge_by("topologyKey")),
    ("schedulingGates", FieldMeta::merge_by("name")),
    // tag: merge,retainKeys
    ("resourceClaims", FieldMeta::merge_by("name")),
];
const POD_STATUS: Fields = &[
    ("conditions", FieldMeta::merge_by("type")),
    ("hostIPs", FieldMeta::merge_by("ip")),
    ("podIPs", FieldMeta::merge_by("ip")),
    // tag: merge,retainKeys
    ("resourceClaimStatuses", FieldMeta::merge_by("name")),
];
const CONTAINER: Fields = &[
    ("ports", FieldMeta::merge_by("containerPort")),
    ("env", FieldMeta::merge_by("name")),
    ("volumeMounts", FieldMeta::merge_by("mountPath")),
    ("volumeDevices", FieldMeta::merge_by("devicePath")),
];
const VOLUME: Fields = &[("ephemeral", FieldMeta::nested(TypeSchema::EphemeralVolumeSource))];
const EPHEMERAL_VOLUME_SOURCE: Fields = &[("volumeClaimTemplate", FieldMeta::nested(TypeSchema::MetadataOnly))];
const POD_TEMPLATE: Fields = &[METADATA, ("template", FieldMeta::nested(TypeSchema::PodTemplateSpec))];
const POD_TEMPLATE_SPEC: Fields = &[METADATA, ("spec", FieldMeta::nested(TypeSchema::PodSpec))];
const WORKLOAD: Fields = &[METADATA, ("spec", FieldMeta::nested(TypeSchema::WorkloadSpec)), CONDITIONS_STATUS];
// `Deployment.spec.strategy` carries `retainKeys` only: no effect when applying.
const WORKLOAD_SPEC: Fields = &[("template", FieldMeta::nested(TypeSchema::PodTemplateSpec))];
const CRON_JOB: Fields = &[METADATA, ("spec", FieldMeta::nested(TypeSchema::CronJobSpec))];
const CRON_JOB_SPEC: Fields = &[("jobTemplate", FieldMeta::nested(TypeSchema::JobTemplateSpec))];
const JOB_TEMPLATE_SPEC: Fields = &[METADATA, ("spec", FieldMeta::nested(TypeSchema::WorkloadSpec))];
const SERVICE: Fields = &[METADATA, ("spec", FieldMeta::nested(TypeSchema::ServiceSpec)), CONDITIONS_STATUS];
const SERVICE_SPEC: Fields = &[("ports", FieldMeta::merge_by("port"))];
const SERVICE_ACCOUNT: Fields = &[METADATA, ("secrets", FieldMeta::merge_by("name"))];
const POD_DISRUPTION_BUDGET: Fields = &[METADATA, ("spec", FieldMeta::nested(TypeSchema::PodDisruptionBudgetSpec)), CONDITIONS_STATUS];
const POD_DISRUPTION_BUDGET_SPEC: Fields = &[("selector", FieldMeta::REPLACE)];

impl TypeSchema {
    /// The schema of a whole object, or `None` for kinds without merge-key
    /// information (custom resources, unknown kinds or API versions).
    pub(super) fn for_kind(api_version: &str, kind: &str) -> Option<Self> {
        let schema = match (api_version, kind) {
            ("v1", "Pod") => Self::Pod,
            ("v1", "PodTemplate") => Self::PodTemplate,
            ("v1", "Service") => Self::Service,
            ("v1", "ServiceAccount") => Self::ServiceAccount,
            ("v1", "Namespace" | "PersistentVolumeClaim") => Self::MetadataAndConditions,
            ("v1", "Secret" | "ConfigMap")
            | ("networking.k8s.io/v1", "Ingress" | "NetworkPolicy")
            | ("rbac.authorization.k8s.io/v1", "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding") => Self::MetadataOnly,
            ("apps/v1", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") | ("batch/v1", "Job") => Self::Workload,
            ("batch/v1", "CronJob") => Self::CronJob,
            ("policy/v1", "PodDisruptionBudget") => Self::PodDisruptionBudget,
            _ => return None,
        };
        Some(schema)
    }

    fn fields(self) -> Fields {
        match self {
            Self::ObjectMeta => OBJECT_META,
            Self::MetadataOnly => METADATA_ONLY,
            Self::MetadataAndConditions => METADATA_AND_CONDITIONS,
            Self::ConditionsStatus => CONDITIONS,
            Self::Pod => POD,
            Self::PodSpec => POD_SPEC,
            Self::PodStatus => POD_STATUS,
            Self::Container => CONTAINER,
            Self::Volume => VOLUME,
            Self::EphemeralVolumeSource => EPHEMERAL_VOLUME_SOURCE,
            Self::PodTemplate => POD_TEMPLATE,
            Self::PodTemplateSpec => POD_TEMPLATE_SPEC,
            Self::Workload => WORKLOAD,
            Self::WorkloadSpec => WORKLOAD_SPEC,
            Self::CronJob => CRON_JOB,
            Self::CronJobSpec => CRON_JOB_SPEC,
            Self::JobTemplateSpec => JOB_TEMPLATE_SPEC,
            Self::Service => SERVICE,
            Self::ServiceSpec => SERVICE_SPEC,
            Self::ServiceAccount => SERVICE_ACCOUNT,
            Self::PodDisruptionBudget => POD_DISRUPTION_BUDGET,
            Self::PodDisruptionBudgetSpec => POD_DISRUPTION_BUDGET_SPEC,
        }
    }
}

/// Patch metadata of field `name` in an object of schema `schema` (untagged
/// when the schema is unknown or does not list the field).
pub(super) fn field(schema: Option<TypeSchema>, name: &str) -> FieldMeta {
    schema.and_then(|schema| schema.fields().iter().find(|(field, _)| *field == name)).map_or(FieldMeta::UNTAGGED, |(_, meta)| *meta)
}
