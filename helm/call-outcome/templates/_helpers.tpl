{{/*
Chart name, truncated to a DNS-1123 label.
*/}}
{{- define "call-outcome.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name (63 chars max). A release name that already contains the chart
name is used as is.
*/}}
{{- define "call-outcome.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "call-outcome.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "call-outcome.labels" -}}
helm.sh/chart: {{ include "call-outcome.chart" . }}
{{ include "call-outcome.selectorLabels" . }}
app.kubernetes.io/version: {{ include "call-outcome.imageTag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: call-outcome
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels (immutable: never add to these after a release).
*/}}
{{- define "call-outcome.selectorLabels" -}}
app.kubernetes.io/name: {{ include "call-outcome.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "call-outcome.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "call-outcome.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image tag: the value, or the chart's appVersion.
*/}}
{{- define "call-outcome.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Image reference; a digest wins over the tag.
*/}}
{{- define "call-outcome.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "call-outcome.imageTag" .) }}
{{- end }}
{{- end }}

{{/*
Name of the ConfigMap holding config.toml.
*/}}
{{- define "call-outcome.configMapName" -}}
{{- include "call-outcome.fullname" . }}
{{- end }}

{{/*
Name of the ConfigMap holding policy.toml: the user's (existingPolicyConfigMap) or the
chart's own.
*/}}
{{- define "call-outcome.policyConfigMapName" -}}
{{- if .Values.existingPolicyConfigMap }}
{{- .Values.existingPolicyConfigMap }}
{{- else }}
{{- printf "%s-policy" (include "call-outcome.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
Label a client pod carries to be let in by the NetworkPolicy when allowExternal is false.
*/}}
{{- define "call-outcome.clientLabel" -}}
{{- printf "%s-client" (include "call-outcome.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the value, or the drain deadline + preStop sleep + 10 s.
It must exceed the drain deadline plus the preStop sleep, or the kubelet kills in-flight
work before the service has drained it.
*/}}
{{- define "call-outcome.terminationGrace" -}}
{{- $min := add (int .Values.config.shutdownGraceSeconds) (int .Values.lifecycle.preStopSleepSeconds) }}
{{- if .Values.terminationGracePeriodSeconds }}
{{- if le (int .Values.terminationGracePeriodSeconds) $min }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than config.shutdownGraceSeconds + lifecycle.preStopSleepSeconds (%d)" (int .Values.terminationGracePeriodSeconds) $min) }}
{{- end }}
{{- .Values.terminationGracePeriodSeconds }}
{{- else }}
{{- add $min 10 }}
{{- end }}
{{- end }}

{{/*
Guards against settings that cannot work together.
*/}}
{{- define "call-outcome.validate" -}}
{{- if and (eq .Values.backend "memory") (or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled) }}
{{- fail "backend \"memory\" keeps history and events inside one process: set backend=nats (see values-ha.yaml) to run more than one replica or autoscale" }}
{{- end }}
{{- if and (eq .Values.backend "nats") (not .Values.nats.url) }}
{{- fail "backend \"nats\" needs nats.url" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) }}
{{- fail "tls.enabled needs tls.existingSecret (a kubernetes.io/tls Secret; the chart never inlines key material)" }}
{{- end }}
{{- if and .Values.webhooks.enabled (not .Values.webhooks.secrets) }}
{{- fail "webhooks.enabled needs webhooks.secrets: {<tenant>: {<provider>: {secretName: ..., key: ...}}} (every callback would be refused)" }}
{{- end }}
{{- if and .Values.webhooks.ingress.enabled (not .Values.webhooks.enabled) }}
{{- fail "webhooks.ingress.enabled needs webhooks.enabled" }}
{{- end }}
{{- if and .Values.webhooks.ingress.enabled (not .Values.webhooks.ingress.host) }}
{{- fail "webhooks.ingress.enabled needs webhooks.ingress.host (the public host the providers post to)" }}
{{- end }}
{{- end }}

{{/* The config key of a provider's secret file. */}}
{{- define "call-outcome.webhookFileKey" -}}
{{- $keys := dict "telnyx" "public_keys_file" "twilio" "auth_tokens_file" "signalwire" "signing_keys_file" "vonage" "signature_secrets_file" "plivo" "auth_tokens_file" -}}
{{- get $keys . -}}
{{- end }}

{{/* A volume name for a tenant's provider Secret (tenant names may hold dots). */}}
{{- define "call-outcome.webhookVolume" -}}
{{- printf "webhook-%s" (sha256sum . | trunc 12) -}}
{{- end }}

{{/* The public URL the providers sign: the value, else the Ingress host over https. */}}
{{- define "call-outcome.webhookBaseUrl" -}}
{{- if .Values.webhooks.publicBaseUrl -}}
{{- .Values.webhooks.publicBaseUrl -}}
{{- else if and .Values.webhooks.ingress.enabled .Values.webhooks.ingress.host -}}
{{- printf "https://%s" .Values.webhooks.ingress.host -}}
{{- end -}}
{{- end }}

{{/*
A PromQL label-matcher block from the release's selector and one more matcher, either
of which may be empty: (list "namespace=\"x\"" "scope=\"route\"") -> {namespace="x",scope="route"}.
*/}}
{{- define "call-outcome.matchers" -}}
{{- $parts := list -}}
{{- range . }}{{ if . }}{{ $parts = append $parts . }}{{ end }}{{ end -}}
{{- if $parts }}{{ printf "{%s}" (join "," $parts) }}{{ end -}}
{{- end }}
