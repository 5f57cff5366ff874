//! KubeSpawner settings (traits, as `c.KubeSpawner.<trait>` and `kubespawner_override` name
//! them) as profile settings: one table for the defaults, profiles and option choices.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::node::{Kind, Node};
use super::template::{self, Segment};
use super::{Report, UNSET};

/// Where a setting is converted: for messages, and for `{value}` (the free text of an option).
pub struct Scope<'a> {
    /// The key path of the settings table, e.g. `profile_list[2].kubespawner_override`.
    pub path: String,
    /// The option whose free text `{value}` stands for (in an `unlisted_choice`).
    pub option: Option<&'a str>,
}

/// The settings of one level (defaults, a profile, a choice), as they are converted.
#[derive(Debug, Default, Clone)]
pub struct Level {
    /// Profile settings (TOML-ready: no nulls, `__null__` removes an inherited key).
    pub settings: Map<String, Value>,
    /// KubeSpawner's `cmd` (`Some(None)`: set to None, the image's command).
    pub cmd: Option<Option<Vec<String>>>,
    /// Spawner `args`.
    pub args: Option<Vec<String>>,
}

impl Level {
    fn set(&mut self, key: &str, value: Value) {
        self.settings.insert(key.to_owned(), value);
    }

    fn table(&mut self, key: &str) -> &mut Map<String, Value> {
        let entry = self.settings.entry(key.to_owned()).or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        entry.as_object_mut().expect("made a table above")
    }

    /// A strategic merge patch of the Pod, by id.
    fn patch(&mut self, id: &str, yaml: String) {
        self.table("patches").insert(format!("kubespawner-{id}"), json!({"target": {"kind": "Pod"}, "patch": yaml}));
    }

    /// The container arguments a level ends with, given the level below: KubeSpawner runs
    /// `cmd + args` as the container's arguments (the image's entrypoint stays), or the
    /// image's command when `cmd` is None.
    pub fn finish(&mut self, below: (&Option<Vec<String>>, &[String])) -> (Option<Vec<String>>, Vec<String>) {
        let cmd = self.cmd.clone().unwrap_or_else(|| below.0.clone());
        let args = self.args.clone().unwrap_or_else(|| below.1.to_vec());
        if self.cmd.is_some() || self.args.is_some() {
            match &cmd {
                Some(cmd) => self.set("args", json!(cmd.iter().chain(&args).collect::<Vec<_>>())),
                None => self.set("args", json!(UNSET)),
            }
        }
        (cmd, args)
    }
}

/// How a trait's strings are read: KubeSpawner expands `{username}` and friends in some
/// traits (environment, volumes, extra_pod_config...) and not in others.
#[derive(Clone, Copy, PartialEq)]
enum Expand {
    Yes,
    No,
}

/// Applies trait `name` (set at `line`, reported as `key`) to `level`.
pub fn apply(name: &str, key: &str, line: usize, node: &Node, scope: &Scope<'_>, level: &mut Level, report: &mut Report) {
    if let Some(code_line) = find_code(node) {
        report.add(code_line, key, "a callable or expression, not a literal: not converted".to_owned());
        return;
    }
    let unset = node.kind == Kind::Null;
    let result: Result<(), String> = (|| {
        match name {
            "image" | "image_spec" => level.set("image", if unset { json!(UNSET) } else { json!(string(node)?) }),
            "image_pull_policy" => {
                level.set("image_pull_policy", if unset { json!(UNSET) } else { json!(one_of(node, &["Always", "IfNotPresent", "Never"])?) })
            }
            "cmd" => level.cmd = Some(if unset { None } else { Some(command(node)?) }),
            "args" => level.args = Some(if unset { Vec::new() } else { strings(node)? }),
            "default_url" => {
                let value = if unset { json!(UNSET) } else { json!(text(scope, &string(node)?, Expand::No)?) };
                level.table("environment").insert("JUPYTERHUB_DEFAULT_URL".to_owned(), value);
            }
            "environment" => environment(node, key, scope, level, report)?,
            "cpu_limit" | "cpu_guarantee" => level.set(name, if unset { json!(UNSET) } else { number(node)? }),
            "mem_limit" | "mem_guarantee" => level.set(name, if unset { json!(UNSET) } else { json!(bytes(node)?) }),
            "extra_resource_limits" | "extra_resource_guarantees" => {
                for e in node.entries() {
                    let value = match &e.value.kind {
                        Kind::Null => json!(UNSET),
                        Kind::Int(_) | Kind::Float(_) | Kind::Str(_) => e.value.to_json().unwrap_or_default(),
                        _ => return Err(format!("{}: a quantity is a number or a string", e.key)),
                    };
                    level.table(name).insert(e.key.clone(), value);
                }
            }
            "node_selector" => {
                for e in node.entries() {
                    let value = if e.value.kind == Kind::Null { json!(UNSET) } else { json!(string(&e.value)?) };
                    level.table("node_selector").insert(e.key.clone(), value);
                }
            }
            "tolerations" => level.set("tolerations", node.to_json().unwrap_or_default()),
            "uid" | "gid" | "fs_gid" => {
                let value = if unset { json!(UNSET) } else { json!(integer(node)?) };
                if name == "uid" && value == json!(0) {
                    level.table("security_context").insert("run_as_non_root".to_owned(), json!(false));
                }
                level.table("security_context").insert(name.to_owned(), value);
            }
            "allow_privilege_escalation" => match node.kind {
                Kind::Bool(b) => {
                    level.table("security_context").insert("allow_privilege_escalation".to_owned(), json!(b));
                }
                _ => return Err("None (leave it to the cluster) has no equivalent: fleetspawn sets allowPrivilegeEscalation: false".to_owned()),
            },
            "storage_capacity" => {
                level.table("storage").insert("capacity".to_owned(), json!(string(node)?));
            }
            "storage_class" => {
                level.table("storage").insert("storage_class".to_owned(), if unset { json!(UNSET) } else { json!(string(node)?) });
            }
            "storage_access_modes" => {
                level.table("storage").insert("access_modes".to_owned(), json!(strings(node)?));
            }
            "volumes" | "volume_mounts" => {
                let items = dict_values(node)?;
                let (key, patch) = if name == "volumes" {
                    ("volumes", "spec:\n  volumes:")
                } else {
                    ("volume_mounts", "spec:\n  containers:\n  - name: notebook\n    volumeMounts:")
                };
                if items.iter().any(has_placeholder) {
                    // Mounts and volumes are no templates in fleetspawn: a patch is.
                    level.patch(&name.replace('_', "-"), format!("{patch} {}\n", yaml_template(&Value::Array(items), scope, Expand::Yes)?));
                } else {
                    level.set(key, Value::Array(items));
                }
            }
            "image_pull_secrets" => {
                let secrets: Vec<Value> =
                    list(node)?.iter().map(|s| s.as_str().map_or_else(|| s.to_json().unwrap_or_default(), |name| json!({"name": name}))).collect();
                level.patch("image-pull-secrets", format!("spec:\n  imagePullSecrets: {}\n", yaml_template(&Value::Array(secrets), scope, Expand::No)?));
            }
            "extra_containers" | "init_containers" => {
                let field = if name == "extra_containers" { "containers" } else { "initContainers" };
                let items = node.to_json().unwrap_or_default();
                level.patch(&name.replace('_', "-"), format!("spec:\n  {field}: {}\n", yaml_template(&items, scope, Expand::Yes)?));
            }
            "lifecycle_hooks" => {
                let hooks = node.to_json().unwrap_or_default();
                level.patch(
                    "lifecycle-hooks",
                    format!("spec:\n  containers:\n  - name: notebook\n    lifecycle: {}\n", yaml_template(&hooks, scope, Expand::No)?),
                );
            }
            "extra_container_config" => {
                let config = camel_keys(node.to_json().unwrap_or_default());
                level.patch("extra-container-config", format!("spec:\n  containers:\n  - {}\n", yaml_template(&with_name(config), scope, Expand::No)?));
            }
            "extra_pod_config" => {
                let config = camel_keys(node.to_json().unwrap_or_default());
                level.patch("extra-pod-config", format!("spec: {}\n", yaml_template(&config, scope, Expand::Yes)?));
            }
            "extra_labels" | "extra_annotations" => {
                let field = if name == "extra_labels" { "labels" } else { "annotations" };
                level.patch(
                    &name.replace('_', "-"),
                    format!("metadata:\n  {field}: {}\n", yaml_template(&node.to_json().unwrap_or_default(), scope, Expand::Yes)?),
                );
            }
            "node_affinity_required"
            | "node_affinity_preferred"
            | "pod_affinity_required"
            | "pod_affinity_preferred"
            | "pod_anti_affinity_required"
            | "pod_anti_affinity_preferred" => {
                let items = node.to_json().unwrap_or_default();
                if items.as_array().is_some_and(Vec::is_empty) {
                    return Ok(());
                }
                let (kind, rule) = name.rsplit_once('_').unwrap_or_default();
                let kind = match kind {
                    "node_affinity" => "nodeAffinity",
                    "pod_affinity" => "podAffinity",
                    _ => "podAntiAffinity",
                };
                let body = match (kind, rule) {
                    ("nodeAffinity", "required") => json!({"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": items}}),
                    (_, "required") => json!({"requiredDuringSchedulingIgnoredDuringExecution": items}),
                    _ => json!({"preferredDuringSchedulingIgnoredDuringExecution": items}),
                };
                level.patch(&name.replace('_', "-"), format!("spec:\n  affinity:\n    {kind}: {}\n", yaml_template(&body, scope, Expand::No)?));
            }
            "scheduler_name" | "priority_class_name" => {
                let field = if name == "scheduler_name" { "schedulerName" } else { "priorityClassName" };
                level.patch(&name.replace('_', "-"), format!("spec:\n  {field}: {}\n", yaml_template(&json!(string(node)?), scope, Expand::No)?));
            }
            "start_timeout" => level.set("start_timeout", json!(integer(node)?)),
            "namespace" => {
                let ns = string(node)?;
                if ns.contains('{') {
                    return Err("a namespace template: set `namespace` by hand (e.g. \"u-{{ user_key }}\")".to_owned());
                }
                level.set("namespace", json!(ns));
            }
            "storage_pvc_ensure" => {
                return Err("fleetspawn creates a PVC per server when `storage` is set: set [defaults.storage] (capacity, mount_path) by hand".to_owned())
            }
            "pvc_name_template" | "storage_extra_labels" | "storage_extra_annotations" | "delete_pvc" => {
                return Err("fleetspawn names and keeps PVCs itself (see docs/migrating.md)".to_owned())
            }
            "pod_name_template" | "slug_scheme" => return Err("fleetspawn names objects itself (docs/profiles.md, Names)".to_owned()),
            "service_account" | "automount_service_account_token" => {
                return Err("every fleetspawn server has its own ServiceAccount: grant it rights with `objects` (a Role and RoleBinding)".to_owned())
            }
            "events_enabled" | "http_timeout" | "k8s_api_request_timeout" | "k8s_api_request_retry_timeout" | "port" | "ip" | "services_enabled" => {
                return Err("fleetspawn does this itself: no setting needed".to_owned())
            }
            _ => return Err("no fleetspawn equivalent known: not converted".to_owned()),
        }
        Ok(())
    })();
    if let Err(reason) = result {
        report.add(line, key, reason);
    }
}

/// A `subPath` on the mount of fleetspawn's home volume (merged by its `mountPath`).
pub fn home_sub_path(level: &mut Level, mount_path: &str, sub: &Node, scope: &Scope<'_>) -> Result<(), String> {
    let mount = json!([{"mountPath": mount_path, "subPath": string(sub)?}]);
    level.patch("home-sub-path", format!("spec:\n  containers:\n  - name: notebook\n    volumeMounts: {}\n", yaml_template(&mount, scope, Expand::Yes)?));
    Ok(())
}

/// The line of the first piece of code in `node`.
fn find_code(node: &Node) -> Option<usize> {
    node.to_json().err()
}

fn string(node: &Node) -> Result<String, String> {
    match &node.kind {
        Kind::Str(s) => Ok(s.clone()),
        Kind::Int(i) => Ok(i.to_string()),
        Kind::Float(f) => Ok(f.to_string()),
        _ => Err("expected a string".to_owned()),
    }
}

fn one_of(node: &Node, allowed: &[&str]) -> Result<String, String> {
    let s = string(node)?;
    if allowed.contains(&s.as_str()) {
        Ok(s)
    } else {
        Err(format!("{s:?} is not one of {}", allowed.join(", ")))
    }
}

fn integer(node: &Node) -> Result<i64, String> {
    match node.kind {
        Kind::Int(i) => Ok(i),
        _ => Err("expected an integer".to_owned()),
    }
}

fn number(node: &Node) -> Result<Value, String> {
    match node.kind {
        Kind::Int(_) | Kind::Float(_) => Ok(node.to_json().unwrap_or_default()),
        _ => Err("expected a number of cores".to_owned()),
    }
}

fn list(node: &Node) -> Result<&[Node], String> {
    match &node.kind {
        Kind::List(items) => Ok(items),
        _ => Err("expected a list".to_owned()),
    }
}

fn strings(node: &Node) -> Result<Vec<String>, String> {
    list(node)?.iter().map(string).collect()
}

/// KubeSpawner's `Command`: a string is one argument.
fn command(node: &Node) -> Result<Vec<String>, String> {
    match &node.kind {
        Kind::Str(s) => Ok(vec![s.clone()]),
        _ => strings(node),
    }
}

/// A list, or a dict whose values are taken in key order (as KubeSpawner's
/// `_sorted_dict_values` does); null values dropped.
fn dict_values(node: &Node) -> Result<Vec<Value>, String> {
    match &node.kind {
        Kind::List(items) => items.iter().map(|n| n.to_json().map_err(|_| "code".to_owned())).collect(),
        Kind::Map(entries) => {
            let sorted: BTreeMap<&str, &Node> = entries.iter().map(|e| (e.key.as_str(), &e.value)).collect();
            Ok(sorted.values().filter(|n| n.kind != Kind::Null).filter_map(|n| n.to_json().ok()).collect())
        }
        _ => Err("expected a list or a dict".to_owned()),
    }
}

/// JupyterHub's `ByteSpecification` (`K`, `M`, `G`, `T` are powers of 1024) as a Kubernetes
/// quantity of the same bytes.
fn bytes(node: &Node) -> Result<String, String> {
    match &node.kind {
        Kind::Int(i) => Ok(i.to_string()),
        Kind::Float(f) => Ok((f.trunc() as i64).to_string()),
        Kind::Str(s) => {
            let (number, suffix) = s.split_at(s.len().saturating_sub(1));
            let power = match suffix {
                "K" => 1,
                "M" => 2,
                "G" => 3,
                "T" => 4,
                _ => return Err(format!("{s:?}: expected a number of bytes or a number with K, M, G or T")),
            };
            let value: f64 = number.parse().map_err(|_| format!("{s:?}: expected a number of bytes or a number with K, M, G or T"))?;
            if value.fract() == 0.0 && value >= 0.0 {
                Ok(format!("{}{suffix}i", value as i64))
            } else {
                Ok(((value * 1024f64.powi(power)).trunc() as i64).to_string())
            }
        }
        _ => Err("expected a number of bytes or a string such as \"2G\"".to_owned()),
    }
}

/// Whether a value holds a `{placeholder}` somewhere in its strings.
fn has_placeholder(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('{'),
        Value::Array(items) => items.iter().any(has_placeholder),
        Value::Object(map) => map.values().any(has_placeholder),
        _ => false,
    }
}

/// The segments of a KubeSpawner string in `scope`.
fn segments(scope: &Scope<'_>, text: &str, expand: Expand) -> Result<Vec<Segment>, String> {
    let option_var = scope.option.map(|o| format!("options[{}]", Value::String(o.to_owned())));
    match expand {
        Expand::Yes => template::parse(text, &|field| match (field, &option_var) {
            ("value", Some(var)) => Some(var.clone()),
            _ => template::variable(field).map(str::to_owned),
        })
        .map_err(|field| format!("placeholder {field} has no fleetspawn variable: not converted")),
        Expand::No => {
            let Some(var) = option_var.filter(|_| text.contains("{value}")) else { return Ok(vec![Segment::Text(text.to_owned())]) };
            let mut out = Vec::new();
            for (i, piece) in text.split("{value}").enumerate() {
                if i > 0 {
                    out.push(Segment::Var(var.clone()));
                }
                if !piece.is_empty() {
                    out.push(Segment::Text(piece.to_owned()));
                }
            }
            Ok(out)
        }
    }
}

/// A string of a plain-string template setting (environment values).
fn text(scope: &Scope<'_>, text: &str, expand: Expand) -> Result<String, String> {
    Ok(template::plain(&segments(scope, text, expand)?))
}

/// `value` as a YAML template in flow style: each string that needs it becomes a
/// `{{ ... }}` expression (variables, or text minijinja would otherwise read).
fn yaml_template(value: &Value, scope: &Scope<'_>, expand: Expand) -> Result<String, String> {
    Ok(match value {
        Value::String(s) => {
            let segs = segments(scope, s, expand)?;
            if matches!(segs.as_slice(), [Segment::Text(t)] if !t.contains('{') && !t.contains('}')) {
                Value::String(s.clone()).to_string()
            } else {
                template::expression(&segs)
            }
        }
        Value::Array(items) => format!("[{}]", items.iter().map(|v| yaml_template(v, scope, expand)).collect::<Result<Vec<_>, _>>()?.join(", ")),
        Value::Object(map) => {
            let entries: Vec<String> =
                map.iter().map(|(k, v)| Ok(format!("{}: {}", Value::String(k.clone()), yaml_template(v, scope, expand)?))).collect::<Result<_, String>>()?;
            format!("{{{}}}", entries.join(", "))
        }
        other => other.to_string(),
    })
}

/// KubeSpawner's `environment`: string values are templates; a dict value (`valueFrom`) is
/// an env entry, added by a patch; None removes the variable.
fn environment(node: &Node, key: &str, scope: &Scope<'_>, level: &mut Level, report: &mut Report) -> Result<(), String> {
    let mut entries = Vec::new();
    for e in node.entries() {
        match &e.value.kind {
            Kind::Null => {
                level.table("environment").insert(e.key.clone(), json!(UNSET));
            }
            Kind::Map(_) => {
                let mut entry = e.value.to_json().unwrap_or_default();
                if let Some(map) = entry.as_object_mut() {
                    map.entry("name").or_insert_with(|| json!(e.key));
                }
                entries.push(entry);
            }
            _ => match string(&e.value).and_then(|s| text(scope, &s, Expand::Yes)) {
                Ok(value) => {
                    level.table("environment").insert(e.key.clone(), json!(value));
                }
                Err(reason) => report.add(e.line, &format!("{key}.{}", e.key), reason),
            },
        }
    }
    if !entries.is_empty() {
        level.patch(
            "environment",
            format!("spec:\n  containers:\n  - name: notebook\n    env: {}\n", yaml_template(&Value::Array(entries), scope, Expand::Yes)?),
        );
    }
    Ok(())
}

/// KubeSpawner accepts snake_case or camelCase names in `extra_pod_config` and
/// `extra_container_config`; Kubernetes only camelCase.
fn camel_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let mut camel = String::new();
                    let mut upper = false;
                    for c in k.chars() {
                        if c == '_' && !camel.is_empty() {
                            upper = true;
                        } else if upper {
                            camel.extend(c.to_uppercase());
                            upper = false;
                        } else {
                            camel.push(c);
                        }
                    }
                    (camel, v)
                })
                .collect(),
        ),
        other => other,
    }
}

fn with_name(mut config: Value) -> Value {
    if let Some(map) = config.as_object_mut() {
        map.insert("name".to_owned(), json!("notebook"));
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope<'static> {
        Scope { path: "defaults".into(), option: None }
    }

    fn node(v: Value) -> Node {
        fn from(v: &Value) -> Node {
            use super::super::node::Entry;
            let kind = match v {
                Value::Null => Kind::Null,
                Value::Bool(b) => Kind::Bool(*b),
                Value::Number(n) if n.is_i64() => Kind::Int(n.as_i64().unwrap_or_default()),
                Value::Number(n) => Kind::Float(n.as_f64().unwrap_or_default()),
                Value::String(s) => Kind::Str(s.clone()),
                Value::Array(items) => Kind::List(items.iter().map(from).collect()),
                Value::Object(map) => Kind::Map(map.iter().map(|(k, v)| Entry { key: k.clone(), line: 1, value: from(v) }).collect()),
            };
            Node::new(1, kind)
        }
        from(&v)
    }

    fn convert(traits: Value) -> (Level, Report) {
        let mut level = Level::default();
        let mut report = Report::default();
        for (k, v) in traits.as_object().expect("object") {
            apply(k, k, 1, &node(v.clone()), &scope(), &mut level, &mut report);
        }
        (level, report)
    }

    #[test]
    fn memory_is_in_powers_of_1024_as_jupyterhub_reads_it() {
        let (level, _) = convert(json!({"mem_limit": "2G", "mem_guarantee": "1.5G"}));
        assert_eq!(level.settings["mem_limit"], json!("2Gi"));
        assert_eq!(level.settings["mem_guarantee"], json!("1610612736"));
        let (level, _) = convert(json!({"mem_limit": 1000}));
        assert_eq!(level.settings["mem_limit"], json!("1000"));
    }

    #[test]
    fn environment_placeholders_become_variables_and_value_from_a_patch() {
        let (level, report) = convert(json!({"environment": {
            "HOME_URL": "https://x/{username}/{servername}",
            "RAW": "{unescaped_username}",
            "TOKEN": {"valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            "GONE": null,
            "ID": "{userid}",
        }}));
        let env = &level.settings["environment"];
        assert_eq!(env["HOME_URL"], json!("https://x/{{ safe_username }}/{{ safe_servername }}"));
        assert_eq!(env["RAW"], json!("{{ username }}"));
        assert_eq!(env["GONE"], json!(UNSET));
        let patch = level.settings["patches"]["kubespawner-environment"]["patch"].as_str().expect("patch");
        assert!(patch.contains(r#"{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"key": "k", "name": "s"}}}"#) || patch.contains("TOKEN"), "{patch}");
        assert_eq!(report.0.len(), 1, "{:?}", report.0);
        assert!(report.0[0].reason.contains("{userid}"), "{:?}", report.0);
    }

    #[test]
    fn cmd_and_args_are_the_containers_arguments() {
        let (mut level, _) = convert(json!({"cmd": "jupyterhub-singleuser", "args": ["--debug"]}));
        let (cmd, args) = level.finish((&None, &[]));
        assert_eq!(level.settings["args"], json!(["jupyterhub-singleuser", "--debug"]));
        let mut over = Level { cmd: Some(Some(vec!["start.sh".into()])), ..Level::default() };
        over.finish((&cmd, &args));
        assert_eq!(over.settings["args"], json!(["start.sh", "--debug"]), "args of the level below stay");
        let mut image_cmd = Level { cmd: Some(None), ..Level::default() };
        image_cmd.finish((&cmd, &args));
        assert_eq!(image_cmd.settings["args"], json!(UNSET));
    }

    #[test]
    fn templated_volumes_become_a_patch() {
        let (level, _) = convert(
            json!({"volumes": {"b": {"name": "shared", "nfs": {"server": "n", "path": "/x/{username}"}}}, "volume_mounts": [{"name": "shared", "mountPath": "/shared"}]}),
        );
        assert_eq!(level.settings["volume_mounts"], json!([{"name": "shared", "mountPath": "/shared"}]));
        let patch = level.settings["patches"]["kubespawner-volumes"]["patch"].as_str().expect("patch");
        assert_eq!(patch, "spec:\n  volumes: [{\"name\": \"shared\", \"nfs\": {\"path\": {{ \"/x/\" ~ safe_username }}, \"server\": \"n\"}}]\n");
    }
}
