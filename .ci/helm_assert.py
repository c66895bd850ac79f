#!/usr/bin/env python3
"""Assertions on the call-outcome chart's rendered manifests (`helm template --output-dir`).

Usage:
  helm_assert.py render CASE DIR       checks that hold for every render, plus CASE's own
  helm_assert.py checksum DIR NAME     prints the pod template's checksum/NAME ("none" when absent)
  helm_assert.py extract DIR OUT       writes config.toml and policy/policy.toml to OUT (the pod's layout)

Prints `ok - ...` per check; exits 1 on the first failure with `FAIL: ...`.
Needs PyYAML (installed with kubernetes-validate in .tools/venv by .ci/tools.sh).
"""
import json
import pathlib
import re
import sys
import tomllib

import yaml

ADMIN_PATHS = {"/healthz"}
SECRET_MARKERS = [
    "-----BEGIN",  # PEM material
    "PRIVATE KEY",
    "password",
    "secret_key",
    "api_key =",
    "bearer ",
]


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print(f"ok - {msg}")


def load(directory):
    docs = []
    for path in sorted(pathlib.Path(directory).rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                doc["__file"] = str(path)
                docs.append(doc)
    if not docs:
        fail(f"no manifests rendered in {directory}")
    return docs


def of_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def one(docs, kind):
    found = of_kind(docs, kind)
    if len(found) != 1:
        fail(f"expected exactly one {kind}, found {len(found)}")
    return found[0]


def hook(doc):
    return doc.get("metadata", {}).get("annotations", {}).get("helm.sh/hook")


def duration_seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    if not m:
        fail(f"cannot read duration {text!r}")
    n, unit = int(m.group(1)), m.group(2)
    return {"ms": n / 1000, "s": n, "m": n * 60, "h": n * 3600}[unit]


def main_container(dep):
    containers = dep["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "call-outcome")


def config_map(docs, key):
    """The one ConfigMap with `key` in its data."""
    found = [d for d in of_kind(docs, "ConfigMap") if key in d.get("data", {})]
    if len(found) != 1:
        fail(f"expected exactly one ConfigMap with {key}, found {len(found)}")
    return found[0]


def config_of(docs):
    cm = config_map(docs, "config.toml")
    text = cm["data"].get("config.toml")
    if text is None:
        fail("ConfigMap has no config.toml")
    try:
        return cm, tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        fail(f"rendered config.toml is not valid TOML: {e}")


def port_number(container, ref):
    if isinstance(ref, int):
        return ref
    for p in container.get("ports", []):
        if p["name"] == ref:
            return p["containerPort"]
    fail(f"port {ref!r} is not a container port")


def common(docs):
    """Checks every render must pass."""
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = main_container(dep)
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    # Restricted Pod Security Standard.
    check(psc.get("runAsNonRoot") is True and csc.get("runAsNonRoot") is True, "runAsNonRoot on pod and container")
    check((csc.get("runAsUser") or psc.get("runAsUser") or 0) > 0, "runs as a non-zero uid")
    check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
    check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation false")
    check(csc.get("privileged") in (None, False), "not privileged")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"] and not csc["capabilities"].get("add"),
          "all capabilities dropped, none added")
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
          and csc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccomp RuntimeDefault")
    check(pod.get("automountServiceAccountToken") is False, "no service account token mounted")
    check(not any(v.get("hostPath") for v in pod.get("volumes", [])), "no hostPath volumes")
    check(c["args"][:3] == ["serve", "--config", "/etc/call-outcome/config.toml"], "container runs serve --config")

    # Config: listen address, admin port, drain deadline.
    cm, config = config_of(docs)
    check(config.get("listen") == "0.0.0.0:50051", "config listens on 0.0.0.0:50051")
    grpc_port = port_number(c, "grpc")
    check(grpc_port == 50051, "container port grpc = 50051")
    admin_port = port_number(c, "admin")
    check(config.get("admin_listen") == f"0.0.0.0:{admin_port}", "config admin_listen matches the admin container port")
    check(config.get("log", {}).get("format") == "json", "JSON logs")
    check(config.get("policy_file") == "policy/policy.toml", "policy_file is policy/policy.toml next to config.toml")
    check(config.get("policy_watch", True) is True, "the policy file is watched (hot reload)")
    server, rate = config.get("server", {}), config.get("rate_limits", {})
    check(isinstance(server.get("max_in_flight"), int) and server["max_in_flight"] >= 0,
          "[server] max_in_flight (load shedding) rendered")
    check(isinstance(rate.get("enabled"), bool) and all(
        isinstance(rate.get(k), int) and rate[k] >= 1 for k in (
            "report_per_second", "report_burst", "classify_per_second", "classify_burst",
            "subscribe_per_minute", "subscribe_burst", "max_tenants")),
          "[rate_limits] rendered with every rate")
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    check("/etc/call-outcome/config.toml" in mounts and "/etc/call-outcome/policy" in mounts,
          "config.toml and the policy folder mounted side by side")
    check("subPath" not in mounts.get("/etc/call-outcome/policy", {}),
          "the policy is a folder mount (subPath mounts never see ConfigMap updates)")
    policy_volume = next((v for v in pod["volumes"] if v["name"] == mounts.get("/etc/call-outcome/policy", {}).get("name")), {})
    names = {d["metadata"]["name"] for d in of_kind(docs, "ConfigMap")}
    check(policy_volume.get("configMap", {}).get("name") in names,
          "the policy folder is the chart's policy ConfigMap")
    check(all(m.get("readOnly") for p, m in mounts.items() if p.startswith("/etc/")), "config and secret mounts read-only")

    # Probes on the admin port: liveness/startup HTTP /healthz, readiness native gRPC.
    for name in ("startupProbe", "livenessProbe"):
        probe = c.get(name)
        check(probe is not None and probe.get("httpGet", {}).get("path") in ADMIN_PATHS
              and port_number(c, probe["httpGet"]["port"]) == admin_port, f"{name} is HTTP /healthz on the admin port")
    rp = c.get("readinessProbe")
    check(rp is not None and rp.get("grpc", {}).get("port") == admin_port,
          "readinessProbe is a native gRPC probe on the admin port")
    check(rp["grpc"].get("service") == "calloutcome.v1.CallOutcomeService", "readiness checks the service's health status")

    # Termination grace > drain deadline + preStop sleep.
    grace = duration_seconds(config["shutdown_grace"])
    sleep = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    tgps = pod.get("terminationGracePeriodSeconds")
    check(isinstance(tgps, int) and tgps > grace + sleep,
          f"terminationGracePeriodSeconds {tgps} > shutdown_grace {grace:g}s + preStop {sleep}s")

    # Resources.
    res = c.get("resources", {})
    check(all(k in res.get("requests", {}) for k in ("cpu", "memory")) and "memory" in res.get("limits", {}),
          "cpu/memory requests and a memory limit")

    # Config rollout.
    checksum = dep["spec"]["template"]["metadata"].get("annotations", {}).get("checksum/config", "")
    check(re.fullmatch(r"[0-9a-f]{64}", checksum) is not None, "checksum/config annotation on the pod template")

    # Service: both ports, targeting named container ports.
    svc = one(docs, "Service")
    sports = {p["name"]: p for p in svc["spec"]["ports"]}
    webhooks = any(p["name"] == "webhooks" for p in c.get("ports", []))
    check(set(sports) == {"grpc", "admin"} | ({"webhooks"} if webhooks else set()),
          "Service exposes grpc and admin (and webhooks when its container port exists)")
    check(sports["grpc"]["targetPort"] == "grpc" and sports["admin"]["targetPort"] == "admin",
          "Service targets the named container ports")
    check(svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"], "Service selects the Deployment's pods")

    # Labels.
    labels = dep["metadata"]["labels"]
    check(all(k in labels for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                                    "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart")),
          "app.kubernetes.io/* and helm.sh/chart labels")

    # Secrets are referenced, never rendered.
    check(not of_kind(docs, "Secret"), "the chart renders no Secret")
    for cmap in of_kind(docs, "ConfigMap"):
        blob = "\n".join(cmap.get("data", {}).values())
        for marker in SECRET_MARKERS:
            check(marker.lower() not in blob.lower(), f"ConfigMap has no {marker!r}")
    # Every file path the config names under a secrets folder is a Secret volume mount.
    secret_mounts = {m["mountPath"] for m in c["volumeMounts"]
                     if any(v["name"] == m["name"] and "secret" in v for v in pod["volumes"])}
    paths = re.findall(r'"(/etc/call-outcome/[^"]+)"', cm["data"]["config.toml"])
    for path in paths:
        check(any(path.startswith(sm + "/") for sm in secret_mounts), f"{path} comes from a Secret volume")

    # Defaults that hold for every case here.
    check(len(of_kind(docs, "NetworkPolicy")) == 1, "NetworkPolicy rendered")
    pdb = one(docs, "PodDisruptionBudget")
    check(pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"], "PDB selects the pods")

    # helm test: health on the admin port and one real RPC.
    tests = [d for d in docs if d.get("kind") == "Pod" and hook(d) == "test"]
    check(len(tests) == 1, "one helm test pod")
    script = "\n".join(tests[0]["spec"]["containers"][0]["args"])
    check("grpc.health.v1.Health/Check" in script and f":{admin_port} " in script, "helm test checks gRPC health on the admin port")
    check("CallOutcomeService/Classify" in script and ":50051 " in script, "helm test makes a Classify RPC on the gRPC port")
    tsc = tests[0]["spec"]["containers"][0]["securityContext"]
    check(tests[0]["spec"]["securityContext"].get("runAsNonRoot") is True and tsc.get("capabilities", {}).get("drop") == ["ALL"],
          "helm test pod is restricted too")
    return dep, pod, c, config


def case_default(docs, dep, pod, c, config):
    check("webhooks" not in config and not of_kind(docs, "Ingress"), "default: no webhook listener, no Ingress")
    check(dep["spec"].get("replicas") == 1, "one replica")
    check("backend" not in config and "nats" not in config, "embedded backend")
    check(not of_kind(docs, "HorizontalPodAutoscaler"), "no HPA unless enabled")
    check(not of_kind(docs, "ServiceMonitor"), "no ServiceMonitor unless enabled")
    check("tls" not in config, "no [tls] unless enabled")
    check(config["rate_limits"]["enabled"] is False and "tenants" not in config["rate_limits"],
          "rate limits off by default, no overrides")
    check(config["server"]["max_in_flight"] == 2048, "max_in_flight 2048 by default")
    check(one(docs, "PodDisruptionBudget")["spec"].get("maxUnavailable") == 1, "PDB maxUnavailable 1")
    np = one(docs, "NetworkPolicy")["spec"]
    check(set(np["policyTypes"]) == {"Ingress", "Egress"}, "NetworkPolicy restricts ingress and egress")
    egress_ports = sorted(p["port"] for rule in np["egress"] for p in rule.get("ports", []))
    check(egress_ports == [53, 53], "default egress: DNS only")
    grpc_rule = next(r for r in np["ingress"] if r["ports"][0]["port"] == "grpc")
    check("from" not in grpc_rule, "gRPC port open to all pods by default (allowExternal)")
    check(not any(e["name"].startswith("OTEL_") for e in c.get("env", [])), "no OTEL_* variables unless enabled")


def case_tls_auth(docs, dep, pod, c, config):
    tls = config.get("tls", {})
    check(tls == {"cert_file": "/etc/call-outcome/tls/tls.crt", "key_file": "/etc/call-outcome/tls/tls.key",
                  "client_ca_file": "/etc/call-outcome/tls/ca.crt"}, "[tls] names the mounted certificate files")
    check(config.get("auth_file") == "/etc/call-outcome/secrets/auth.toml", "auth section is a mounted file")
    vols = {v["name"]: v for v in pod["volumes"]}
    check(vols["tls"]["secret"]["secretName"] == "call-outcome-tls", "TLS from the existing Secret")
    check(vols["auth"]["secret"]["secretName"] == "call-outcome-auth", "auth from the existing Secret")
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    check(mounts["tls"]["mountPath"] == "/etc/call-outcome/tls" and mounts["tls"]["readOnly"], "TLS mounted read-only")
    check(mounts["auth"]["mountPath"] == "/etc/call-outcome/secrets" and mounts["auth"]["readOnly"], "auth mounted read-only")
    check(c["readinessProbe"]["grpc"]["port"] != 50051, "probes stay off the TLS port")
    np = one(docs, "NetworkPolicy")["spec"]
    grpc_rule = next(r for r in np["ingress"] if r["ports"][0]["port"] == "grpc")
    client_label = grpc_rule["from"][0]["podSelector"]["matchLabels"]
    test = next(d for d in docs if hook(d) == "test")
    check(all(test["metadata"]["labels"].get(k) == v for k, v in client_label.items()),
          "gRPC ingress limited to client-labelled pods; the helm test pod carries the label")
    args = "\n".join(test["spec"]["containers"][0]["args"])
    check("-cacert /tls/ca.crt" in args and "-cert /client/tls.crt" in args and "-plaintext -max-time 10 -d '{\"outcome\"" not in args,
          "helm test speaks TLS with a client certificate to the gRPC port")
    env = {e["name"]: e for e in test["spec"]["containers"][0].get("env", [])}
    check(env["API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "call-outcome-test-api-key", "test API key from a Secret")


def case_ha_nats(docs, dep, pod, c, config):
    check(config.get("backend") == "nats", "backend nats")
    nats = config.get("nats", {})
    check(nats.get("url", "").startswith("nats://") and nats.get("replicas") == 3, "[nats] url and replicas")
    check(nats.get("credentials_file") == "/etc/call-outcome/nats/nats.creds", "NATS credentials are a mounted file")
    rate = config.get("rate_limits", {})
    check(rate.get("enabled") is True and rate.get("report_per_second") == 500 and rate.get("report_burst") == 2000,
          "[rate_limits] from values, defaults kept for unset keys")
    check(rate.get("tenants") == {"acme": {"report_per_second": 5000, "report_burst": 10000}},
          "per-tenant override rendered as [rate_limits.tenants.acme] with snake_case keys")
    vols = {v["name"]: v for v in pod["volumes"]}
    check(vols["nats-credentials"]["secret"]["secretName"] == "call-outcome-nats", "NATS credentials from the Secret")
    hpa = one(docs, "HorizontalPodAutoscaler")
    check(hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"] and hpa["spec"]["minReplicas"] == 3,
          "HPA targets the Deployment")
    check("replicas" not in dep["spec"], "replicas left to the HPA")
    check(one(docs, "PodDisruptionBudget")["spec"].get("minAvailable") == 2, "PDB minAvailable 2")
    env = {e["name"]: e.get("value") for e in c["env"]}
    check(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") == "http://otel-collector.observability.svc:4317"
          and env.get("OTEL_SERVICE_NAME") and "deployment.environment=ci" in env.get("OTEL_RESOURCE_ATTRIBUTES", ""),
          "OTEL_* variables set")
    np = one(docs, "NetworkPolicy")["spec"]
    egress_ports = sorted(p["port"] for rule in np["egress"] for p in rule.get("ports", []))
    check(egress_ports == [53, 53, 4222, 4317], "egress: DNS, NATS, OTLP")
    tsc = pod["topologySpreadConstraints"][0]
    check(tsc["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"],
          "topology spread selects the release's pods")


def case_metrics(docs, dep, pod, c, config):
    sm = one(docs, "ServiceMonitor")
    check(sm["apiVersion"] == "monitoring.coreos.com/v1", "ServiceMonitor apiVersion monitoring.coreos.com/v1")
    ep = sm["spec"]["endpoints"]
    check(len(ep) == 1 and ep[0]["port"] == "admin" and ep[0]["path"] == "/metrics" and ep[0]["interval"] == "15s",
          "ServiceMonitor scrapes /metrics on the admin port")
    svc = one(docs, "Service")
    check(all(svc["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items()),
          "ServiceMonitor selects the Service")
    check(sm["metadata"]["labels"].get("release") == "kube-prometheus-stack", "ServiceMonitor extra labels")
    check(set(sm["spec"].keys()) <= {"namespaceSelector", "selector", "endpoints"}
          and set(ep[0].keys()) <= {"port", "path", "scheme", "interval", "scrapeTimeout"},
          "ServiceMonitor has only known fields (no CRD schema offline)")
    check(config.get("metrics", {}).get("carrier_label") == "carrier"
          and config["metrics"].get("carrier_values") == ["carrier-a", "carrier-b"],
          "config.metrics renders [metrics] carrier_label and carrier_values")
    rule = one(docs, "PrometheusRule")
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    check(rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["metadata"]["labels"].get("release") == "kube-prometheus-stack",
          "PrometheusRule monitoring.coreos.com/v1 with the extra labels")
    check(set(alerts) == {"CallOutcomeDeclineRateHigh", "CallOutcomeRouteRetryAfterStorm", "CallOutcomeBackendErrors",
                          "CallOutcomeLoadShedding", "CallOutcomeSubscriberGaps", "CallOutcomeWebhookSignatureFailures",
                          "CallOutcomePolicyReloadRejected"}, f"PrometheusRule has the service's 7 alerts ({len(alerts)})")
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    check(all('namespace="telephony"' in e for e in exprs), "every alert expression uses the release's selector")
    check("by (carrier)" in exprs[0], "the decline alert is per carrier label")
    dashboards = [d for d in of_kind(docs, "ConfigMap") if d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    check(len(dashboards) == 1 and all(k.endswith(".json") for k in dashboards[0]["data"]),
          "one dashboard ConfigMap with the sidecar label and a .json key")
    board = json.loads(next(iter(dashboards[0]["data"].values())))
    check(board["uid"] == "call-outcome" and len(board["panels"]) >= 10
          and "__CARRIER__" not in json.dumps(board) and "by (carrier)" in json.dumps(board),
          "the dashboard is valid JSON with its panels, per carrier label")
    np = one(docs, "NetworkPolicy")["spec"]
    admin_rule = next(r for r in np["ingress"] if r["ports"][0]["port"] == "admin")
    check({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in admin_rule["from"],
          "monitoring namespace may scrape the admin port")


def case_values_ha(docs, dep, pod, c, config):
    check(dep["spec"].get("replicas") == 3, "values-ha: 3 replicas")
    check(config.get("backend") == "nats" and config["nats"]["replicas"] == 3, "values-ha: NATS with 3 stream replicas")
    urls = config["nats"]["url"].split(",")
    check(len(urls) == 3 and all(u.startswith("nats://nats-") and u.endswith(".nats-headless.nats.svc.cluster.local:4222") for u in urls),
          "values-ha: every node of the NATS chart's three-node cluster")
    check(config["nats"].get("request_timeout") == "5s" and config["nats"].get("duplicate_window") == "2m",
          "values-ha: the settings that matter in a failover rendered")
    check(one(docs, "PodDisruptionBudget")["spec"].get("maxUnavailable") == 1, "values-ha: PDB")
    keys = {t["topologyKey"] for t in pod["topologySpreadConstraints"]}
    check(keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}, "values-ha: spread over zones and nodes")
    check(all(t["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
              for t in pod["topologySpreadConstraints"]), "values-ha: spread selects the release's pods")
    check(not of_kind(docs, "HorizontalPodAutoscaler"), "values-ha: HPA off unless enabled")


def case_webhooks(docs, dep, pod, c, config):
    hooks = config.get("webhooks", {})
    check(hooks.get("listen") == "0.0.0.0:8080", "webhooks: listener on the webhook port")
    check(hooks.get("public_base_url") == "https://hooks.example.com",
          "webhooks: the public URL defaults to the Ingress host over https")
    tenants = hooks.get("tenants", {})
    check(tenants.get("acme", {}).get("twilio") == {"auth_tokens_file": "/etc/call-outcome/webhooks/acme/twilio/secret"}
          and tenants["acme"].get("telnyx") == {"public_keys_file": "/etc/call-outcome/webhooks/acme/telnyx/secret"}
          and tenants.get("globex.eu", {}).get("plivo") == {"auth_tokens_file": "/etc/call-outcome/webhooks/globex.eu/plivo/secret"},
          "webhooks: each tenant's provider reads its secret file (the right key per provider)")
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for tenant, provider, secret, key in [("acme", "twilio", "acme-twilio", "auth-token"),
                                          ("acme", "telnyx", "acme-telnyx", "public-key"),
                                          ("globex.eu", "plivo", "globex-plivo", "secret")]:
        name = mounts.get(f"/etc/call-outcome/webhooks/{tenant}/{provider}")
        check(name is not None, f"webhooks: {tenant}/{provider} Secret mounted")
        v = volumes[name]["secret"]
        check(v["secretName"] == secret and v["items"] == [{"key": key, "path": "secret"}],
              f"webhooks: {tenant}/{provider} mounts key {key} of Secret {secret} as the file")
    check(port_number(c, "webhooks") == 8080, "webhooks: container port")
    svc = one(docs, "Service")
    check(any(p["name"] == "webhooks" and p["port"] == 8080 and p["targetPort"] == "webhooks"
              for p in svc["spec"]["ports"]), "webhooks: Service port")
    ing = one(docs, "Ingress")["spec"]
    path = ing["rules"][0]["http"]["paths"][0]
    check(ing["rules"][0]["host"] == "hooks.example.com" and path["path"] == "/v1/webhooks"
          and path["pathType"] == "Prefix" and path["backend"]["service"]["port"] == {"name": "webhooks"},
          "webhooks: the Ingress routes /v1/webhooks of the host to the webhook port, nothing else")
    check(ing["tls"] == [{"hosts": ["hooks.example.com"], "secretName": "hooks-example-com-tls"}]
          and ing.get("ingressClassName") == "nginx", "webhooks: Ingress TLS and class")
    np = one(docs, "NetworkPolicy")["spec"]
    rule = next((r for r in np["ingress"] if r["ports"][0]["port"] == "webhooks"), None)
    check(rule is not None and "from" not in rule, "webhooks: the NetworkPolicy lets the providers (any source) reach the webhook port")


CASES = {
    "default": case_default,
    "webhooks": case_webhooks,
    "tls-auth": case_tls_auth,
    "ha-nats": case_ha_nats,
    "metrics": case_metrics,
    "values-ha": case_values_ha,
}


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "render":
        docs = load(sys.argv[3])
        dep, pod, c, config = common(docs)
        CASES[sys.argv[2]](docs, dep, pod, c, config)
    elif len(sys.argv) == 4 and sys.argv[1] == "checksum":
        dep = one(load(sys.argv[2]), "Deployment")
        print(dep["spec"]["template"]["metadata"]["annotations"].get(f"checksum/{sys.argv[3]}", "none"))
    elif len(sys.argv) == 4 and sys.argv[1] == "extract":
        # The pod's layout: config.toml, and policy.toml in the policy folder.
        out = pathlib.Path(sys.argv[3])
        (out / "policy").mkdir(parents=True, exist_ok=True)
        for cm in of_kind(load(sys.argv[2]), "ConfigMap"):
            if "config.toml" in cm["data"]:
                (out / "config.toml").write_text(cm["data"]["config.toml"])
            if "policy.toml" in cm["data"]:
                (out / "policy" / "policy.toml").write_text(cm["data"]["policy.toml"])
    else:
        fail(__doc__)


if __name__ == "__main__":
    main()
