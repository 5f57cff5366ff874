{{/* Prefix of the names of this release's objects. */}}
{{- define "target.name" -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- end }}

{{/* Cluster-scoped names: unique per release namespace too. */}}
{{- define "target.clusterName" -}}
{{- printf "%s-%s" .Release.Name .Release.Namespace | trunc 50 | trimSuffix "-" }}
{{- end }}

{{- define "target.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: fleetspawn
{{- end }}

{{- define "target.subject" -}}
- kind: ServiceAccount
  name: {{ .Values.serviceAccount.name }}
  namespace: {{ default .Release.Namespace .Values.serviceAccount.namespace }}
{{- end }}

{{/*
What fleetspawn does in a namespace its profiles use (src/kube/objects.rs, the templates of
crates/core/src/templates/): server-side apply (patch, field manager fleetspawn) of each
bundle object, get to see whether one exists, list by label (stop, garbage collection),
delete; a watch on the Pod being started and on its Events; Events it records.
*/}}
{{- define "target.rules" -}}
# The user's Pod: applied, followed by a watch until ready, deleted on stop.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, patch, delete]
# The rest of the bundle: Service, Secret (the hub's env), ServiceAccount, ConfigMaps,
# PersistentVolumeClaim (deleted only on "delete forever").
- apiGroups: [""]
  resources: [services, secrets, serviceaccounts, configmaps, persistentvolumeclaims]
  verbs: [get, list, create, patch, delete]
# The Ingress routing to the server, and its NetworkPolicy.
- apiGroups: [networking.k8s.io]
  resources: [ingresses, networkpolicies]
  verbs: [get, list, create, patch, delete]
# Or the HTTPRoute, on clusters routing through a Gateway (routing = "httproute").
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, list, create, patch, delete]
# The Pod's Events (progress: Scheduled, Pulling, Started...) and those fleetspawn records.
- apiGroups: [""]
  resources: [events]
  verbs: [get, list, watch, create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- with .Values.extraRules }}
# extraRules: the kinds of the profiles' `objects`.
{{ toYaml . }}
{{- end }}
{{- end }}
