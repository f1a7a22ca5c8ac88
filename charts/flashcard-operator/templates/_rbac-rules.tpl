{{/*
Least privilege: only the resources and verbs the operator's code uses, no wildcards. The source of
each rule is named next to it (paths under operator/src/). Keep in sync with manifests/rbac.yaml;
operator/tests/manifests.rs checks that both grant the same rules.
*/}}
{{- define "flashcard-operator.rules" -}}
# FlashcardPipelines: the controller watches them (Controller::new) and adds/removes its
# finalizer (Api::patch).
- apiGroups: ["flashcards.dev"]
  resources: ["flashcardpipelines"]
  verbs: ["get", "list", "watch", "patch"]
# Status conditions, queue, workers and budget (Api::patch_status).
- apiGroups: ["flashcards.dev"]
  resources: ["flashcardpipelines/status"]
  verbs: ["get", "patch"]
# API and worker Deployments: server-side apply (create/patch) and owned-object watch.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
# API Service and service ConfigMap: server-side apply and owned-object watch.
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Optional Ingress of the API (spec.api.ingress).
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["get", "list", "watch", "create", "patch"]
# PrometheusRule and ServiceMonitor built from spec.alerts (only when the CRDs exist).
- apiGroups: ["monitoring.coreos.com"]
  resources: ["prometheusrules", "servicemonitors"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Worker scale-down: list the worker pods and set controller.kubernetes.io/pod-deletion-cost so
# idle workers go first.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "patch"]
# Redis URL of a pipeline (spec.redis.urlSecretRef): read by name only, never listed or watched.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# Kubernetes Events about pipelines (kube::runtime::events::Recorder).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
