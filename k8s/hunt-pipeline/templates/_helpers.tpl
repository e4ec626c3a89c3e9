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

{{/* Call with the root context, or with (dict "ctx" $ "extra" $labels) to add an object's own
labels (router.podLabels, metrics.serviceMonitor.labels…), which win over commonLabels. */}}
{{- define "hunt-pipeline.labels" -}}
{{- $ctx := . }}
{{- if hasKey . "ctx" }}{{ $ctx = .ctx }}{{ end -}}
app.kubernetes.io/name: {{ include "hunt-pipeline.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
{{ include "hunt-pipeline.commonLabels" . }}
{{- end }}

{{/* The label keys the chart sets itself: commonLabels and the other label values may not
set them (values.schema.json refuses them; they are dropped here too), so no key appears
twice in a rendered mapping. */}}
{{- define "hunt-pipeline.reservedLabels" -}}
{{- list "app.kubernetes.io/name" "app.kubernetes.io/instance" "app.kubernetes.io/component" "app.kubernetes.io/version" "app.kubernetes.io/managed-by" "app.kubernetes.io/part-of" "helm.sh/chart" "hunt-pipeline/port" "hunt-pipeline/metrics" "hunt-pipeline/redis-client" | toJson }}
{{- end }}

{{/* The labels of every object but the ones selectors use: for pod templates, beside
hunt-pipeline.selectorLabels, so no key appears twice. Then the operator's commonLabels, merged
with the object's own labels (see hunt-pipeline.labels for the call with "extra"). */}}
{{- define "hunt-pipeline.commonLabels" -}}
{{- $ctx := . }}
{{- $extra := dict }}
{{- if hasKey . "ctx" }}{{ $ctx = .ctx }}{{ $extra = .extra | default dict }}{{ end -}}
helm.sh/chart: {{ printf "%s-%s" $ctx.Chart.Name $ctx.Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
app.kubernetes.io/part-of: hunt-pipeline
{{- $user := merge (deepCopy $extra) (deepCopy $ctx.Values.commonLabels) }}
{{- range include "hunt-pipeline.reservedLabels" $ctx | fromJsonArray }}
{{- $_ := unset $user . }}
{{- end }}
{{- with $user }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The metadata.annotations of an object, on a line of its own under metadata: commonAnnotations
merged with the object's own (which win). Call with the root context or
(dict "ctx" $ "extra" $annotations), right after the line before, as
`{{- include "hunt-pipeline.annotations" . }}`; renders nothing when both are empty. */}}
{{- define "hunt-pipeline.annotations" -}}
{{- $ctx := . }}
{{- $extra := dict }}
{{- if hasKey . "ctx" }}{{ $ctx = .ctx }}{{ $extra = .extra | default dict }}{{ end }}
{{- with merge (deepCopy $extra) (deepCopy $ctx.Values.commonAnnotations) }}
{{ dict "annotations" . | toYaml | indent 2 }}
{{- end }}
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

{{/* The chart's image (tier-router and shard-writer). */}}
{{- define "hunt-pipeline.image" -}}
{{- include "hunt-pipeline.imageRef" (dict "image" .Values.image "defaultTag" .Chart.AppVersion "global" .Values.global) }}
{{- end }}

{{/*
An image reference from (dict "image" $image "defaultTag" $tag "global" .Values.global):
[registry/]repository, then @digest when image.digest is set (the tag is then not used), else
:tag (defaultTag when the tag is empty). global.imageRegistry, when set, replaces image.registry.
*/}}
{{- define "hunt-pipeline.imageRef" -}}
{{- $image := .image }}
{{- $registry := $image.registry }}
{{- if and .global (hasKey .global "imageRegistry") }}
{{- $registry = .global.imageRegistry | default $registry }}
{{- end }}
{{- $repository := $image.repository }}
{{- if $registry }}
{{- $repository = printf "%s/%s" (trimSuffix "/" $registry) $repository }}
{{- end }}
{{- if $image.digest }}
{{- printf "%s@%s" $repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .defaultTag $image.tag) }}
{{- end }}
{{- end }}

{{/*
A probe: (dict "default" $probe "override" $values) renders the default probe with the override
merged over it, or nothing when the override says enabled: false. An override naming a handler
(exec, grpc, httpGet, tcpSocket) replaces the default's handler, unless it is the same handler,
whose fields are then merged.
*/}}
{{- define "hunt-pipeline.probe" -}}
{{- $override := .override | default dict }}
{{- $enabled := true }}
{{- if hasKey $override "enabled" }}{{ $enabled = $override.enabled }}{{ end }}
{{- if $enabled }}
{{- $probe := deepCopy .default }}
{{- $handlers := list "exec" "grpc" "httpGet" "tcpSocket" }}
{{- $overridesHandler := false }}
{{- range $handlers }}{{ if hasKey $override . }}{{ $overridesHandler = true }}{{ end }}{{ end }}
{{- if $overridesHandler }}
{{- range $handlers }}{{ if not (hasKey $override .) }}{{ $_ := unset $probe . }}{{ end }}{{ end }}
{{- end }}
{{- toYaml (mergeOverwrite $probe (omit (deepCopy $override) "enabled")) }}
{{- end }}
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
{{- $scheme := ternary "rediss" "redis" $external.tls.enabled }}
- name: HUNT_REDIS_URL
{{- if $external.sentinelMaster }}
  value: {{ printf "%s+sentinel://%s%s:%v/%s" $scheme $credentials $external.host (int $external.port) $external.sentinelMaster | quote }}
{{- else }}
  value: {{ printf "%s://%s%s:%v/%v" $scheme $credentials $external.host (int $external.port) (int $external.db) | quote }}
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
{{- if $external.tls.caSecret }}
- name: HUNT_REDIS_CA_FILE
  value: {{ printf "/etc/hunt/redis-ca/%s" $external.tls.caKey | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The volume mount and the volume of the Redis CA file (redis.external.tls.caSecret), when set.
*/}}
{{- define "hunt-pipeline.redisCaVolumeMount" -}}
{{- if and (eq .Values.redis.mode "external") .Values.redis.external.tls.caSecret }}
- name: redis-ca
  mountPath: /etc/hunt/redis-ca
  readOnly: true
{{- end }}
{{- end }}

{{- define "hunt-pipeline.redisCaVolume" -}}
{{- if and (eq .Values.redis.mode "external") .Values.redis.external.tls.caSecret }}
- name: redis-ca
  secret:
    secretName: {{ .Values.redis.external.tls.caSecret }}
    items:
      - key: {{ .Values.redis.external.tls.caKey }}
        path: {{ .Values.redis.external.tls.caKey }}
{{- end }}
{{- end }}
