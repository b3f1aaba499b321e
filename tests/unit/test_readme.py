"""What the README's walkthrough tells a new user about `make demo` is what examples/demo.py
does."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def walkthrough() -> str:
    text = (REPO / "README.md").read_text()
    return text.split("## Five-minute walkthrough", 1)[1].split("\n## ", 1)[0]


def demo_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("corral_demo", REPO / "examples" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_walkthrough_names_the_decoy_home_the_demo_uses() -> None:
    """The injected run reads `~/.aws/credentials`: a new user must learn from the README that
    this is a decoy the demo made, not their own file."""
    demo = demo_module()
    work = Path("/tmp/corral-demo-x")
    d = demo.Demo(bin=Path("/bin"), work=work, world=None)
    assert d.home == work / "home" and d.creds == work / "home" / ".aws" / "credentials"
    assert "EXAMPLE" in demo.FAKE_CREDENTIALS  # AWS's documented example keys
    source = (REPO / "examples" / "demo.py").read_text()
    assert "HOME=str(self.home)" in source and 'prefix="corral-demo-"' in source
    text = " ".join(walkthrough().split())
    assert "decoy HOME" in text and "`HOME=/tmp/corral-demo-*/home`" in text
    assert "fake `.aws/credentials`" in text and "never read or sent" in text
    assert re.search(r"/tmp/corral-demo-\w+/home/\.aws/credentials", walkthrough())
