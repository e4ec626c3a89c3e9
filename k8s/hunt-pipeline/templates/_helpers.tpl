{{/* Names, labels and the Redis connection shared by every template. */}}

{{- define "hunt-pipeline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hunt-pipeline.fullname" -}}
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

{{- define "hunt-pipeline.labels" -}}
app.kubernetes.io/name: {{ include "hunt-pipeline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "hunt-pipeline.commonLabels" . }}
{{- end }}

{{/* The labels of every object but the ones selectors use: for pod templates, beside
hunt-pipeline.selectorLabels, so no key appears twice. */}}
{{- define "hunt-pipeline.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hunt-pipeline
{{- end }}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "router"). */}}
{{- define "hunt-pipeline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hunt-pipeline.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Pods carrying this label may reach the bundled Redis (NetworkPolicy). */}}
{{- define "hunt-pipeline.redisClientLabel" -}}
hunt-pipeline/redis-client: "true"
{{- end }}

{{- define "hunt-pipeline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hunt-pipeline.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "hunt-pipeline.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "hunt-pipeline.redisPort" -}}
{{- if eq .Values.redis.mode "bundled" }}6379{{ else }}{{ .Values.redis.external.port }}{{ end }}
{{- end }}

{{/*
Checks the settings no JSON schema can: the drain must end before Kubernetes kills the pod,
external Redis needs somewhere to connect, and Redis Cluster has only database 0.
*/}}
{{- define "hunt-pipeline.checks" -}}
{{- $router := .Values.router }}
{{- if le (mul (int $router.terminationGracePeriodSeconds) 1000) (int $router.shutdownGraceMs) }}
{{- fail (printf "router.terminationGracePeriodSeconds (%v s) must be longer than router.shutdownGraceMs (%v ms): Kubernetes would kill a router still draining" $router.terminationGracePeriodSeconds $router.shutdownGraceMs) }}
{{- end }}
{{- if ge (mul (int $router.readBlockMs) 3) (int $router.leaseTtlMs) }}
{{- fail "router.readBlockMs must be shorter than a third of router.leaseTtlMs" }}
{{- end }}
{{- if lt (int $router.maxApplyBatch) (int $router.applyBatch) }}
{{- fail "router.maxApplyBatch must be at least router.applyBatch" }}
{{- end }}
{{- if eq .Values.redis.mode "external" }}
{{- $external := .Values.redis.external }}
{{- if and $external.cluster $external.sentinelMaster }}
{{- fail "redis.external.sentinelMaster and redis.external.cluster exclude each other: Sentinel watches one primary, a Cluster fails over by itself" }}
{{- end }}
{{- if and $external.sentinelMaster $external.urlKey }}
{{- fail "redis.external.sentinelMaster needs host and port (the sentinels'), not urlKey: put a redis+sentinel:// URL in the Secret instead" }}
{{- end }}
{{- if and $external.cluster (ne (int $external.db) 0) }}
{{- fail "redis.external.cluster=true needs redis.external.db 0: Redis Cluster has only database 0" }}
{{- end }}
{{- if and $external.urlKey (not $external.existingSecret) }}
{{- fail "redis.external.urlKey needs redis.external.existingSecret: the Secret that holds the URL" }}
{{- end }}
{{- if and $external.passwordKey (not $external.existingSecret) }}
{{- fail "redis.external.passwordKey needs redis.external.existingSecret: the Secret that holds the password" }}
{{- end }}
{{- if and (not $external.urlKey) (not $external.host) }}
{{- fail "redis.mode=external needs redis.external.host (or redis.external.existingSecret with redis.external.urlKey)" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The env entries that hand a binary its Redis URL as HUNT_REDIS_URL. A password comes from a
Secret into REDIS_PASSWORD and is spliced into the URL by Kubernetes's $(VAR) expansion, so it
never appears in a rendered manifest. With redis.external.cluster, HUNT_REDIS_CLUSTER=true makes
the URL a seed of a Redis Cluster (a urlKey Secret may hold several, comma-separated); with
redis.external.sentinelMaster the URL names the sentinels and the service they monitor
(redis+sentinel://). redis.external.replicaAcks becomes HUNT_CLAIM_REPLICAS.
*/}}
{{- define "hunt-pipeline.redisEnv" -}}
{{- if eq .Values.redis.mode "bundled" }}
- name: HUNT_REDIS_URL
  value: {{ printf "redis://%s-redis:6379/" (include "hunt-pipeline.fullname" .) | quote }}
{{- else }}
{{- $external := .Values.redis.external }}
{{- if $external.urlKey }}
- name: HUNT_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $external.existingSecret }}
      key: {{ $external.urlKey }}
{{- else }}
{{- $credentials := "" }}
{{- if $external.passwordKey }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $external.existingSecret }}
      key: {{ $external.passwordKey }}
{{- $credentials = printf "%s:$(REDIS_PASSWORD)@" $external.username }}
{{- else if $external.username }}
{{- $credentials = printf "%s@" $external.username }}
{{- end }}
- name: HUNT_REDIS_URL
{{- if $external.sentinelMaster }}
  value: {{ printf "redis+sentinel://%s%s:%v/%s" $credentials $external.host (int $external.port) $external.sentinelMaster | quote }}
{{- else }}
  value: {{ printf "redis://%s%s:%v/%v" $credentials $external.host (int $external.port) (int $external.db) | quote }}
{{- end }}
{{- end }}
{{- if gt (int $external.replicaAcks) 0 }}
- name: HUNT_CLAIM_REPLICAS
  value: {{ $external.replicaAcks | int | quote }}
{{- end }}
{{- if $external.cluster }}
- name: HUNT_REDIS_CLUSTER
  value: "true"
{{- end }}
{{- end }}
{{- end }}

{{/* The restricted pod security profile every container of the chart runs under. */}}
{{- define "hunt-pipeline.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}
