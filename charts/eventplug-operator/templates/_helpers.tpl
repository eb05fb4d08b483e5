{{/* The chart's name. */}}
{{- define "eventplug-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of the release's objects. */}}
{{- define "eventplug-operator.fullname" -}}
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

{{/* Selector labels. */}}
{{- define "eventplug-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eventplug-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "eventplug-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "eventplug-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: eventplug
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "eventplug-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "eventplug-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference from {repository, tag}: `repo@sha256:…` for a digest, else `repo:tag`. */}}
{{- define "eventplug-operator.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag }}
{{- if hasPrefix "sha256:" $tag }}
{{- printf "%s@%s" .image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/* The operator's settings file (docs/operator.md "Settings"). */}}
{{- define "eventplug-operator.settings" -}}
{{- $fullname := include "eventplug-operator.fullname" . -}}
{{- $settings := dict
  "policy" .Values.policy
  "sidecarImage" (include "eventplug-operator.image" (dict "root" . "image" .Values.sidecar.image))
  "sidecarUpgrade" .Values.sidecar.upgrade
  "registries" .Values.registries
  "statusInterval" .Values.statusInterval
  "metricsAddress" (printf "0.0.0.0:%d" (int .Values.metrics.port))
-}}
{{- $defaults := dict "poisonPolicy" .Values.sidecar.delivery.poisonPolicy "poisonAttempts" .Values.sidecar.delivery.poisonAttempts "maxBodyBytes" .Values.sidecar.delivery.maxBodyBytes -}}
{{- with .Values.sidecar.adminPort }}{{ $_ := set $defaults "adminPort" (int .) }}{{ end -}}
{{- with .Values.sidecar.resources.cpu }}{{ $_ := set $defaults "cpu" . }}{{ end -}}
{{- with .Values.sidecar.resources.cpuLimit }}{{ $_ := set $defaults "cpuLimit" . }}{{ end -}}
{{- with .Values.sidecar.resources.memoryHeadroom }}{{ $_ := set $defaults "memoryHeadroom" . }}{{ end -}}
{{- $_ := set $settings "sidecarDefaults" $defaults -}}
{{- with .Values.sidecar.configApiVersion }}{{ $_ := set $settings "sidecarConfigApiVersion" . }}{{ end -}}
{{- if .Values.webhook.enabled }}
{{- $_ := set $settings "webhook" (dict
  "address" (printf "0.0.0.0:%d" (int .Values.webhook.port))
  "service" (dict "namespace" .Release.Namespace "name" $fullname "port" 443)
  "caSecret" (dict "namespace" .Release.Namespace "name" (printf "%s-webhook-ca" $fullname))
) -}}
{{- end }}
{{- if .Values.leaderElection.enabled }}
{{- $_ := set $settings "leaderElection" (dict
  "namespace" .Release.Namespace
  "name" $fullname
  "leaseDuration" .Values.leaderElection.leaseDuration
  "renewInterval" .Values.leaderElection.renewInterval
) -}}
{{- end }}
{{- toYaml $settings }}
{{- end }}
