#!/usr/bin/env python3
"""Offline checks of the Helm chart and the mesh wiring, run by scripts/test-chart.sh.

Prints one line per check, "PASS: ..." or "FAIL: ...", and exits 1 if any failed.

  chart-validate.py manifests FILE --kube-version V [--kube-version V]... --label NAME
                    [--cli src/cli.rs [--telemetry src/telemetry/config.rs] [--chart-defaults]]
      every rendered object validates (strict) against the Kubernetes schemas of each
      version; CRD objects whose schemas kubernetes-validate does not ship (ServiceMonitor)
      get a structural check instead; then the chart's production rules are asserted. With
      --cli: every variable the chart sets is one `serve` reads, every one `serve` reads is
      set, ConfigMap values parse as their types, and (--chart-defaults, for a render with the
      default values) the chart's defaults equal src/cli.rs's. OTEL_* variables are not clap
      flags: src/telemetry/config.rs reads them from the environment, so they are checked against
      the names it reads (--telemetry) instead.
  chart-validate.py helm4 CHART_DIR OUT_DIR
      Helm 4 (PyPI helm-python-sdk): lint default and ci/full-values.yaml for the chart's
      minimum Kubernetes, render both into OUT_DIR, reject wrong values via the schema, and
      compare NOTES.txt's Istio wiring with deploy/istio/.
  chart-validate.py mesh REPO_DIR
      deploy/istio and deploy/envoy-gateway: YAML parses; CRD objects are checked against
      the subset schemas below (apiVersion, kind, required fields, enums, no unknown fields
      in the parts we use); Kubernetes-native objects against kubernetes-validate. Then the
      wiring's rules: the provider is bounded and fail-closed, the policies send API paths to
      the gate, the proxies refuse header names with underscores, and access log formats
      write the path without its query and no credential header.
"""

import argparse
import json
import re
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

RESULTS = {"pass": 0, "fail": 0}


def check(name, ok, detail=""):
    if ok:
        RESULTS["pass"] += 1
        print(f"PASS: {name}")
    else:
        RESULTS["fail"] += 1
        print(f"FAIL: {name}" + (f": {detail}" if detail else ""))
    return ok


def attempt(name, fn):
    """Runs fn(); an exception or a falsy/str result is a failure (a str is the reason)."""
    try:
        result = fn()
    except jsonschema.ValidationError as error:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return check(name, False, f"{error.message} at {where}")
    except Exception as error:  # noqa: BLE001 - every failure is a reported check
        return check(name, False, f"{type(error).__name__}: {str(error)[:500]}")
    if isinstance(result, str):
        return check(name, False, result)
    return check(name, result is not False)


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def kn(obj):
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


# --- schemas for the CRD objects whose OpenAPI schemas are not available offline -----------

STR = {"type": "string"}
STRS = {"type": "array", "items": STR}
STRMAP = {"type": "object", "additionalProperties": STR}
DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
                   "namespace": STR, "labels": STRMAP, "annotations": STRMAP},
}


def crd(api_versions, kind, spec):
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"enum": api_versions},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
    }


def closed(props, required=()):
    return {"type": "object", "additionalProperties": False, "properties": props,
            "required": list(required)}


# Istio's MeshConfig.ExtensionProvider with its envoyExtAuthzGrpc variant (istio.io/api
# mesh/v1alpha1/config.proto, EnvoyExternalAuthorizationGrpcProvider).
EXT_AUTHZ_GRPC = closed({
    "service": STR, "port": PORT, "timeout": DURATION, "failOpen": {"type": "boolean"},
    "clearRouteCache": {"type": "boolean"}, "statusOnError": {"type": "string", "pattern": "^[1-5][0-9][0-9]$"},
    "includeRequestBodyInCheck": closed({
        "maxRequestBytes": {"type": "integer", "minimum": 1}, "allowPartialMessage": {"type": "boolean"},
        "packAsBytes": {"type": "boolean"}}),
}, required=["service", "port"])
EXTENSION_PROVIDER = {
    "type": "object", "required": ["name"],
    "properties": {"name": STR, "envoyExtAuthzGrpc": EXT_AUTHZ_GRPC},
    "minProperties": 2, "maxProperties": 2,
}
MESH_CONFIG = {"type": "object", "properties": {
    "extensionProviders": {"type": "array", "minItems": 1, "items": EXTENSION_PROVIDER},
    "accessLogFile": STR, "accessLogFormat": {"type": "string", "minLength": 1},
    "accessLogEncoding": {"enum": ["TEXT", "JSON"]}},
    "required": ["extensionProviders"]}

OPERATION = closed({k: STRS for k in (
    "hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths")})
SOURCE = closed({k: STRS for k in (
    "principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals", "namespaces",
    "notNamespaces", "ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks")})
AUTHORIZATION_POLICY_SPEC = {
    **closed({
        "selector": closed({"matchLabels": STRMAP}),
        "targetRef": {"type": "object"}, "targetRefs": {"type": "array"},
        "action": {"enum": ["ALLOW", "DENY", "AUDIT", "CUSTOM"]},
        "provider": closed({"name": STR}, required=["name"]),
        "rules": {"type": "array", "items": closed({
            "from": {"type": "array", "items": closed({"source": SOURCE}, ["source"])},
            "to": {"type": "array", "items": closed({"operation": OPERATION}, ["operation"])},
            "when": {"type": "array", "items": closed({"key": STR, "values": STRS, "notValues": STRS}, ["key"])},
        })},
    }),
    # Istio: a CUSTOM policy must name its provider (and only CUSTOM may).
    "if": {"properties": {"action": {"const": "CUSTOM"}}, "required": ["action"]},
    "then": {"required": ["provider"]},
    "else": {"not": {"required": ["provider"]}},
}

BACKEND_REF = closed({"group": STR, "kind": {"enum": ["Service", "ServiceImport", "Backend"]},
                      "name": STR, "namespace": STR, "port": PORT, "weight": {"type": "integer"}},
                     required=["name", "port"])
SECURITY_POLICY_SPEC = closed({
    "targetRef": {"type": "object"},
    "targetRefs": {"type": "array", "minItems": 1, "items": closed(
        {"group": STR, "kind": {"enum": ["Gateway", "HTTPRoute", "GRPCRoute"]}, "name": STR,
         "sectionName": STR}, required=["group", "kind", "name"])},
    "targetSelectors": {"type": "array"},
    "extAuth": {
        **closed({
            "grpc": closed({"backendRefs": {"type": "array", "minItems": 1, "items": BACKEND_REF},
                            "backendSettings": {"type": "object"}}, required=["backendRefs"]),
            "http": {"type": "object"},
            "headersToExtAuth": STRS, "bodyToExtAuth": {"type": "object"},
            "timeout": DURATION, "failOpen": {"type": "boolean"},
            "recomputeRoute": {"type": "boolean"}, "contextExtensions": {"type": "array"},
        }),
        "oneOf": [{"required": ["grpc"]}, {"required": ["http"]}],
    },
    "jwt": {"type": "object"}, "oidc": {"type": "object"}, "basicAuth": {"type": "object"},
    "apiKeyAuth": {"type": "object"}, "cors": {"type": "object"}, "authorization": {"type": "object"},
})
POLICY_TARGET_REFS = {"type": "array", "minItems": 1, "items": closed(
    {"group": STR, "kind": STR, "name": STR, "sectionName": STR}, required=["group", "kind", "name"])}
# Envoy Gateway's ClientTrafficPolicy (api/v1alpha1/clienttrafficpolicy_types.go): it attaches
# to Gateways (or ListenerSets); headers is the part we use.
CLIENT_TRAFFIC_POLICY_SPEC = closed({
    "targetRef": {"type": "object"}, "targetSelectors": {"type": "array"},
    "targetRefs": {**POLICY_TARGET_REFS, "items": {**POLICY_TARGET_REFS["items"], "properties": {
        **POLICY_TARGET_REFS["items"]["properties"],
        "group": {"const": "gateway.networking.k8s.io"}, "kind": {"enum": ["Gateway", "ListenerSet"]}}}},
    "headers": closed({
        "enableEnvoyHeaders": {"type": "boolean"}, "disableRateLimitHeaders": {"type": "boolean"},
        "xForwardedClientCert": {"type": "object"},
        "withUnderscoresAction": {"enum": ["Allow", "RejectRequest", "DropHeader"]},
        "preserveXRequestID": {"type": "boolean"},
        "requestID": {"enum": ["PreserveOrGenerate", "Preserve", "Generate", "Disable"]},
        "earlyRequestHeaders": {"type": "object"}, "lateResponseHeaders": {"type": "object"},
        "host": {"type": "object"}, "maxRequestHeaderLimit": {"type": ["string", "integer"]},
    }),
    **{k: {"type": "object"} for k in ("tcpKeepalive", "proxyProtocol", "clientIPDetection", "tls", "path",
                                       "timeout", "connection", "http1", "http2", "http3", "grpc",
                                       "healthCheck", "scheme")},
    "enableProxyProtocol": {"type": "boolean"},
})
# Envoy Gateway's EnvoyProxy (api/v1alpha1/envoyproxy_types.go and
# envoyproxy_accesslogging_types.go): telemetry.accessLog is the part we use.
ENVOY_PROXY_SPEC = closed({
    "telemetry": closed({
        "accessLog": closed({
            "disable": {"type": "boolean"},
            "settings": {"type": "array", "minItems": 1, "items": closed({
                "format": {**closed({"type": {"enum": ["Text", "JSON"]}, "text": STR, "json": STRMAP}),
                           "anyOf": [{"required": ["text"]}, {"required": ["json"]}]},
                "matches": STRS,
                "sinks": {"type": "array", "minItems": 1, "items": closed({
                    "type": {"enum": ["ALS", "File", "OpenTelemetry"]},
                    "file": closed({"path": {"type": "string", "minLength": 1}}),
                    "als": {"type": "object"}, "openTelemetry": {"type": "object"},
                }, required=["type"])},
                "type": {"enum": ["Listener", "Route", "Upstream"]},
            }, required=["sinks"])},
        }),
        **{k: {"type": "object"} for k in ("tracing", "metrics", "requestID", "healthCheckLog")},
    }),
    **{k: {} for k in ("provider", "logging", "bootstrap", "concurrency", "routingType", "extraArgs",
                       "mergeGateways", "mergeBackends", "shutdown", "filterOrder", "backendTLS", "ipFamily",
                       "preserveRouteOrder", "luaValidation", "lua", "dynamicModules", "geoIP")},
    "mergeType": {"enum": ["Replace", "StrategicMerge", "JSONMerge"]},
})
REFERENCE_GRANT_SPEC = closed({
    "from": {"type": "array", "minItems": 1, "items": closed(
        {"group": STR, "kind": STR, "namespace": STR}, required=["group", "kind", "namespace"])},
    "to": {"type": "array", "minItems": 1, "items": closed(
        {"group": STR, "kind": STR, "name": STR}, required=["group", "kind"])},
}, required=["from", "to"])
# Istio's EnvoyFilter (istio.io/api networking/v1alpha3/envoy_filter.proto): the listener
# match and the patch; the patch value is Envoy's own config, checked by cmd_mesh's rules.
ENVOY_FILTER_SPEC = closed({
    "workloadSelector": closed({"labels": STRMAP}, required=["labels"]),
    "targetRefs": {"type": "array"},
    "priority": {"type": "integer"},
    "configPatches": {"type": "array", "minItems": 1, "items": closed({
        "applyTo": {"enum": ["LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER",
                             "ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE", "CLUSTER",
                             "EXTENSION_CONFIG", "BOOTSTRAP", "LISTENER_FILTER"]},
        "match": closed({
            "context": {"enum": ["ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY", "WAYPOINT"]},
            "proxy": closed({"proxyVersion": STR, "metadata": STRMAP}),
            "listener": closed({
                "portNumber": PORT, "portName": STR, "listenerFilter": STR, "name": STR,
                "filterChain": closed({
                    "name": STR, "sni": STR, "transportProtocol": STR, "applicationProtocols": STR,
                    "destinationPort": PORT,
                    "filter": closed({"name": STR, "subFilter": closed({"name": STR})}),
                }),
            }),
            "routeConfiguration": {"type": "object"}, "cluster": {"type": "object"},
            "waypoint": {"type": "object"},
        }),
        "patch": closed({
            "operation": {"enum": ["MERGE", "ADD", "REMOVE", "INSERT_BEFORE", "INSERT_AFTER",
                                   "INSERT_FIRST", "REPLACE", "MERGE_AND_REPLACE_LIST"]},
            "value": {"type": "object"},
            "filterClass": {"enum": ["UNSPECIFIED", "AUTHN", "AUTHZ", "STATS"]},
        }, required=["operation"]),
    }, required=["applyTo", "patch"])},
}, required=["configPatches"])
SERVICE_MONITOR_SPEC = {"type": "object", "required": ["selector", "endpoints"], "properties": {
    "selector": closed({"matchLabels": STRMAP, "matchExpressions": {"type": "array"}}),
    "namespaceSelector": closed({"matchNames": STRS, "any": {"type": "boolean"}}),
    "endpoints": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["port"],
        "properties": {"port": STR, "path": {"type": "string", "pattern": "^/"},
                       "interval": DURATION, "scrapeTimeout": DURATION}}},
}}

CRD_SCHEMAS = {
    "AuthorizationPolicy": crd(["security.istio.io/v1", "security.istio.io/v1beta1"],
                               "AuthorizationPolicy", AUTHORIZATION_POLICY_SPEC),
    "IstioOperator": crd(["install.istio.io/v1alpha1"], "IstioOperator",
                         {"type": "object", "required": ["meshConfig"],
                          "properties": {"meshConfig": MESH_CONFIG}}),
    "SecurityPolicy": crd(["gateway.envoyproxy.io/v1alpha1"], "SecurityPolicy", SECURITY_POLICY_SPEC),
    "ReferenceGrant": crd(["gateway.networking.k8s.io/v1beta1", "gateway.networking.k8s.io/v1"],
                          "ReferenceGrant", REFERENCE_GRANT_SPEC),
    "EnvoyFilter": crd(["networking.istio.io/v1alpha3"], "EnvoyFilter", ENVOY_FILTER_SPEC),
    "ClientTrafficPolicy": crd(["gateway.envoyproxy.io/v1alpha1"], "ClientTrafficPolicy",
                               CLIENT_TRAFFIC_POLICY_SPEC),
    "EnvoyProxy": crd(["gateway.envoyproxy.io/v1alpha1"], "EnvoyProxy", ENVOY_PROXY_SPEC),
    "ServiceMonitor": crd(["monitoring.coreos.com/v1"], "ServiceMonitor", SERVICE_MONITOR_SPEC),
}


def validate_crd(obj):
    schema = CRD_SCHEMAS.get(obj.get("kind"))
    if schema is None:
        return f"no schema for CRD kind {obj.get('kind')}"
    jsonschema.Draft7Validator(schema).validate(obj)
    return True


def validate_native(obj, version):
    kubernetes_validate.validate(obj, version, strict=True)
    return True


def seconds(duration):
    total = 0.0
    for number, unit in re.findall(r"([0-9.]+)(ms|s|m|h)", duration):
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def check_provider(where, provider):
    grpc = provider.get("envoyExtAuthzGrpc", {})
    check(f"{where}: provider {provider.get('name')} has an explicit timeout under Istio's 600s default",
          "timeout" in grpc and 0 < seconds(grpc["timeout"]) < 600, f"timeout={grpc.get('timeout')!r}")
    check(f"{where}: provider {provider.get('name')} is fail-closed (failOpen: false)",
          grpc.get("failOpen") is False, f"failOpen={grpc.get('failOpen')!r}")
    body = grpc.get("includeRequestBodyInCheck", {})
    check(f"{where}: provider {provider.get('name')} sends request bodies whole or marked partial, as raw bytes",
          body.get("maxRequestBytes", 0) >= 65536 and body.get("allowPartialMessage") is True
          and body.get("packAsBytes") is True, f"includeRequestBodyInCheck={body!r}")
    check(f"{where}: provider service is a cluster FQDN on the chart's gRPC port 9191",
          grpc.get("service", "").endswith(".svc.cluster.local") and grpc.get("port") == 9191,
          f"{grpc.get('service')}:{grpc.get('port')}")


# Headers with underscores: Rack reads x_auth_user_id and x-auth-user-id as one header, so the
# examples make the proxies refuse (or drop) them before anything else sees the request.
HCM = "envoy.filters.network.http_connection_manager"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def underscore_patch_contexts(envoy_filter):
    """The contexts whose HTTP connection manager the EnvoyFilter makes refuse or drop headers
    with underscores, or a str saying which patch does something else."""
    contexts = set()
    for i, patch in enumerate(envoy_filter["spec"]["configPatches"]):
        match = patch.get("match", {})
        value = patch["patch"].get("value", {}).get("typed_config", {})
        action = value.get("common_http_protocol_options", {}).get("headers_with_underscores_action")
        if not (patch["applyTo"] == "NETWORK_FILTER" and patch["patch"]["operation"] == "MERGE"
                and match.get("listener", {}).get("filterChain", {}).get("filter", {}).get("name") == HCM
                and value.get("@type") == HCM_TYPE and action in ("REJECT_REQUEST", "DROP_HEADER")):
            return (f"configPatches[{i}] does not MERGE headers_with_underscores_action: REJECT_REQUEST or "
                    f"DROP_HEADER into the {HCM} filter")
        contexts.add(match.get("context", "ANY"))
    return contexts


# Access logs: a request's query carries Redmine credentials (?key=, ?access_token=), so the
# examples' formats write the path without it, and no credential header.
PATH_HEADERS = {":path", "x-envoy-original-path", "referer"}
CREDENTIAL_HEADERS = {"authorization", "proxy-authorization", "cookie", "x-redmine-api-key"}


def log_format_problem(fmt):
    """Why an Envoy access log format could write a credential (a str), or None: it writes the
    path through %REQ_WITHOUT_QUERY(...)% and no operator writes a query or a credential header.
    Header names are compared as Rack compares them ('_' is '-')."""
    leaks, path = [], False
    for op, args in re.findall(r"%(REQ|REQ_WITHOUT_QUERY|CEL)\(([^)]*)\)", fmt):
        headers = {h.strip().lower().replace("_", "-") for h in args.split("?")}
        if op == "CEL":
            if re.search(r"request\.(path|query|headers|referer)\b", args):
                leaks.append(f"%CEL({args})%")
        elif headers & CREDENTIAL_HEADERS or (op == "REQ" and headers & PATH_HEADERS):
            leaks.append(f"%{op}({args})%")
        elif op == "REQ_WITHOUT_QUERY" and ":path" in headers:
            path = True
    if leaks:
        return f"writes a query or a credential: {', '.join(leaks)}"
    if not path:
        return "does not write the path as %REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%"
    return None


def check_mesh_access_log(where, mesh):
    """Istio's meshConfig access log: the format (also the built-in "envoy" Telemetry provider's)
    writes no query, and the encoding is the one istiod parses it with."""
    fmt = mesh.get("accessLogFormat")
    problem = log_format_problem(fmt) if fmt else "no accessLogFormat: Istio's default writes the query"
    check(f"{where}: accessLogFormat writes the path without its query and no credential header",
          problem is None, problem or "")
    is_json = bool(fmt) and fmt.lstrip().startswith("{")
    check(f"{where}: accessLogEncoding matches the format ({'JSON' if is_json else 'TEXT'}; otherwise "
          "istiod falls back to its default format, query included)",
          mesh.get("accessLogEncoding", "TEXT") == ("JSON" if is_json else "TEXT"),
          f"accessLogEncoding={mesh.get('accessLogEncoding')!r}")


# --- rendered chart ------------------------------------------------------------------------

def chart_rules(label, objs):
    """The chart's production rules, asserted on the rendered objects."""
    by_kind = {}
    for obj in objs:
        by_kind.setdefault(obj["kind"], []).append(obj)
    deployments = by_kind.get("Deployment", [])
    if not check(f"{label}: exactly one Deployment", len(deployments) == 1):
        return
    dep = deployments[0]
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    annotations = dep["spec"]["template"]["metadata"].get("annotations", {})
    check(f"{label}: pod template has the ConfigMap checksum annotation",
          re.fullmatch(r"[0-9a-f]{64}", annotations.get("checksum/config", "")) is not None)
    psc, csc = pod.get("securityContext", {}), container.get("securityContext", {})
    check(f"{label}: restricted securityContext (non-root, read-only root, drop ALL, no escalation, seccomp RuntimeDefault)",
          psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) != 0
          and csc.get("readOnlyRootFilesystem") is True
          and csc.get("allowPrivilegeEscalation") is False
          and csc.get("capabilities", {}).get("drop") == ["ALL"]
          and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
          and csc.get("seccompProfile", {}).get("type") == "RuntimeDefault", json.dumps([psc, csc]))
    check(f"{label}: no service account token in the pod", pod.get("automountServiceAccountToken") is False)
    ready, live, start = (container.get(p) for p in ("readinessProbe", "livenessProbe", "startupProbe"))
    check(f"{label}: readiness is a native gRPC probe on the gRPC port",
          bool(ready) and "grpc" in ready
          and ready["grpc"]["port"] == next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc"))
    check(f"{label}: liveness and startup are HTTP /healthz on the admin port (never the database)",
          bool(live) and bool(start)
          and all(p.get("httpGet", {}).get("path") == "/healthz" and p["httpGet"]["port"] == "http-admin"
                  for p in (live, start)))
    check(f"{label}: resources have requests and a memory limit",
          "cpu" in container.get("resources", {}).get("requests", {})
          and "memory" in container.get("resources", {}).get("limits", {}))
    check(f"{label}: topology spread constraints set", bool(pod.get("topologySpreadConstraints")))
    env = {e["name"]: e for e in container.get("env", [])}
    check(f"{label}: DATABASE_URL comes from a Secret, not a literal",
          "secretKeyRef" in env.get("DATABASE_URL", {}).get("valueFrom", {}))
    check(f"{label}: no secret in the ConfigMap",
          all(not re.search(r"(?i)url|secret|password", k) for cm in by_kind.get("ConfigMap", [])
              for k in cm.get("data", {})))
    services = by_kind.get("Service", [])
    ports = {p["name"]: p for s in services for p in s["spec"]["ports"]}
    check(f"{label}: Service port 'grpc' with appProtocol grpc, and the admin port",
          ports.get("grpc", {}).get("appProtocol") == "grpc" and "http-admin" in ports, json.dumps(ports))
    check(f"{label}: ServiceAccount without token automount",
          all(sa.get("automountServiceAccountToken") is False for sa in by_kind.get("ServiceAccount", [])))
    hpa = by_kind.get("HorizontalPodAutoscaler", [])
    check(f"{label}: HPA is autoscaling/v2 and the Deployment leaves replicas to it",
          all(h["apiVersion"] == "autoscaling/v2" for h in hpa) and (not hpa or "replicas" not in dep["spec"]))
    check(f"{label}: PodDisruptionBudget present", len(by_kind.get("PodDisruptionBudget", [])) == 1)
    tests = [p for p in by_kind.get("Pod", [])
             if p["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    check(f"{label}: helm test pod runs `redmine-authz healthcheck` against the Service",
          len(tests) == 1 and tests[0]["spec"]["containers"][0]["args"][:2]
          == ["healthcheck", "--addr"] and tests[0]["spec"]["containers"][0]["args"][2].split(":")[0]
          == services[0]["metadata"]["name"])
    for np in by_kind.get("NetworkPolicy", []):
        egress_ports = [p.get("port") for rule in np["spec"].get("egress", []) for p in rule.get("ports", [])]
        check(f"{label}: NetworkPolicy allows DNS egress (53/UDP and 53/TCP)", egress_ports.count(53) >= 2)
    for sm in by_kind.get("ServiceMonitor", []):
        check(f"{label}: ServiceMonitor scrapes the Service's admin port at /metrics",
              sm["spec"]["endpoints"][0]["port"] in ports and sm["spec"]["endpoints"][0]["path"] == "/metrics")


def cmd_manifests(args):
    try:
        objs = load_docs(args.file)
    except yaml.YAMLError as error:
        check(f"{args.label}: rendered manifests parse", False, str(error))
        return
    check(f"{args.label}: rendered manifests parse ({len(objs)} objects)", len(objs) > 0)
    for obj in objs:
        if "/" in obj.get("apiVersion", "") and obj["apiVersion"].split("/")[0] in (
                "monitoring.coreos.com",):
            print(f"SKIP: {args.label}: {kn(obj)} ({obj['apiVersion']}) is a CRD whose schema "
                  "kubernetes-validate does not ship; structural check instead")
            attempt(f"{args.label}: {kn(obj)} structural check", lambda o=obj: validate_crd(o))
            continue
        for version in args.kube_version:
            attempt(f"{args.label}: {kn(obj)} validates (strict) against Kubernetes {version}",
                    lambda o=obj, v=version: validate_native(o, v))
    chart_rules(args.label, objs)
    if args.cli:
        telemetry = Path(args.telemetry).read_text() if args.telemetry else ""
        cli_rules(args.label, objs, Path(args.cli).read_text(), args.chart_defaults, telemetry)


def cli_args(cli_source, struct):
    """The `#[arg(...)]` fields of one struct in src/cli.rs: {env: (field, type, default,
    hidden)}. default is the string clap would parse (None when there is none; "false" for a
    flag); hidden is whether clap hides the value (hide_env_values: URLs and secrets)."""
    body = re.search(r"pub struct " + struct + r" \{(.*?)\n\}", cli_source, re.S)
    if not body:
        raise ValueError(f"no struct {struct} in src/cli.rs")
    fields = {}
    for attr, field, ty in re.findall(r"#\[arg\(((?:(?!#\[).)*?)\)\]\s*pub ([a-z0-9_]+): ([^,\n]+),",
                                     body.group(1), re.S):
        env = re.search(r'env = "([A-Z0-9_]+)"', attr)
        if not env:
            continue
        ty = ty.strip()
        literal = re.search(r'default_value = "([^"]*)"', attr)
        typed = re.search(r"default_value_t = ([^,)]+)", attr)
        default = literal.group(1) if literal else typed.group(1).strip().replace("_", "") if typed else None
        if default is None and ty == "bool":
            default = "false"
        fields[env.group(1)] = (field, ty, default, "hide_env_values = true" in attr)
    return fields


# What a ConfigMap value must look like for the Rust type clap parses it into.
TYPE_PATTERNS = {"u16": r"[0-9]+", "u32": r"[0-9]+", "u64": r"[0-9]+", "bool": r"true|false"}


def cli_rules(label, objs, cli_source, chart_defaults=False, telemetry_source=""):
    """The names the chart hands the binary exist in its command line (src/cli.rs), every
    setting `serve` reads is wired, values parse, and the chart's defaults are the binary's.
    The OTEL_* family is read by src/telemetry/config.rs, not by clap: those names must be ones it
    reads (`get("OTEL_...")`)."""
    serve = {**cli_args(cli_source, "ServeArgs"), **cli_args(cli_source, "DecisionArgs")}
    known = set(re.findall(r'env = "([A-Z0-9_]+)"', cli_source)) | {"RUST_LOG"}
    otel_read = set(re.findall(r'get\("(OTEL_[A-Z0-9_]+)"\)', telemetry_source))
    config = {k: v for o in objs if o["kind"] == "ConfigMap" for k, v in o.get("data", {}).items()}
    secret_env = [e["name"] for o in objs if o["kind"] == "Deployment"
                  for c in o["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])
                  if "secretKeyRef" in e.get("valueFrom", {})]
    chart_env = set(config) | set(secret_env)
    otel = {k for k in chart_env if k.startswith("OTEL_")}
    unknown = sorted(chart_env - otel - known)
    check(f"{label}: every environment variable the chart sets is one `redmine-authz serve` reads",
          not unknown, f"unknown to src/cli.rs: {unknown}")
    unread = sorted(otel - otel_read)
    if otel or telemetry_source:
        check(f"{label}: every OTEL_* variable the chart sets is one src/telemetry/config.rs reads ({len(otel)} set)",
              bool(otel_read) and not unread,
              f"not read by src/telemetry/config.rs: {unread}" if otel_read
              else "no get(\"OTEL_...\") found: pass --telemetry src/telemetry/config.rs")
    secrets_in_otel_config = sorted(k for k in config if k.startswith("OTEL_EXPORTER_OTLP") and k.endswith("HEADERS"))
    check(f"{label}: OTLP headers (may carry a token) never come from the ConfigMap",
          not secrets_in_otel_config, f"in the ConfigMap: {secrets_in_otel_config}")
    # REDIS_URL and AUTHZ_CACHE_SECRET are optional: the default values configure neither.
    optional = {"REDIS_URL", "AUTHZ_CACHE_SECRET"} if chart_defaults else set()
    missing = sorted(set(serve) - set(config) - set(secret_env) - optional)
    check(f"{label}: every setting `redmine-authz serve` reads is set by the chart ({len(serve)} in src/cli.rs)",
          len(serve) >= 10 and not missing, f"not set by the chart: {missing}" if missing
          else f"only {sorted(serve)} parsed from ServeArgs/DecisionArgs")
    secrets_in_config = sorted(k for k in config if k in serve and serve[k][3])
    check(f"{label}: no setting src/cli.rs hides (URLs, the cache secret) comes from the ConfigMap",
          not secrets_in_config, f"in the ConfigMap: {secrets_in_config}")
    badly_typed = {k: v for k, v in config.items() if k in serve and serve[k][1] in TYPE_PATTERNS
                   and not re.fullmatch(TYPE_PATTERNS[serve[k][1]], v)}
    check(f"{label}: ConfigMap values parse as the types src/cli.rs reads them into", not badly_typed,
          json.dumps(badly_typed))
    if chart_defaults:
        differ = {k: {"chart": v, "cli.rs": serve[k][2]} for k, v in config.items()
                  if k in serve and serve[k][2] is not None and v != serve[k][2]}
        check(f"{label}: the chart's default values equal the defaults in src/cli.rs", not differ,
              json.dumps(differ))
    flags = {"--" + f.replace("_", "-") for f in re.findall(
        r"pub ([a-z_]+):", cli_source.split("pub struct HealthcheckArgs")[-1])}
    used = [a for o in objs if o["kind"] == "Pod" for c in o["spec"]["containers"]
            for a in c.get("args", []) if a.startswith("--")]
    check(f"{label}: the helm test pod's healthcheck flags exist ({' '.join(used)})",
          bool(used) and set(used) <= flags, f"known: {sorted(flags)}")


# --- Helm 4 --------------------------------------------------------------------------------

def cmd_helm4(args):
    from helm_python import chart as hchart

    chart_dir = Path(args.chart)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kube_min = "v" + re.search(r"([0-9]+\.[0-9]+)", yaml.safe_load(
        (chart_dir / "Chart.yaml").read_text())["kubeVersion"]).group(1) + ".0"
    full = yaml.safe_load((chart_dir / "ci" / "full-values.yaml").read_text())
    for label, values in (("default", None), ("full", full)):
        def lint(values=values):
            report = hchart.lint(str(chart_dir), values, strict=True, kube_version=kube_min)
            bad = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
            return True if not bad else json.dumps(bad)
        attempt(f"helm4 lint --strict --kube-version {kube_min} ({label} values)", lint)

        def render(label=label, values=values):
            ch = hchart.Chart.load(str(chart_dir))
            docs = ch.render(values, name="redmine-authz", namespace="redmine-authz", is_install=True)
            manifests = "\n---\n".join(v for k, v in sorted(docs.items()) if not k.endswith("NOTES.txt"))
            (out / f"helm4-{label}.yaml").write_text(manifests)
            (out / f"helm4-{label}-NOTES.txt").write_text(docs.get("redmine-authz/templates/NOTES.txt", ""))
            return True
        attempt(f"helm4 render ({label} values)", render)

    for label, values in BAD_VALUES:
        def rejected(values=values):
            ch = hchart.Chart.load(str(chart_dir))
            try:
                ch.render(values, name="redmine-authz", namespace="redmine-authz")
            except Exception as error:  # noqa: BLE001
                return True if "schema" in str(error) else f"failed, but not by the schema: {error}"
            return "rendered anyway"
        attempt(f"helm4: values.schema.json rejects {label}", rejected)

    # NOTES.txt prints the same Istio wiring as deploy/istio for the documented release.
    def notes_match():
        notes = (out / "helm4-default-NOTES.txt").read_text()
        block = re.search(r"^  meshConfig:\n((?:    .*\n)+)", notes, re.M)
        if not block:
            return "no meshConfig block in NOTES.txt"
        printed = yaml.safe_load("meshConfig:\n" + block.group(1))["meshConfig"]
        jsonschema.Draft7Validator(MESH_CONFIG).validate(printed)
        repo = yaml.safe_load((Path(args.repo) / "deploy/istio/istiod-values.yaml").read_text())["meshConfig"]
        return True if printed == repo else f"NOTES {printed} != deploy/istio {repo}"
    attempt("helm4: NOTES.txt's meshConfig validates and equals deploy/istio/istiod-values.yaml", notes_match)

    def notes_policy():
        notes = (out / "helm4-default-NOTES.txt").read_text()
        block = re.search(r"^  apiVersion: security.istio.io/v1\n((?:  .*\n)+)", notes, re.M)
        if not block:
            return "no AuthorizationPolicy in NOTES.txt"
        policy = yaml.safe_load("apiVersion: security.istio.io/v1\n" + "\n".join(
            line[2:] for line in block.group(1).splitlines()))
        validate_crd(policy)
        repo = yaml.safe_load((Path(args.repo) / "deploy/istio/authorization-policy.yaml").read_text())
        return True if policy["spec"] == repo["spec"] else f"NOTES {policy['spec']} != deploy/istio {repo['spec']}"
    attempt("helm4: NOTES.txt's AuthorizationPolicy validates and equals deploy/istio/authorization-policy.yaml",
            notes_policy)

    # Redis with several replicas needs a shared cache secret; NOTES.txt says so when it is
    # missing, and documents the one-off install-triggers command.
    def notes_for(values):
        ch = hchart.Chart.load(str(chart_dir))
        docs = ch.render(values, name="redmine-authz", namespace="redmine-authz", is_install=True)
        return docs.get("redmine-authz/templates/NOTES.txt", "")
    redis_only = {"database": {"url": "postgres://authz@db/redmine"}, "redis": {"url": "redis://redis:6379/0"}}
    attempt("helm4: NOTES.txt warns when redis.url is set without cache.secret",
            lambda: "WARNING: redis.url is set but cache.secret is not" in notes_for(redis_only)
            or "no warning")
    attempt("helm4: NOTES.txt does not warn once cache.secret is set, nor with one replica",
            lambda: all("cache.secret is not" not in notes_for(v) for v in (
                {**redis_only, "cache": {"secret": "0123456789abcdef0123"}},
                {**redis_only, "replicaCount": 1, "autoscaling": {"enabled": False}}))
            or "warned anyway")
    # A wrong Redmine time zone keeps revoked OAuth tokens valid for hours: the default (UTC) is
    # pointed out, an explicit other zone is not.
    attempt("helm4: NOTES.txt points out config.redmineTimezone when it is UTC, not when it is set",
            lambda: ("config.redmineTimezone is UTC" in (out / "helm4-default-NOTES.txt").read_text()
                     and "redmineTimezone" not in notes_for({"config": {"redmineTimezone": "Europe/Berlin"}}))
            or "not pointed out, or pointed out for Europe/Berlin")
    attempt("helm4: NOTES.txt documents `redmine-authz install-triggers` (no hook or Job does it)",
            lambda: "redmine-authz install-triggers --database-url" in (out / "helm4-default-NOTES.txt").read_text()
            or "not in NOTES.txt")


# Values the schema must reject (each also tried with the Helm 3 CLI by test-chart.sh).
BAD_VALUES = [
    ("replicaCount: \"three\"", {"replicaCount": "three"}),
    ("an unknown top-level key", {"replicaCuont": 2}),
    ("an unknown nested key (config.timezone)", {"config": {"timezone": "UTC"}}),
    ("service.type: Foo", {"service": {"type": "Foo"}}),
    ("a non-PostgreSQL database.url", {"database": {"url": "mysql://db/redmine"}}),
    ("ports.grpc: 70000", {"ports": {"grpc": 70000}}),
    ("a cache.secret shorter than 16 characters", {"cache": {"secret": "too-short"}}),
    ("cache.ttlSeconds: -1", {"cache": {"ttlSeconds": -1}}),
    ("redis.timeoutMs: 0", {"redis": {"timeoutMs": 0}}),
    ("config.listenInvalidations: \"no\"", {"config": {"listenInvalidations": "no"}}),
    ("config.auditLog: verbose", {"config": {"auditLog": "verbose"}}),
    ("otel.protocol: http/json", {"otel": {"protocol": "http/json"}}),
    ("otel.samplerArg: 2", {"otel": {"samplerArg": 2}}),
    ("an unknown otel key (otel.exporter)", {"otel": {"exporter": "otlp"}}),
]


# --- mesh wiring -------------------------------------------------------------------------------

def cmd_mesh(args):
    repo = Path(args.repo)
    files = sorted((repo / "deploy/istio").glob("*.yaml")) + sorted((repo / "deploy/envoy-gateway").glob("*.yaml"))
    check("deploy/istio and deploy/envoy-gateway have YAML files", len(files) >= 3, str(files))
    kinds = {}
    for path in files:
        rel = path.relative_to(repo)
        try:
            docs = load_docs(path)
        except yaml.YAMLError as error:
            check(f"{rel} parses", False, str(error))
            continue
        check(f"{rel} parses ({len(docs)} documents)", len(docs) > 0)
        for doc in docs:
            if "kind" not in doc:
                # Helm values for istiod: a bare meshConfig.
                attempt(f"{rel}: istiod values meshConfig validates",
                        lambda d=doc: jsonschema.Draft7Validator(MESH_CONFIG).validate(d.get("meshConfig")) or True)
                for provider in doc.get("meshConfig", {}).get("extensionProviders", []):
                    check_provider(str(rel), provider)
                check_mesh_access_log(str(rel), doc.get("meshConfig", {}))
                continue
            kinds.setdefault(doc["kind"], []).append(doc)
            if doc["kind"] in CRD_SCHEMAS:
                attempt(f"{rel}: {kn(doc)} ({doc['apiVersion']}) validates against its subset schema",
                        lambda d=doc: validate_crd(d))
            else:
                attempt(f"{rel}: {kn(doc)} validates (strict) against Kubernetes 1.27",
                        lambda d=doc: validate_native(d, "1.27.0"))
    for op in kinds.get("IstioOperator", []):
        for provider in op["spec"]["meshConfig"]["extensionProviders"]:
            check_provider("IstioOperator", provider)
        check_mesh_access_log("IstioOperator", op["spec"]["meshConfig"])
    for policy in kinds.get("AuthorizationPolicy", []):
        names = [op["spec"]["meshConfig"]["extensionProviders"][0]["name"] for op in kinds.get("IstioOperator", [])]
        check("AuthorizationPolicy is CUSTOM and names the registered provider",
              policy["spec"].get("action") == "CUSTOM" and policy["spec"]["provider"]["name"] in names)
        paths = [p for r in policy["spec"].get("rules", []) for t in r.get("to", [])
                 for p in t["operation"].get("paths", [])]
        excluded = [p for r in policy["spec"].get("rules", []) for t in r.get("to", [])
                    for p in t["operation"].get("notPaths", [])]
        check("AuthorizationPolicy sends Redmine's API paths to the gate",
              not any(re.fullmatch(p.replace(".", r"\.").replace("*", ".*"), "/issues.json") for p in excluded)
              and (not paths or any(p in ("*.json", "/*") for p in paths)))
    if "AuthorizationPolicy" in kinds:
        # The sidecars that ask the gate, and the gateway in front of them, refuse headers with
        # underscores (defence in depth: the gate reads and removes every spelling anyway).
        contexts = {}
        for ef in kinds.get("EnvoyFilter", []):
            found = underscore_patch_contexts(ef)
            if check(f"EnvoyFilter {ef['metadata'].get('namespace')}/{ef['metadata']['name']} only makes the HTTP "
                     "connection manager refuse or drop headers with underscores",
                     not isinstance(found, str), found if isinstance(found, str) else ""):
                selector = ef["spec"].get("workloadSelector", {}).get("labels")
                for context in found:
                    contexts.setdefault(context, []).append((ef["metadata"].get("namespace"), selector))
        for policy in kinds["AuthorizationPolicy"]:
            where = (policy["metadata"].get("namespace"), policy["spec"].get("selector", {}).get("matchLabels"))
            check("Istio: the sidecars the AuthorizationPolicy selects refuse headers with underscores (EnvoyFilter, "
                  "same namespace and selector, SIDECAR_INBOUND)",
                  any(where == w for c in ("SIDECAR_INBOUND", "ANY") for w in contexts.get(c, [])),
                  f"EnvoyFilter patches by context: {contexts}")
        check("Istio: the ingress gateway refuses headers with underscores (EnvoyFilter, GATEWAY)",
              bool(contexts.get("GATEWAY") or contexts.get("ANY")), f"EnvoyFilter patches by context: {contexts}")
    for sp in kinds.get("SecurityPolicy", []):
        ext = sp["spec"]["extAuth"]
        check("SecurityPolicy extAuth is gRPC, fail-closed, with a timeout",
              "grpc" in ext and ext.get("failOpen") is False and "timeout" in ext)
        for ref in ext["grpc"]["backendRefs"]:
            ns = ref.get("namespace", sp["metadata"]["namespace"])
            if ns != sp["metadata"]["namespace"]:
                grants = [g for g in kinds.get("ReferenceGrant", []) if g["metadata"].get("namespace") == ns
                          and any(f["kind"] == "SecurityPolicy" and f["namespace"] == sp["metadata"]["namespace"]
                                  for f in g["spec"]["from"])
                          and any(t["kind"] == "Service" and t.get("name") in (None, ref["name"]) for t in g["spec"]["to"])]
                check(f"cross-namespace backendRef {ns}/{ref['name']} has a ReferenceGrant", len(grants) == 1)
            check(f"SecurityPolicy backendRef {ref['name']} uses the chart's gRPC port 9191", ref["port"] == 9191)

    if "SecurityPolicy" in kinds:
        # Envoy Gateway's default access log writes the query: an EnvoyProxy replaces it.
        proxies = kinds.get("EnvoyProxy", [])
        check("Envoy Gateway: an EnvoyProxy sets the access log (the default one writes the query)",
              any("accessLog" in ep["spec"].get("telemetry", {}) for ep in proxies), f"{[kn(p) for p in proxies]}")
        for ep in proxies:
            log = ep["spec"].get("telemetry", {}).get("accessLog")
            if log is None or log.get("disable"):
                continue
            problems = []
            for i, setting in enumerate(log.get("settings", [])):
                fmt = setting.get("format", {})
                text = fmt.get("text") or " ".join(fmt.get("json", {}).values())
                problem = log_format_problem(text) if text else "no format: Envoy Gateway's default writes the query"
                if problem:
                    problems.append(f"settings[{i}] {problem}")
                if any(sink["type"] == "ALS" for sink in setting["sinks"]):
                    problems.append(f"settings[{i}] has an ALS sink, which is sent the whole path, query included")
            check(f"EnvoyProxy {ep['metadata']['name']}: every access log setting writes the path without its query "
                  "and no credential header", bool(log.get("settings")) and not problems,
                  "; ".join(problems) or "no settings: the default format writes the query")
        refusing = [ctp for ctp in kinds.get("ClientTrafficPolicy", [])
                    if ctp["spec"].get("headers", {}).get("withUnderscoresAction") in ("RejectRequest", "DropHeader")
                    and any(ref["kind"] == "Gateway" for ref in ctp["spec"].get("targetRefs", []))]
        check("Envoy Gateway: a ClientTrafficPolicy on a Gateway refuses or drops headers with underscores "
              "(headers.withUnderscoresAction RejectRequest or DropHeader)", len(refusing) >= 1,
              f"ClientTrafficPolicies: {[kn(c) for c in kinds.get('ClientTrafficPolicy', [])]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("manifests")
    m.add_argument("file")
    m.add_argument("--kube-version", action="append", required=True)
    m.add_argument("--label", required=True)
    m.add_argument("--cli", help="src/cli.rs, to check the environment names and flags the chart uses")
    m.add_argument("--telemetry", help="src/telemetry/config.rs, to check the OTEL_* names the chart sets")
    m.add_argument("--chart-defaults", action="store_true",
                   help="FILE was rendered with the chart's default values: compare them with src/cli.rs's")
    h = sub.add_parser("helm4")
    h.add_argument("chart")
    h.add_argument("out")
    h.add_argument("--repo", default=".")
    e = sub.add_parser("mesh")
    e.add_argument("repo")
    args = parser.parse_args()
    {"manifests": cmd_manifests, "helm4": cmd_helm4, "mesh": cmd_mesh}[args.command](args)
    print(f"(chart-validate {args.command}: {RESULTS['pass']} ok, {RESULTS['fail']} not ok)")
    return 1 if RESULTS["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
