{{/* Chart name, truncated to the 63 characters a label allows. */}}
{{- define "redmine-authz.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full resource name: <release>-<chart>, or the release name when it contains the chart name. */}}
{{- define "redmine-authz.fullname" -}}
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

{{- define "redmine-authz.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every resource carries. */}}
{{- define "redmine-authz.labels" -}}
helm.sh/chart: {{ include "redmine-authz.chart" . }}
{{ include "redmine-authz.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: redmine
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the server's pods (immutable in a Deployment: never change them). */}}
{{- define "redmine-authz.selectorLabels" -}}
app.kubernetes.io/name: {{ include "redmine-authz.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "redmine-authz.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "redmine-authz.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: repository@digest, or repository:tag (tag defaults to appVersion). */}}
{{- define "redmine-authz.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The Secret the pods read DATABASE_URL, REDIS_URL and AUTHZ_CACHE_SECRET from. */}}
{{- define "redmine-authz.secretName" -}}
{{- default (include "redmine-authz.fullname" .) .Values.existingSecret.name }}
{{- end }}

{{/* Whether a Redis URL can be configured (a value, or an existing Secret that may hold it). */}}
{{- define "redmine-authz.redisConfigured" -}}
{{- if or .Values.redis.url .Values.existingSecret.name }}true{{- end }}
{{- end }}

{{/* The in-cluster DNS name of the Service. */}}
{{- define "redmine-authz.serviceHost" -}}
{{- printf "%s.%s.svc.%s" (include "redmine-authz.fullname" .) .Release.Namespace .Values.istio.clusterDomain }}
{{- end }}

{{/* A probe's timing fields. */}}
{{- define "redmine-authz.probeTiming" -}}
initialDelaySeconds: {{ .initialDelaySeconds }}
periodSeconds: {{ .periodSeconds }}
timeoutSeconds: {{ .timeoutSeconds }}
failureThreshold: {{ .failureThreshold }}
successThreshold: {{ .successThreshold }}
{{- end }}
