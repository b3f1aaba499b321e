"""deploy/cluster/ (issue 19, step 1): the custom resources and the admission policy of
cluster-wide baselines. They validate offline against every Kubernetes schema version from
1.30 on; objects are checked against the CRDs' own OpenAPI schemas; the policy's CEL is
evaluated with cel-python against the requests a node's corrald and an operator would send.
Nothing here runs an API server: what the real one adds (RBAC, the subresource split) is said
in the manifests' comments and not claimed by these tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.ship.test_deploy import VERSIONS

CLUSTER = Path(__file__).resolve().parents[2] / "deploy" / "cluster"
SA = "system:serviceaccount:corral-system:corrald"
NODE_KEY = "authentication.kubernetes.io/node-name"


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((CLUSTER / name).read_text()) if d]


def _crd(plural: str) -> dict[str, Any]:
    crd = next(d for d in _docs("crds.yaml") if d["spec"]["names"]["plural"] == plural)
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _policy() -> dict[str, Any]:
    return next(d for d in _docs("policy.yaml") if d["kind"] == "ValidatingAdmissionPolicy")


@pytest.mark.parametrize("name", sorted(p.name for p in CLUSTER.glob("*.yaml")))
def test_manifests_validate_strictly_against_every_version(name: str) -> None:
    for version in VERSIONS:
        for doc in _docs(name):
            kubernetes_validate.validate(doc, version, strict=True)


AGENT = {
    "apiVersion": "corral.io/v1alpha1",
    "kind": "Agent",
    "metadata": {"name": "deployment-support-bot-agent", "namespace": "support"},
    "spec": {
        "identity": {"kind": "Deployment", "name": "support-bot", "container": "agent"},
        "modes": {"exec": "enforce", "open": "alert", "connect": "off"},
        "promotion": {"auto": True, "minCoverage": 2, "quietPeriod": "30m"},
        "reviewed": [
            {"dimension": "connect", "object": "10.0.0.0/8:443", "source": "accepted"},
        ],
    },
}


def _observation(node: str, label: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "corral.io/v1alpha1",
        "kind": "Observation",
        "metadata": {
            "name": f"deployment-support-bot-agent.{node}",
            "namespace": "support",
            "labels": {"corral.io/node": label or node},
        },
        "spec": {
            "agent": "deployment-support-bot-agent",
            "nodeName": node,
            "schemaVersion": 4,
            "blocks": [
                {"dimension": "exec", "count": 2, "encoding": "msgpack+zlib+base64", "data": "eJw="}
            ],
        },
    }


def _schema_errors(plural: str, obj: dict[str, Any]) -> list[str]:
    v = jsonschema.Draft7Validator(_crd(plural))
    return [e.message for e in v.iter_errors(obj)]


def test_objects_match_the_crd_schemas() -> None:
    assert _schema_errors("agents", AGENT) == []
    assert _schema_errors("observations", _observation("node-a")) == []
    bad = copy.deepcopy(AGENT)
    bad["spec"]["modes"]["exec"] = "deny"
    assert any("'deny' is not one of" in e for e in _schema_errors("agents", bad))
    big = _observation("node-a")
    big["spec"]["blocks"] *= 25
    assert any("too long" in e for e in _schema_errors("observations", big))
    bad = copy.deepcopy(AGENT)
    bad["spec"]["modes"]["exec"] = False  # YAML's unquoted off
    assert _schema_errors("agents", bad)


def _cel(expr: str, activation: dict[str, Any]) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(expr)).evaluate(activation)


def admit(op: str, user: str, node: str | None, obj: Any, old: Any = None) -> tuple[bool, str]:
    """The policy as the API server applies it: matchConditions, variables, validations."""
    policy = _policy()["spec"]
    extra = {NODE_KEY: [node]} if node else {}
    request = {"operation": op, "userInfo": {"username": user, "extra": extra}}
    act: dict[str, Any] = {
        "request": celpy.json_to_cel(request),
        "object": celpy.json_to_cel(obj),
        "oldObject": celpy.json_to_cel(old),
    }
    if not all(bool(_cel(c["expression"], act)) for c in policy["matchConditions"]):
        return True, "not matched"
    variables: dict[str, Any] = {}
    for v in policy["variables"]:
        act["variables"] = celpy.json_to_cel({}) if not variables else _as_cel(variables)
        variables[v["name"]] = _cel(v["expression"], act)
    act["variables"] = _as_cel(variables)
    for rule in policy["validations"]:
        if not bool(_cel(rule["expression"], act)):
            msg = rule.get("message") or str(_cel(rule["messageExpression"], act))
            return False, msg
    return True, "allowed"


def _as_cel(values: dict[str, Any]) -> Any:
    return celpy.celtypes.MapType({celpy.celtypes.StringType(k): v for k, v in values.items()})


def test_a_node_writes_its_own_observations() -> None:
    for op in ("CREATE", "UPDATE"):
        ok, why = admit(op, SA, "node-a", _observation("node-a"), _observation("node-a"))
        assert ok, why
    ok, why = admit("DELETE", SA, "node-a", None, _observation("node-a"))
    assert ok, why


def test_a_node_cannot_write_another_nodes_observations() -> None:
    ok, why = admit("CREATE", SA, "node-a", _observation("node-b"))
    assert not ok and why == "corrald of node node-a may not write the observations of node node-b"
    ok, _ = admit("UPDATE", SA, "node-a", _observation("node-b"), _observation("node-b"))
    assert not ok
    ok, _ = admit("DELETE", SA, "node-a", None, _observation("node-b"))
    assert not ok, "deleting another node's evidence"


def test_a_node_cannot_label_its_observation_as_anothers() -> None:
    ok, why = admit("CREATE", SA, "node-a", _observation("node-a", label="node-b"))
    assert not ok and "corral.io/node label" in why


def test_a_token_without_a_node_is_refused() -> None:
    ok, why = admit("CREATE", SA, None, _observation("node-a"))
    assert not ok and "names no node" in why


def test_operators_are_left_to_rbac() -> None:
    ok, why = admit("DELETE", "alice@example.com", None, None, _observation("node-b"))
    assert ok and why == "not matched"


def test_crd_rules_are_cel_that_compiles() -> None:
    env = celpy.Environment()
    for plural in ("agents", "observations"):
        text = yaml.safe_dump(_crd(plural))
        for line in text.splitlines():
            if line.strip().startswith("- rule:") or line.strip().startswith("rule:"):
                env.compile(line.split("rule:", 1)[1].strip())
