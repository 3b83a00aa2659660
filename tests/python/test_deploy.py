"""deploy/k8s/ validated offline: every built-in object against the Kubernetes API schemas that
kubernetes-validate bundles (strict: unknown fields are errors), the kustomization's references,
and the pieces that must agree with the server (ports, grace period, config paths)."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from conftest import ROOT

K8S = ROOT / "deploy/k8s"
ENVOY = ROOT / "deploy/envoy"
VERSION = "1.34.0"


def documents(root: Path = K8S):
    """Every object the kustomization at `root` lists, following bases (directories) too."""
    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        path = (root / name).resolve()
        if path.is_dir():
            yield from documents(path)
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            yield name, doc


def test_every_object_validates_against_the_kubernetes_schemas():
    kinds = []
    for name, doc in documents():
        kinds.append(doc["kind"])
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            # A Prometheus Operator CRD: not in the bundled schemas; its shape is checked below.
            continue
        kubernetes_validate.validate(doc, VERSION, strict=True)
    # Myelin's StatefulSet, its headless Service and the one address (Envoy's), Envoy's
    # Deployment, NATS's StatefulSet and Service, the Namespace and the PodMonitor.
    assert sorted(kinds) == ["Deployment", "Namespace", "PodMonitor", "Service", "Service", "Service", "StatefulSet", "StatefulSet"], kinds


def test_the_validator_catches_mistakes():
    """The check above can fail: a typo'd field and a wrong type are refused."""
    statefulset = next(doc for _, doc in documents() if doc["kind"] == "StatefulSet")
    for mutate in (lambda d: d["spec"].__setitem__("replicas", "two"),
                   lambda d: d["spec"]["template"]["spec"]["containers"][0].__setitem__("prots", [])):
        broken = copy.deepcopy(statefulset)
        mutate(broken)
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, VERSION, strict=True)


def test_the_manifests_agree_with_the_server():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for generator in kustomization["configMapGenerator"]:
        for file in generator["files"]:
            assert (K8S / file).exists(), file
    config = (K8S / "myelin.toml").read_text()
    grace = float(re.search(r"shutdown_grace_s = ([0-9.]+)", config).group(1))
    docs = dict((doc["kind"] + "/" + doc["metadata"]["name"], doc) for _, doc in documents())
    pod = docs["StatefulSet/myelin"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > grace, "the kubelet must not kill the server before its own drain ends"
    container = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 50051, "http": 9464}
    assert 'grpc_addr = "0.0.0.0:50051"' in config and 'http_addr = "0.0.0.0:9464"' in config
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    for path in re.findall(r'"(/etc/myelin/[^"]+)"', config):
        assert any(path.startswith(m) for m in mounts), f"{path} is not mounted"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http", "scheme": "HTTPS"}
    selector = docs["StatefulSet/myelin"]["spec"]["selector"]["matchLabels"]
    assert docs["Service/myelin-replicas"]["spec"]["selector"] == selector
    assert docs["StatefulSet/myelin"]["spec"]["serviceName"] == "myelin-replicas"
    # The image deploy/image.sh builds, and the user it runs as.
    built = re.search(r"^image=(\S+)$", (ROOT / "deploy/image.sh").read_text(), re.M).group(1)
    assert container["image"] == built, (container["image"], built)
    assert pod["securityContext"]["runAsUser"] == 10001 and "myelin:x:10001:10001:" in (ROOT / "deploy/image.sh").read_text()
    assert docs["Service/myelin-replicas"]["spec"]["clusterIP"] == "None"
    # The server's own memory limit sits inside the pod's, with room for models and runtime.
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Gi")
    buffers = int(re.search(r"server_buffer_bytes = (\d+)", config).group(1))
    assert buffers <= 0.6 * int(limit[:-2]) * 2**30, (buffers, limit)
    monitor = docs["PodMonitor/myelin"]["spec"]
    readme = (K8S / "README.md").read_text()
    assert f"`{monitor['podMetricsEndpoints'][0]['tlsConfig']['serverName']}`" in readme, "the PodMonitor checks a name the README's certificate lacks"
    assert monitor["selector"]["matchLabels"] == selector
    assert monitor["podMetricsEndpoints"][0]["port"] == "http" and monitor["podMetricsEndpoints"][0]["path"] == "/metrics"


def test_envoy_is_the_one_address_and_its_files_are_where_its_config_says():
    """Service `myelin` is Envoy; Envoy's pod mounts the files deploy/envoy/envoy.yaml and
    cds.yaml name (its config, the watched cluster directory, the TLS certificate and the CA),
    and cds.yaml lists the StatefulSet's replicas by the names the ring is keyed on."""
    docs = dict((doc["kind"] + "/" + doc["metadata"]["name"], doc) for _, doc in documents())
    envoy = docs["Deployment/myelin-envoy"]["spec"]
    assert docs["Service/myelin"]["spec"]["selector"] == envoy["selector"]["matchLabels"] == envoy["template"]["metadata"]["labels"]
    assert envoy["selector"]["matchLabels"] != docs["StatefulSet/myelin"]["spec"]["selector"]["matchLabels"]
    container = envoy["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["-c", "/etc/envoy/envoy.yaml"]
    config_text = (ENVOY / "envoy.yaml").read_text() + (ENVOY / "cds.yaml").read_text()
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for path in set(re.findall(r"(/etc/(?:envoy|myelin)/[\w./-]+)", config_text)) | {"/etc/envoy/envoy.yaml"}:
        assert any(path == m or path.startswith(m + "/") for m in mounts), f"{path} is not mounted"
    # The watched directory must be a whole-directory mount: a subPath never sees updates.
    assert "subPath" not in mounts["/etc/envoy/cluster"]
    kustomization = yaml.safe_load((ENVOY / "kustomization.yaml").read_text())
    generated = {g["name"]: g for g in kustomization["configMapGenerator"]}
    assert generated["myelin-envoy-cluster"]["files"] == ["cds.yaml"] and generated["myelin-envoy-cluster"]["options"]["disableNameSuffixHash"]
    volumes = {v["name"]: v for v in envoy["template"]["spec"]["volumes"]}
    assert volumes["cluster"]["configMap"]["name"] == "myelin-envoy-cluster"
    cluster = yaml.safe_load((ENVOY / "cds.yaml").read_text())["resources"][0]
    statefulset = docs["StatefulSet/myelin"]["spec"]
    endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    names = [f"myelin-{i}" for i in range(statefulset["replicas"])]
    assert [e["metadata"]["filter_metadata"]["envoy.lb"]["hash_key"] for e in endpoints] == names
    assert [e["endpoint"]["address"]["socket_address"]["address"] for e in endpoints] == \
        [f"{n}.{statefulset['serviceName']}.myelin.svc" for n in names]
    assert all(e["endpoint"]["address"]["socket_address"]["port_value"] == 50051 and e["endpoint"]["health_check_config"]["port_value"] == 9464
               for e in endpoints)
