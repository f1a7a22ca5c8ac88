{{/*
Least privilege: only the resources and verbs the operator's code uses, no wildcards. The source of
each rule is named next to it (modules of operator/src/; the list with its reasons is
operator/src/rbac.rs, RBAC_RULES). The Lease rule of leader election is in rbac.yaml (a Role in the
release namespace). manifests/rbac.yaml grants the same; operator/tests/manifests.rs checks both
against RBAC_RULES.
*/}}
{{- define "flashcard-operator.rules" -}}
# FlashcardPipelines: the Controller's watch (run), the start-up CRD check (list) and the
# finalizer of deletionPolicy: Delete (reconcile::lifecycle: JSON patch).
- apiGroups: ["flashcards.dev"]
  resources: ["flashcardpipelines"]
  verbs: ["get", "list", "watch", "patch"]
# Status (reconcile::status: server-side apply of the status subresource).
- apiGroups: ["flashcards.dev"]
  resources: ["flashcardpipelines/status"]
  verbs: ["get", "patch"]
# API and worker Deployments (reconcile::apply: server-side apply; controller: watched by the
# managed-by label, so drift is repaired at once and pod readiness reaches the status;
# reconcile::lifecycle: deleted, and their pods waited for, before a deletionPolicy: Delete
# pipeline's keys are removed from Redis).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# API and worker Services, the service ConfigMap (reconcile::apply: server-side apply;
# controller: metadata-only watch by label).
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The API's Ingress (reconcile::apply: server-side apply; delete when spec.api.ingress is removed;
# controller: metadata-only watch by label).
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# PrometheusRule and ServiceMonitor from spec.alerts (reconcile::apply, only when the
# monitoring.coreos.com CRDs exist; API discovery needs no RBAC).
- apiGroups: ["monitoring.coreos.com"]
  resources: ["prometheusrules", "servicemonitors"]
  verbs: ["get", "create", "patch"]
# Worker pods: controller.kubernetes.io/pod-deletion-cost before a scale-down, so idle workers go
# first (reconcile::deletion_cost: merge patch by name).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["patch"]
# Kubernetes Events about pipelines (events: one Event per distinct change, a series for repeats).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# The Redis URL of a pipeline, spec.redis.urlSecretRef (connector): get by name, never list/watch.
# With rbac.restrictSecrets only the Secrets named in rbac.secretNames (and the chart's own Redis
# Secret when redis.enabled). Kept last: the optional resourceNames line ends the rule.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- if .Values.rbac.restrictSecrets }}
  resourceNames: {{ include "flashcard-operator.secretNames" . }}
{{- end }}
{{- if .Values.operator.redisAdmin.secretRef }}
# The Redis user of each pipeline on the operator's Redis, "<pipeline>-redis-credential"
# (reconcile::apply: server-side apply, not forced; no get, list or watch). Only with
# operator.redisAdmin.secretRef (rbac.rs MANAGED_REDIS_RULE).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create", "patch"]
{{- end }}
{{- end }}

{{/*
The Secret names the operator may read with rbac.restrictSecrets, as a JSON list: rbac.secretNames,
plus the try-it-out Redis Secret when redis.enabled.
*/}}
{{- define "flashcard-operator.secretNames" -}}
{{- $names := .Values.rbac.secretNames }}
{{- if .Values.redis.enabled }}
{{- $names = append $names (include "flashcard-operator.redis.fullname" .) }}
{{- end }}
{{- if not $names }}
{{- fail "rbac.restrictSecrets=true needs rbac.secretNames (the Secrets of spec.redis.urlSecretRef)" }}
{{- end }}
{{- $names | uniq | toJson }}
{{- end }}
