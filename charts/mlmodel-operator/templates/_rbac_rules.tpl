{{/*
The operator's RBAC, split by scope. The list mirrors operator/RBAC.md (every Kubernetes API
call the operator makes); tests/chart checks the two agree. Namespaced rules go into a
ClusterRole when the operator watches the whole cluster, else into one Role per watched
namespace.
*/}}
{{- define "mlmodel-operator.rules.namespaced" -}}
- apiGroups: ["serving.n1v1.io"]
  resources: ["mlmodels"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["serving.n1v1.io"]
  resources: ["mlmodels/status"]
  verbs: ["patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "update"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "update"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "update"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["prometheusrules"]
  verbs: ["get", "list", "watch", "create", "patch", "update"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if and .Values.peering.enabled .Values.operator.watchNamespaces }}
# kopf keeps its keep-alives in a namespaced KopfPeering per watched namespace.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}

{{- define "mlmodel-operator.rules.cluster" -}}
# kopf watches CRDs to notice resources appearing; the operator reads the PrometheusRule CRD
# to choose between a PrometheusRule and a ConfigMap of rules.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- if .Values.operator.watchNamespaces }}
# kopf lists/watches namespaces to match its namespace list when not cluster-wide.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- if and .Values.peering.enabled (not .Values.operator.watchNamespaces) }}
# Cluster-wide kopf keeps its keep-alives in a ClusterKopfPeering.
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}
