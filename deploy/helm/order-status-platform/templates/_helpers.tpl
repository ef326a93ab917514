{{/* The release's name prefix: <release>-order-status-platform, or the release name when it already says so. */}}
{{- define "osp.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Names of one service's objects: <fullname>-<service>. Call with (dict "root" $ "name" $name). */}}
{{- define "osp.name" -}}
{{- printf "%s-%s" (include "osp.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "osp.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "osp.labels" -}}
{{ include "osp.selectorLabels" . }}
app.kubernetes.io/part-of: order-status-platform
app.kubernetes.io/version: {{ .root.Values.image.tag | default .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "osp.image" -}}
{{- $image := .service.image | default dict -}}
{{- $repository := $image.repository | default (printf "%s/%s" .root.Values.image.repository .name) -}}
{{- $tag := $image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}

{{- define "osp.databaseSecretName" -}}
{{- .service.database.existingSecret | default (printf "%s-db" (include "osp.name" .)) -}}
{{- end -}}

{{- define "osp.secretName" -}}
{{- .service.secret.existingSecret | default (include "osp.name" .) -}}
{{- end -}}

{{- define "osp.hasDatabase" -}}
{{- if and .service.database .service.database.name -}}true{{- end -}}
{{- end -}}

{{/*
DATABASE_URL from the service's credentials Secret: Kubernetes expands $(VAR) from the variables defined before it.
*/}}
{{- define "osp.databaseEnv" -}}
{{- $db := .root.Values.database -}}
- name: DATABASE_USERNAME
  valueFrom: {secretKeyRef: {name: {{ include "osp.databaseSecretName" . }}, key: username}}
- name: DATABASE_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ include "osp.databaseSecretName" . }}, key: password}}
- name: DATABASE_URL
  value: {{ printf "postgresql://$(DATABASE_USERNAME):$(DATABASE_PASSWORD)@%s:%v/%s%s" $db.host $db.port .service.database.name (ternary (printf "?%s" $db.options) "" (ne $db.options "")) | quote }}
{{- end -}}

{{/* The variables a service reads from Secrets: its own secret variables, its database. */}}
{{- define "osp.secretEnv" -}}
{{- range $variable, $_ := .service.secret.env }}
- name: {{ $variable }}
  valueFrom: {secretKeyRef: {name: {{ include "osp.secretName" $ }}, key: {{ $variable }}}}
{{- end }}
{{- if include "osp.hasDatabase" . }}
{{ include "osp.databaseEnv" . }}
{{- end }}
{{- end -}}

{{/* The pod-level settings every workload of the chart shares. */}}
{{- define "osp.podSpecCommon" -}}
automountServiceAccountToken: false
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets: {{ toYaml . | nindent 2 }}
{{- end }}
securityContext: {{ toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .root.Values.nodeSelector }}
nodeSelector: {{ toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.tolerations }}
tolerations: {{ toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.affinity }}
affinity: {{ toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
