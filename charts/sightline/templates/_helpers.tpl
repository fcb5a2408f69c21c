{{/* The release's name for its objects, at most 63 characters. */}}
{{- define "sightline.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The operator's objects. */}}
{{- define "sightline.operator" -}}
{{- printf "%s-operator" (include "sightline.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "sightline.labels" -}}
app.kubernetes.io/name: sightline
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sightline
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Labels that select the operator's pods. */}}
{{- define "sightline.selector" -}}
app.kubernetes.io/name: sightline
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* repository:tag of an image block, the tag defaulting to appVersion. */}}
{{- define "sightline.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/*
Where the operator keeps the vulnerability database or bundle it serves:
the claim's file; without a claim (bundles only), the detail store's
volume (sqlite) or an emptyDir.
*/}}
{{- define "sightline.vulnDbPath" -}}
{{- $v := .Values.vulnerabilityDatabase -}}
{{- if $v.existingClaim -}}
/var/lib/sightline/{{ $v.file }}
{{- else if empty $v.bundleKeys -}}
{{- fail "vulnerabilityDatabase.enabled needs existingClaim (a claim holding the database), or bundleKeys (to import signed bundles with `sightline bundle import`)" -}}
{{- else if eq .Values.detailStore.engine "sqlite" -}}
/var/lib/sightline-store/vulns.bundle
{{- else -}}
/var/lib/sightline/vulns.bundle
{{- end -}}
{{- end -}}

{{/*
Non-empty when the database needs a volume of its own.
*/}}
{{- define "sightline.vulnDbVolume" -}}
{{- $v := .Values.vulnerabilityDatabase -}}
{{- if or $v.existingClaim (ne .Values.detailStore.engine "sqlite") -}}
yes
{{- end -}}
{{- end -}}
