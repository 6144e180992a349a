{{/*
Names and labels shared by every template.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "feedwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The release's fullname: fullnameOverride, else "<release>" when it already
contains the chart name, else "<release>-<name>". Cluster-scoped objects carry it.
*/}}
{{- define "feedwatch.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "feedwatch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object of the release. */}}
{{- define "feedwatch.labels" -}}
helm.sh/chart: {{ include "feedwatch.chart" . }}
app.kubernetes.io/name: {{ include "feedwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: feedwatch
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of the operator's objects. */}}
{{- define "feedwatch.operatorLabels" -}}
{{ include "feedwatch.labels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The operator pod's selector: stable across upgrades (never add to it). */}}
{{- define "feedwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "feedwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The operator's ServiceAccount. */}}
{{- define "feedwatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "feedwatch.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The operator image: repository:tag (the tag defaults to appVersion), or @digest. */}}
{{- define "feedwatch.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The image of the watcher pods when a FeedWatcher names none: the operator's own by default. */}}
{{- define "feedwatch.watcherImage" -}}
{{- default (include "feedwatch.image" .) .Values.watcherImage -}}
{{- end -}}

{{/* The operator's namespaced rules: used in one ClusterRole, or in a Role per watched namespace. */}}
{{- define "feedwatch.operatorRules" -}}
# FeedWatchers: read and watch them; patch for kopf's progress annotations.
- apiGroups: ["feedwatch.dev"]
  resources: ["feedwatchers"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["feedwatch.dev"]
  resources: ["feedwatchers/status"]
  verbs: ["get", "patch", "update"]
# The watcher Deployments: server-side apply creates and updates them; the
# garbage collector deletes them through their owner reference.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "update"]
# Referenced Secrets are read by name; never listed or watched.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
