from __future__ import annotations

from pathlib import Path

import pytest

from corral import config
from corral.config import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_documented_file_equals_the_defaults() -> None:
    assert config.load(REPO / "config" / "corral.yaml") == config.Config()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"promotion": {"min_learning": "1 day"}},
            r"promotion\.min_learning: '1 day' is not a duration",
        ),
        ({"defaults": {"mode": "block"}}, r"defaults\.mode: 'block' is not one of off, observe"),
        ({"kernel": {"rate_limit": 0}}, r"kernel\.rate_limit: must be greater than 0"),
        ({"identity": {"kubelet": {"insecure_skip_tls_verify": "yes"}}}, r"expected true or false"),
        ({"identity": {"namespaces": "default"}}, r"identity\.namespaces: expected a list"),
        ({"learnign": {}}, r"learnign: unknown field"),
        ({"identity": {"kublet": {}}}, r"identity\.kublet: unknown field"),
        ({"kernel": []}, r"kernel: expected a mapping"),
        ({"kernel": {"ring_buffer_mib": 6}}, r"ring_buffer_mib: 6 is not a power of two"),
        ({"kernel": {"ring_buffer_mib": 2048}}, r"power of two from 1 to 1024"),
        ({"kernel": {"ring_buffer_mib": 0}}, r"ring_buffer_mib: must be greater than 0"),
        ({"kernel": {"recheck_interval": "10ms"}}, r"recheck_interval: .10ms. is too short: use 0"),
    ],
)
def test_errors_name_the_field_and_the_fix(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.from_dict(data)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        (90, 90.0),
        ("250ms", 0.25),
        ("15m", 900.0),
        ("24h", 86400.0),
        ("7d", 604800.0),
        ("2.5s", 2.5),
    ],
)
def test_durations(raw: object, seconds: float) -> None:
    assert config.parse_duration(raw, "x") == seconds


def test_file_errors_carry_the_path(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("kernel: {rate_limit: -1}\n")
    with pytest.raises(ConfigError, match=f"{bad}: kernel.rate_limit"):
        config.load(bad)
    bad.write_text("kernel: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(bad)
    with pytest.raises(ConfigError, match="no such file"):
        config.load(tmp_path / "missing.yaml")


def test_identity_source_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NODE_IP", raising=False)
    assert config.Config().identity_source() == "local"
    monkeypatch.setenv("NODE_IP", "10.0.0.5")
    c = config.Config()
    assert c.identity_source() == "kubernetes"
    assert c.kubelet_url() == "https://10.0.0.5:10250/pods"


def test_recheck_interval_zero_turns_rechecks_off() -> None:
    assert config.from_dict({"kernel": {"recheck_interval": 0}}).kernel.recheck_interval == 0
    assert config.from_dict({"kernel": {"recheck_interval": "1s"}}).kernel.recheck_interval == 1
