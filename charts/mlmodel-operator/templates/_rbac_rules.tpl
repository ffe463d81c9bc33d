{{/*
The operator's RBAC, split by scope. The list mirrors operator/RBAC.md (every Kubernetes API
call the operator makes); tests/chart checks the two agree. Namespaced rules go into a
ClusterRole when the operator watches the whole cluster, else into one Role per watched
namespace.
*/}}
{{- define "mlmodel-operator.rules.namespaced" -}}
# kopf patches MLModels for its bookkeeping annotations; the operator writes status itself.
- apiGroups: ["serving.n1v1.io"]
  resources: ["mlmodels"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["serving.n1v1.io"]
  resources: ["mlmodels/status"]
  verbs: ["patch"]
# Children set blockOwnerDeletion on their ownerReference; with the
# OwnerReferencesPermissionEnforcement admission plugin that needs update on finalizers.
- apiGroups: ["serving.n1v1.io"]
  resources: ["mlmodels/finalizers"]
  verbs: ["update"]
# Children are written with server-side apply: patch, plus create when the object is new.
# Watched (list/watch) so drift in a child is repaired at once.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch"]
# delete: the HPA when autoscaling is turned off or KEDA takes over; the rules
# ConfigMap/PrometheusRule when the operator switches between the two.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# One NetworkPolicy per MLModel (watched: drift is repaired at once); delete when
# spec.serving.networkPolicy.enabled turns false.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# prometheus-operator, when its CRDs exist: the alert rules and the runtime pods' scrape config.
- apiGroups: ["monitoring.coreos.com"]
  resources: ["prometheusrules"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["podmonitors"]
  verbs: ["get", "create", "patch"]
{{- if .Values.keda.enabled }}
# Latency autoscaling (keda.enabled): delete when the latency target is removed.
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "create", "patch", "delete"]
{{- end }}
# Pods are only read: the status names why they are not ready (scheduler and kubelet
# reasons, exit codes, termination messages); watched so that happens within seconds.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{- define "mlmodel-operator.rules.cluster" -}}
{{- if not .Values.operator.watchNamespaces }}
# Cluster-wide kopf watches CRDs to notice served resources appearing and disappearing
# (with a namespace list the operator turns kopf's scanning off and needs none of this).
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end }}
{{- end }}
