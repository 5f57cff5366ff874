{{/* The chart name (nameOverride wins). */}}
{{- define "fleetspawn.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of the release's objects. */}}
{{- define "fleetspawn.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of cluster-scoped objects: unique per release namespace too. */}}
{{- define "fleetspawn.clusterName" -}}
{{- printf "%s-%s" (include "fleetspawn.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fleetspawn.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fleetspawn.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "fleetspawn.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "fleetspawn.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: fleetspawn
{{- end }}

{{- define "fleetspawn.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fleetspawn.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The home namespace: settings.homeNamespace, else the release namespace. */}}
{{- define "fleetspawn.homeNamespace" -}}
{{- default .Release.Namespace .Values.settings.homeNamespace }}
{{- end }}

{{/* The kubeconfig Secret's name; rendering fails without one. */}}
{{- define "fleetspawn.kubeconfigSecret" -}}
{{- required "kubeconfig.existingSecret is required: the name of a Secret in the release namespace holding the kubeconfig (the chart never takes it from values). Create it with: kubectl create secret generic fleetspawn-kubeconfig --from-file=kubeconfig=FILE, then --set kubeconfig.existingSecret=fleetspawn-kubeconfig" .Values.kubeconfig.existingSecret }}
{{- end }}

{{/* Paths inside the container. */}}
{{- define "fleetspawn.configPath" -}}/etc/fleetspawn/config/fleetspawn.toml{{- end }}
{{- define "fleetspawn.kubeconfigPath" -}}/etc/fleetspawn/kubeconfig/{{ .Values.kubeconfig.key }}{{- end }}
{{- define "fleetspawn.profilesPath" -}}
{{- if .Values.existingProfilesConfigMap -}}
/etc/fleetspawn/profiles/{{ .Values.existingProfilesConfigMapKey }}
{{- else -}}
/etc/fleetspawn/config/profiles.toml
{{- end }}
{{- end }}
{{- define "fleetspawn.listen" -}}0.0.0.0:8080{{- end }}

{{/* The daemon settings, fleetspawn.toml. */}}
{{- define "fleetspawn.settings" -}}
# fleetspawn settings, rendered by the Helm chart (values.yaml: settings, auth, installCRD).
# API tokens come from the environment (FLEETSPAWN_AUTH__TOKENS, from auth.existingSecret).
listen = {{ include "fleetspawn.listen" . | toJson }}
kubeconfig = {{ include "fleetspawn.kubeconfigPath" . | toJson }}
profiles = {{ include "fleetspawn.profilesPath" . | toJson }}
{{- if .Values.templates.existingConfigMap }}
templates_dir = "/etc/fleetspawn/templates"
{{- end }}
max_concurrent_spawns = {{ .Values.settings.maxConcurrentSpawns | int }}
max_servers_per_user = {{ .Values.settings.maxServersPerUser | int }}
hub_base_url = {{ .Values.settings.hubBaseUrl | toJson }}
gc_grace = {{ .Values.settings.gcGrace | toJson }}
{{- if .Values.settings.homeContext }}
home_context = {{ .Values.settings.homeContext | toJson }}
{{- end }}
home_namespace = {{ include "fleetspawn.homeNamespace" . | toJson }}
install_crd = {{ .Values.installCRD }}
{{- with .Values.settings.extra }}
{{ . }}
{{- end }}

[auth]
trusted_proxies = {{ .Values.auth.trustedProxies | toJson }}
user_header = {{ .Values.auth.userHeader | toJson }}
groups_header = {{ .Values.auth.groupsHeader | toJson }}
admin_users = {{ .Values.auth.adminUsers | toJson }}
admin_groups = {{ .Values.auth.adminGroups | toJson }}
secure_cookies = {{ .Values.auth.secureCookies }}
{{- if and .Values.auth.existingSecret .Values.auth.cookieSecretKey }}
cookie_secret_file = "/etc/fleetspawn/auth/cookie-secret"
{{- end }}
{{- end }}
