{{/*
Name of the chart, overridable with .Values.nameOverride.
*/}}
{{- define "flashcard-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name (release + chart name, unless the release name already contains it).
Truncated at 63 characters (DNS-1123 label limit).
*/}}
{{- define "flashcard-operator.fullname" -}}
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

{{- define "flashcard-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object of the chart.
*/}}
{{- define "flashcard-operator.labels" -}}
helm.sh/chart: {{ include "flashcard-operator.chart" . }}
{{ include "flashcard-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: flashcard-pipeline
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels of the operator pods (immutable once installed: keep them short and stable).
*/}}
{{- define "flashcard-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flashcard-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "flashcard-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flashcard-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Operator image reference: repository, then @digest if set, else :tag (default: appVersion).
*/}}
{{- define "flashcard-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Leader election is always on with more than one replica: two active controllers would fight over
the same objects. With one replica it stays on by default too, because a rolling update briefly
runs the old and the new pod side by side.
*/}}
{{- define "flashcard-operator.leaderElection" -}}
{{- $le := .Values.leaderElection }}
{{- if not (lt (int $le.renewDeadlineSeconds) (int $le.leaseDurationSeconds)) }}
{{- fail "leaderElection.renewDeadlineSeconds must be below leaderElection.leaseDurationSeconds" }}
{{- end }}
{{- if not (lt (int $le.retryPeriodSeconds) (int $le.renewDeadlineSeconds)) }}
{{- fail "leaderElection.retryPeriodSeconds must be below leaderElection.renewDeadlineSeconds" }}
{{- end }}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ else }}false{{ end }}
{{- end }}

{{/*
Namespace of the pipelines the operator watches ("" = every namespace).
*/}}
{{- define "flashcard-operator.watchNamespace" -}}
{{- .Values.watchNamespace }}
{{- end }}

{{/*
Namespace of the try-it-out Redis and the example pipeline: the watched namespace when the operator
watches only one, else the release namespace.
*/}}
{{- define "flashcard-operator.workloadNamespace" -}}
{{- default .Release.Namespace .Values.watchNamespace }}
{{- end }}

{{/*
Names of the optional try-it-out Redis.
*/}}
{{- define "flashcard-operator.redis.fullname" -}}
{{- printf "%s-redis" (include "flashcard-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "flashcard-operator.redis.labels" -}}
helm.sh/chart: {{ include "flashcard-operator.chart" . }}
{{ include "flashcard-operator.redis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.redis.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: flashcard-pipeline
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "flashcard-operator.redis.selectorLabels" -}}
app.kubernetes.io/name: redis
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{/*
Password of the try-it-out Redis: the value if given, else the one already stored in the release's
Secret (so upgrades keep it), else a new random one.
*/}}
{{- define "flashcard-operator.redis.password" -}}
{{- if .Values.redis.auth.password }}
{{- .Values.redis.auth.password }}
{{- else }}
{{- $existing := lookup "v1" "Secret" (include "flashcard-operator.workloadNamespace" .) (include "flashcard-operator.redis.fullname" .) }}
{{- if and $existing $existing.data (hasKey $existing.data "password") }}
{{- index $existing.data "password" | b64dec }}
{{- else }}
{{- randAlphaNum 32 }}
{{- end }}
{{- end }}
{{- end }}
