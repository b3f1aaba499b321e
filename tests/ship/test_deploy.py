"""deploy/: the manifests validate offline against the Kubernetes OpenAPI schemas (the ones
kubernetes-validate ships, every version from 1.30 on, strict: unknown fields fail), and they
agree with the daemon: the ConfigMap is a valid corral config whose paths are the DaemonSet's
mounts, the kubelet settings match the token/CA volume and the downward-API env."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

from corral import config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = sorted(p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")
HOST_PATHS = {"/sys/fs/bpf", "/sys/kernel/security", "/sys/kernel/tracing", "/sys/fs/cgroup",
              "/var/lib/corral", "/run/corral"}  # fmt: skip
CAPABILITIES = {"BPF", "PERFMON", "NET_ADMIN"}


def _versions() -> list[str]:
    """Every schema version the package ships from 1.30 on (appArmorProfile is a 1.30 field)."""
    out = []
    for v in all_versions():
        major, minor = (int(x) for x in v.lstrip("v").split(".")[:2])
        if (major, minor) >= (1, 30):
            out.append(f"{major}.{minor}.0")
    return sorted(set(out), key=lambda v: int(v.split(".")[1]))


VERSIONS = _versions()


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def one(kind: str) -> dict[str, Any]:
    found = [d for n in MANIFESTS for d in docs(n) if d["kind"] == kind]
    assert len(found) == 1, f"{kind}: {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def ds() -> dict[str, Any]:
    return one("DaemonSet")


@pytest.fixture(scope="module")
def cfg() -> config.Config:
    return config.from_dict(yaml.safe_load(one("ConfigMap")["data"]["corral.yaml"]))


def _container(ds: dict[str, Any], name: str = "corrald") -> dict[str, Any]:
    return next(c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def _mounts(ds: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """mountPath -> the volume behind it, for the corrald container."""
    vols = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    return {m["mountPath"]: vols[m["name"]] for m in _container(ds)["volumeMounts"]}


def test_schemas_for_several_versions_are_available() -> None:
    assert len(VERSIONS) >= 4, VERSIONS


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_validates_strictly_against_every_version(name: str) -> None:
    for version in VERSIONS:
        for doc in docs(name):
            kubernetes_validate.validate(doc, version, strict=True)


def test_kustomization_lists_every_manifest_but_the_pre_1_33_grant() -> None:
    k = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert sorted(k["resources"]) == sorted(set(MANIFESTS) - {"rbac-pre-1.33.yaml"})
    images = {c["image"].split(":")[0] for c in _all_containers(one("DaemonSet"))}
    assert images == {i["name"] for i in k["images"]}


def _all_containers(ds: dict[str, Any]) -> list[dict[str, Any]]:
    spec = ds["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def test_config_is_valid_and_kubernetes(cfg: config.Config) -> None:
    assert cfg.identity_source() == "kubernetes"
    assert "corral-system" in cfg.identity.exclude_namespaces


def test_config_paths_are_the_host_mounts(ds: dict[str, Any], cfg: config.Config) -> None:
    mounts = _mounts(ds)
    host = {p: v["hostPath"]["path"] for p, v in mounts.items() if "hostPath" in v}
    assert set(host.values()) >= HOST_PATHS
    assert all(p == host[p] for p in host), "mounted at the same path as on the host"
    assert host[cfg.state_dir] == cfg.state_dir
    assert str(Path(cfg.socket).parent) in host
    assert str(Path(cfg.pin_dir).parent) in host
    probe = _container(ds)["livenessProbe"]["exec"]["command"]
    assert probe[probe.index("--socket") + 1] == cfg.socket


def test_kubelet_token_and_ca_come_from_the_projected_volume(
    ds: dict[str, Any], cfg: config.Config
) -> None:
    kc = cfg.identity.kubelet
    assert Path(kc.token_file).parent == Path(kc.ca_file).parent
    vol = _mounts(ds)[str(Path(kc.token_file).parent)]
    paths = {
        item["path"]
        for src in vol["projected"]["sources"]
        for item in (
            [src["serviceAccountToken"]] if "serviceAccountToken" in src
            else src.get("configMap", src.get("downwardAPI", {})).get("items", [])
        )
    }  # fmt: skip
    assert {Path(kc.token_file).name, Path(kc.ca_file).name} <= paths
    assert ds["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert not kc.insecure_skip_tls_verify


def test_node_ip_and_name_from_the_downward_api(ds: dict[str, Any], cfg: config.Config) -> None:
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in _container(ds)["env"]}
    assert env == {"NODE_IP": "status.hostIP", "NODE_NAME": "spec.nodeName"}
    assert cfg.identity.kubelet.url == "", "the URL is derived from NODE_IP"


def test_capabilities_are_minimal_and_each_justified(ds: dict[str, Any]) -> None:
    sc = _container(ds)["securityContext"]
    assert sc["privileged"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == CAPABILITIES
    lines = (DEPLOY / "daemonset.yaml").read_text().splitlines()
    for cap in CAPABILITIES:
        i = next(n for n, ln in enumerate(lines) if ln.strip() == f"- {cap}")
        assert lines[i - 1].strip().startswith("#"), f"{cap} has no comment saying why"
    init = ds["spec"]["template"]["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["mount-bpffs"], "the only privileged container"
    text = (DEPLOY / "daemonset.yaml").read_text()
    assert re.search(r"#.*privileged init container", text)


def test_runs_everywhere_and_first(ds: dict[str, Any]) -> None:
    spec = ds["spec"]["template"]["spec"]
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["hostPID"] is True
    for c in _all_containers(ds):
        assert c["resources"]["requests"] and c["resources"]["limits"], c["name"]


def test_rbac_is_get_on_node_subresources_only() -> None:
    roles = {d["metadata"]["name"]: d for n in MANIFESTS for d in docs(n)
             if d["kind"] == "ClusterRole"}  # fmt: skip
    rules = {name: [(tuple(r["resources"]), tuple(r["verbs"])) for r in role["rules"]]
             for name, role in roles.items()}  # fmt: skip
    assert rules == {
        "corral-kubelet-pods": [(("nodes/pods",), ("get",))],
        "corral-kubelet-proxy-pre-1.33": [(("nodes/proxy",), ("get",))],
    }
    sa = one("ServiceAccount")
    for d in (d for n in MANIFESTS for d in docs(n) if d["kind"] == "ClusterRoleBinding"):
        assert d["subjects"] == [
            {"kind": "ServiceAccount", "name": sa["metadata"]["name"],
             "namespace": sa["metadata"]["namespace"]}
        ]  # fmt: skip
    assert (
        _container(one("DaemonSet"))
        and one("DaemonSet")["spec"]["template"]["spec"]["serviceAccountName"]
        == sa["metadata"]["name"]
    )
