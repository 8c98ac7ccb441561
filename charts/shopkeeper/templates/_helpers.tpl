{{/* Name prefix of every object of the release. */}}
{{- define "shopkeeper.fullname" -}}
{{- printf "%s-shopkeeper" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Recommended labels. */}}
{{- define "shopkeeper.labels" -}}
app.kubernetes.io/name: shop-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: shopkeeper
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Labels selecting the operator pod. */}}
{{- define "shopkeeper.selectorLabels" -}}
app.kubernetes.io/name: shop-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "shopkeeper.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "shopkeeper.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}
