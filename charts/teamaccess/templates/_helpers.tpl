{{- define "teamaccess.fullname" -}}
{{- if contains "teamaccess" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-teamaccess" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "teamaccess.serviceAccountName" -}}
{{- default (include "teamaccess.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "teamaccess.selectorLabels" -}}
app.kubernetes.io/name: teamaccess
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "teamaccess.labels" -}}
{{ include "teamaccess.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
