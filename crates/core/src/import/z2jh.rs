//! A Zero to JupyterHub values file as KubeSpawner traits: the chart's
//! `jupyterhub_config.py` table, applied to the chart's defaults overlaid with the file.

use super::node::{Entry, Kind, Node};
use super::traits::{self, Level, Scope};
use super::{yaml, ImportError, Report};

/// The chart's defaults (jupyterhub/values.yaml of Zero to JupyterHub 4) for what shapes a
/// user's Pod. Their line is 0: the report says "chart default".
const CHART_DEFAULTS: &str = r#"
singleuser:
  cmd: jupyterhub-singleuser
  uid: 1000
  fsGid: 100
  allowPrivilegeEscalation: false
  startTimeout: 300
  memory: {guarantee: 1G}
  image: {name: quay.io/jupyterhub/k8s-singleuser-sample}
  cloudMetadata: {blockWithIptables: true}
  storage:
    type: dynamic
    capacity: 10Gi
    homeMountPath: /home/jovyan
    dynamic: {storageAccessModes: [ReadWriteOnce]}
scheduling:
  userScheduler: {enabled: true}
  userPods:
    tolerations:
      - {key: hub.jupyter.org/dedicated, operator: Equal, value: user, effect: NoSchedule}
      - {key: hub.jupyter.org_dedicated, operator: Equal, value: user, effect: NoSchedule}
    nodeAffinity: {matchNodePurpose: prefer}
"#;

/// `singleuser.<key>` → trait, as the chart's `jupyterhub_config.py` sets them.
const TRAITS: &[(&str, &str)] = &[
    ("podNameTemplate", "pod_name_template"),
    ("startTimeout", "start_timeout"),
    ("events", "events_enabled"),
    ("extraLabels", "extra_labels"),
    ("extraAnnotations", "extra_annotations"),
    ("uid", "uid"),
    ("fsGid", "fs_gid"),
    ("serviceAccountName", "service_account"),
    ("nodeSelector", "node_selector"),
    ("lifecycleHooks", "lifecycle_hooks"),
    ("initContainers", "init_containers"),
    ("extraContainers", "extra_containers"),
    ("extraEnv", "environment"),
    ("extraPodConfig", "extra_pod_config"),
    ("cmd", "cmd"),
    ("defaultUrl", "default_url"),
    ("allowPrivilegeEscalation", "allow_privilege_escalation"),
];

/// Nested `singleuser` keys → trait.
const NESTED_TRAITS: &[(&str, &str)] = &[
    ("memory.limit", "mem_limit"),
    ("memory.guarantee", "mem_guarantee"),
    ("cpu.limit", "cpu_limit"),
    ("cpu.guarantee", "cpu_guarantee"),
    ("extraResource.limits", "extra_resource_limits"),
    ("extraResource.guarantees", "extra_resource_guarantees"),
    ("extraNodeAffinity.required", "node_affinity_required"),
    ("extraNodeAffinity.preferred", "node_affinity_preferred"),
    ("extraPodAffinity.required", "pod_affinity_required"),
    ("extraPodAffinity.preferred", "pod_affinity_preferred"),
    ("extraPodAntiAffinity.required", "pod_anti_affinity_required"),
    ("extraPodAntiAffinity.preferred", "pod_anti_affinity_preferred"),
    ("image.pullPolicy", "image_pull_policy"),
    ("storage.extraLabels", "storage_extra_labels"),
];

/// Keys of `singleuser` handled here apart from the tables, or known to need nothing.
const HANDLED: &[&str] = &[
    "image",
    "memory",
    "cpu",
    "extraResource",
    "extraNodeAffinity",
    "extraPodAffinity",
    "extraPodAntiAffinity",
    "storage",
    "extraTolerations",
    "profileList",
    "networkTools",
];

fn zero_lines(node: &mut Node) {
    node.line = 0;
    match &mut node.kind {
        Kind::List(items) => items.iter_mut().for_each(zero_lines),
        Kind::Map(entries) => entries.iter_mut().for_each(|e| {
            e.line = 0;
            zero_lines(&mut e.value);
        }),
        _ => {}
    }
}

/// The `[defaults]` level and the profile list of a values file.
pub fn convert(text: &str, report: &mut Report) -> Result<(Level, Option<Node>), ImportError> {
    let file = yaml::parse(text)?;
    if !matches!(file.kind, Kind::Map(_)) {
        return Err(ImportError::NotAMapping);
    }
    let mut values = yaml::parse(CHART_DEFAULTS)?;
    zero_lines(&mut values);
    values.merge(&file);

    let scope = Scope { path: "singleuser".to_owned(), option: None };
    let mut level = Level::default();
    let empty = Node::new(0, Kind::Map(Vec::new()));
    let singleuser = values.get("singleuser").unwrap_or(&empty);
    let apply = |trait_name: &str, key: &str, e: &Entry, level: &mut Level, report: &mut Report| {
        traits::apply(trait_name, &format!("singleuser.{key}"), e.line, &e.value, &scope, level, report)
    };
    let line_of = |path: &str| -> usize {
        let mut node = &values;
        let mut line = 0;
        for key in path.split('.') {
            match node.entry(key) {
                Some(e) => {
                    line = e.line;
                    node = &e.value;
                }
                None => break,
            }
        }
        line
    };

    for e in singleuser.entries() {
        if let Some((_, t)) = TRAITS.iter().find(|(k, _)| *k == e.key) {
            apply(t, &e.key, e, &mut level, report);
        } else if !HANDLED.contains(&e.key.as_str()) {
            let reason = match e.key.as_str() {
                "cloudMetadata" => match e.value.get("blockWithIptables").map(|n| &n.kind) {
                    Some(Kind::Bool(false)) | None => continue,
                    _ => "blockWithIptables: fleetspawn adds no privileged init container; its NetworkPolicy per server (`network_policy`, on by default) denies egress to 169.254.169.254 instead, where the CNI enforces NetworkPolicies",
                },
                "networkPolicy" => "not converted: fleetspawn writes its own NetworkPolicy per server (`network_policy`: `enabled`, `ingress_from_namespaces`, `ingress_from_cidrs`, `egress_deny_cidrs`); set those to match",
                "extraFiles" => "put the files in a ConfigMap or Secret and mount it with `volumes` and `volume_mounts`",
                _ => "not a setting fleetspawn knows: not converted",
            };
            report.add(e.line, &format!("singleuser.{}", e.key), reason.to_owned());
        }
    }
    for (path, t) in NESTED_TRAITS {
        let (head, tail) = path.split_once('.').unwrap_or((path, ""));
        if let Some(e) = singleuser.get(head).and_then(|n| n.entry(tail)) {
            if e.value.kind != Kind::Null {
                apply(t, path, e, &mut level, report);
            }
        }
    }
    image(singleuser, &scope, &mut level, report);
    tolerations(&values, &scope, &mut level, report);
    node_purpose(&values, &scope, &mut level, report, line_of("scheduling.userPods.nodeAffinity.matchNodePurpose"));
    storage(singleuser, &scope, &mut level, report, line_of("singleuser.storage"));
    pull_secrets(&values, &scope, &mut level, report);

    if values.path("scheduling.userScheduler.enabled").is_some_and(|n| n.kind == Kind::Bool(true)) {
        report.add(
            line_of("scheduling.userScheduler.enabled"),
            "scheduling.userScheduler",
            "fleetspawn uses each cluster's default scheduler (the chart's user scheduler is not there)".to_owned(),
        );
    }
    if values.path("scheduling.podPriority.enabled").is_some_and(|n| n.kind == Kind::Bool(true)) {
        report.add(
            line_of("scheduling.podPriority"),
            "scheduling.podPriority",
            "the chart's PriorityClass name depends on the release: set patches.*.spec.priorityClassName by hand".to_owned(),
        );
    }
    for e in file.entries() {
        if !matches!(e.key.as_str(), "singleuser" | "scheduling" | "imagePullSecrets" | "imagePullSecret") {
            report.add(e.line, &e.key, "not about user servers: not converted (fleetspawn replaces the hub's spawner, not the hub)".to_owned());
        }
    }
    Ok((level, singleuser.get("profileList").cloned()))
}

fn image(singleuser: &Node, scope: &Scope<'_>, level: &mut Level, report: &mut Report) {
    let Some(e) = singleuser.get("image").and_then(|i| i.entry("name")) else { return };
    let image = match (e.value.as_str(), singleuser.path("image.tag")) {
        (Some(name), Some(tag)) => {
            format!("{name}:{}", tag.to_json().ok().map_or_else(String::new, |t| t.as_str().map_or_else(|| t.to_string(), str::to_owned)))
        }
        (Some(name), None) => {
            if e.line == 0 {
                report.add(0, "singleuser.image", "the chart's sample image, whose tag is the chart's version: set singleuser.image.tag".to_owned());
            }
            name.to_owned()
        }
        (None, _) => return,
    };
    let node = Node::new(e.line, Kind::Str(image));
    traits::apply("image", "singleuser.image", e.line, &node, scope, level, report);
}

/// The chart's user-pod tolerations, then `singleuser.extraTolerations`.
fn tolerations(values: &Node, scope: &Scope<'_>, level: &mut Level, report: &mut Report) {
    let mut all = Vec::new();
    let mut line = 0;
    for path in ["scheduling.userPods.tolerations", "singleuser.extraTolerations"] {
        if let Some(Node { kind: Kind::List(items), line: l }) = values.path(path) {
            all.extend(items.iter().cloned());
            line = line.max(*l);
        }
    }
    if !all.is_empty() {
        traits::apply("tolerations", "singleuser.extraTolerations", line, &Node::new(line, Kind::List(all)), scope, level, report);
    }
}

/// `matchNodePurpose`: a node affinity to the nodes labelled for users.
fn node_purpose(values: &Node, scope: &Scope<'_>, level: &mut Level, report: &mut Report, line: usize) {
    let term = serde_json::json!({"matchExpressions": [{"key": "hub.jupyter.org/node-purpose", "operator": "In", "values": ["user"]}]});
    let (name, items) = match values.path("scheduling.userPods.nodeAffinity.matchNodePurpose").and_then(Node::as_str) {
        Some("prefer") => ("node_affinity_preferred", serde_json::json!([{"weight": 100, "preference": term}])),
        Some("require") => ("node_affinity_required", serde_json::json!([term])),
        _ => return,
    };
    let mut combined = items;
    let extra = if name == "node_affinity_preferred" { "singleuser.extraNodeAffinity.preferred" } else { "singleuser.extraNodeAffinity.required" };
    if let Some(Ok(serde_json::Value::Array(more))) = values.path(extra).map(Node::to_json) {
        if let Some(all) = combined.as_array_mut() {
            all.extend(more);
        }
    }
    traits::apply(name, "scheduling.userPods.nodeAffinity", line, &json_node(line, &combined), scope, level, report);
}

/// `singleuser.storage`: `dynamic` is fleetspawn's `storage` (a PVC per server); `static` a
/// shared claim, mounted with a patch (its `subPath` is a template).
fn storage(singleuser: &Node, scope: &Scope<'_>, level: &mut Level, report: &mut Report, line: usize) {
    let Some(storage) = singleuser.get("storage") else { return };
    let mount_path = storage.get("homeMountPath").and_then(Node::as_str).unwrap_or("/home/jovyan").to_owned();
    match storage.get("type").and_then(Node::as_str) {
        Some("dynamic") => {
            let mut table = serde_json::Map::new();
            if let Some(c) = storage.get("capacity") {
                table.insert("capacity".into(), c.to_json().unwrap_or_default());
            }
            if let Some(class) = storage.path("dynamic.storageClass").and_then(|n| n.to_json().ok()) {
                table.insert("storage_class".into(), class);
            }
            if let Some(modes) = storage.path("dynamic.storageAccessModes").and_then(|n| n.to_json().ok()) {
                table.insert("access_modes".into(), modes);
            }
            table.insert("mount_path".into(), mount_path.clone().into());
            // Users' existing claims are found under KubeSpawner's names.
            if let Some(template) = storage.path("dynamic.pvcNameTemplate").filter(|n| n.line > 0) {
                match template.as_str().map(|t| (t, crate::kubespawner_names::expand(t, "jovyan", ""))) {
                    Some((t, Ok(_))) => {
                        table.insert("claim_name_template".into(), t.into());
                    }
                    Some((_, Err(e))) => report.add(
                        template.line,
                        "singleuser.storage.dynamic.pvcNameTemplate",
                        format!("{e}: the claims keep Zero to JupyterHub's default name"),
                    ),
                    None => report.add(template.line, "singleuser.storage.dynamic.pvcNameTemplate", "not a string".into()),
                }
            }
            level.settings.insert("naming".into(), "kubespawner".into());
            level.settings.insert("storage".into(), table.into());
            for (key, reason) in [("dynamic.volumeNameTemplate", "fleetspawn's home volume is named `home`")] {
                if let Some(n) = storage.path(key).filter(|n| n.line > 0) {
                    report.add(n.line, &format!("singleuser.storage.{key}"), reason.to_owned());
                }
            }
            if let Some(sub) = storage.path("dynamic.subPath") {
                if let Err(reason) = traits::home_sub_path(level, &mount_path, sub, scope) {
                    report.add(sub.line, "singleuser.storage.dynamic.subPath", reason);
                }
            }
        }
        Some("static") => {
            let claim = storage.path("static.pvcName").and_then(Node::as_str).unwrap_or_default();
            let sub = storage.path("static.subPath").and_then(Node::as_str).unwrap_or("{username}");
            let volumes = serde_json::json!({"home": {"name": "home", "persistentVolumeClaim": {"claimName": claim}}});
            let mounts = serde_json::json!({"home": {"name": "home", "mountPath": mount_path, "subPath": sub}});
            traits::apply("volumes", "singleuser.storage.static", line, &json_node(line, &volumes), scope, level, report);
            traits::apply("volume_mounts", "singleuser.storage.static", line, &json_node(line, &mounts), scope, level, report);
        }
        _ => {}
    }
    let mut extra = |key: &str, trait_name: &str| {
        if let Some(n) = storage.get(key) {
            traits::apply(trait_name, &format!("singleuser.storage.{key}"), n.line, n, scope, level, report);
        }
    };
    extra("extraVolumes", "volumes");
    extra("extraVolumeMounts", "volume_mounts");
}

/// `imagePullSecrets` (chart-wide) and `singleuser.image.pullSecrets`.
fn pull_secrets(values: &Node, scope: &Scope<'_>, level: &mut Level, report: &mut Report) {
    let mut all = Vec::new();
    let mut line = 0;
    for path in ["imagePullSecrets", "singleuser.image.pullSecrets"] {
        if let Some(Node { kind: Kind::List(items), line: l }) = values.path(path) {
            all.extend(items.iter().cloned());
            line = line.max(*l);
        }
    }
    if values.path("imagePullSecret.create").is_some_and(|n| n.kind == Kind::Bool(true)) {
        report.add(
            values.entry("imagePullSecret").map_or(0, |e| e.line),
            "imagePullSecret.create",
            "the chart's Secret is named after the release: create it on each cluster and list it in imagePullSecrets".to_owned(),
        );
    }
    if !all.is_empty() {
        traits::apply("image_pull_secrets", "imagePullSecrets", line, &Node::new(line, Kind::List(all)), scope, level, report);
    }
}

/// A JSON value as a node, every part on `line`.
fn json_node(line: usize, value: &serde_json::Value) -> Node {
    use serde_json::Value;
    let kind = match value {
        Value::Null => Kind::Null,
        Value::Bool(b) => Kind::Bool(*b),
        Value::Number(n) => n.as_i64().map_or_else(|| Kind::Float(n.as_f64().unwrap_or_default()), Kind::Int),
        Value::String(s) => Kind::Str(s.clone()),
        Value::Array(items) => Kind::List(items.iter().map(|v| json_node(line, v)).collect()),
        Value::Object(map) => Kind::Map(map.iter().map(|(k, v)| Entry { key: k.clone(), line, value: json_node(line, v) }).collect()),
    };
    Node::new(line, kind)
}
