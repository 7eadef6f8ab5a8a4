{{/* Names, truncated to the 63 characters Kubernetes allows. */}}
{{- define "tokenbroker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tokenbroker.fullname" -}}
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

{{- define "tokenbroker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tokenbroker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tokenbroker.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tokenbroker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tokenbroker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tokenbroker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image: by digest when given, else the tag, defaulting to appVersion. */}}
{{- define "tokenbroker.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if eq $tag "latest" }}
{{- fail "image.tag: latest names no release; use a version (default: the chart's appVersion) or image.digest" }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "tokenbroker.configMapName" -}}
{{- default (printf "%s-config" (include "tokenbroker.fullname" .)) .Values.existingConfigMap }}
{{- end }}

{{- define "tokenbroker.tlsSecretName" -}}
{{- if .Values.tls.secretName }}
{{- .Values.tls.secretName }}
{{- else if .Values.tls.certManager.enabled }}
{{- printf "%s-tls" (include "tokenbroker.fullname" .) }}
{{- else }}
{{- fail "tls.enabled: set tls.secretName (a kubernetes.io/tls Secret) or tls.certManager.enabled" }}
{{- end }}
{{- end }}

{{/* Where the TLS files are mounted; listen.tls names them. */}}
{{- define "tokenbroker.tlsDir" -}}/run/secrets/tokenbroker/tls{{- end }}
{{- define "tokenbroker.clientCADir" -}}/run/secrets/tokenbroker/client-ca{{- end }}

{{/* A listen address: bindAddress and a port, or "" (off) for port 0. */}}
{{- define "tokenbroker.addr" -}}
{{- $port := int (index . 1) }}
{{- if $port }}
{{- $host := (index . 0).Values.bindAddress }}
{{- if contains ":" $host }}{{ printf "[%s]:%d" $host $port | quote }}{{ else }}{{ printf "%s:%d" $host $port | quote }}{{ end }}
{{- else }}""{{ end }}
{{- end }}

{{/* The listen: section, written from ports and tls. */}}
{{- define "tokenbroker.listen" -}}
listen:
  grpc: {{ include "tokenbroker.addr" (list . .Values.ports.grpc) }}
  http: {{ include "tokenbroker.addr" (list . .Values.ports.http) }}
  admin: {{ include "tokenbroker.addr" (list . .Values.ports.admin) }}
  broker: {{ include "tokenbroker.addr" (list . .Values.ports.broker) }}
{{- if .Values.tls.enabled }}
  tls:
    cert_file: {{ include "tokenbroker.tlsDir" . }}/tls.crt
    key_file: {{ include "tokenbroker.tlsDir" . }}/tls.key
{{- if .Values.tls.clientCA.secretName }}
    client_ca_file: {{ include "tokenbroker.clientCADir" . }}/{{ .Values.tls.clientCA.key }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Service port names select the protocol in Istio (grpc-*, http-*, tls-*). With
listen.tls the token listeners speak TLS that the sidecar must pass through.
*/}}
{{- define "tokenbroker.protocol" -}}
{{- $ctx := index . 0 }}
{{- if $ctx.Values.tls.enabled }}tls{{ else }}{{ index . 1 }}{{ end }}
{{- end }}
