{{- define "cortex.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cortex.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cortex.labels" -}}
app.kubernetes.io/name: {{ include "cortex.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "cortex.selector" -}}
app.kubernetes.io/name: {{ include "cortex.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "cortex.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* env: NATS_URL and, when the role has a Secret, its credentials. */}}
{{- define "cortex.natsEnv" -}}
- name: NATS_URL
  value: {{ .root.Values.nats.url | quote }}
{{- with (get .root.Values.nats.credentials .role) }}
- name: NATS_USER
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: NATS_USER}
- name: NATS_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: NATS_PASSWORD}
{{- end }}
{{- end -}}
