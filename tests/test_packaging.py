"""The wheel carries every device package (a missing one breaks only installed copies, e.g. on the Pi)."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")

ROOT = Path(__file__).resolve().parent.parent


def test_every_device_package_is_in_the_wheel():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    device = ROOT / tool["package-dir"]["maskgate"]
    found = {".".join(("maskgate", *p.parent.relative_to(device).parts)) for p in device.rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
