{{/*
Chart name, truncated to 63 characters (the DNS-1123 label limit).
*/}}
{{- define "mlmodel-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: <release>-<chart>, or just <release> when the release name already holds the
chart name, so `helm install mlmodel-operator .` does not produce a doubled name.
*/}}
{{- define "mlmodel-operator.fullname" -}}
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

{{- define "mlmodel-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: stable across upgrades, so no chart version here (a Deployment's selector
is immutable).
*/}}
{{- define "mlmodel-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlmodel-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "mlmodel-operator.labels" -}}
helm.sh/chart: {{ include "mlmodel-operator.chart" . }}
{{ include "mlmodel-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: n1v1-model-serving
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "mlmodel-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mlmodel-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mlmodel-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The leader election Lease's name (in the release namespace).
*/}}
{{- define "mlmodel-operator.leaseName" -}}
{{- default (include "mlmodel-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
Watched namespaces, de-duplicated, in the order given.
*/}}
{{- define "mlmodel-operator.watchNamespaces" -}}
{{- .Values.operator.watchNamespaces | uniq | join "," }}
{{- end }}

{{/*
Service names are DNS-1123 labels (63 characters): shorten the full name, keep the suffix.
*/}}
{{- define "mlmodel-operator.leaderElectionRoleName" -}}
{{- printf "%s-leader-election" (include "mlmodel-operator.fullname" . | trunc 47 | trimSuffix "-") }}
{{- end }}

{{- define "mlmodel-operator.metricsServiceName" -}}
{{- printf "%s-metrics" (include "mlmodel-operator.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}
