"""The systemd unit and install scripts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "maskgate.service"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_has_the_safety_settings():
    s = unit_settings()
    assert s["Type"] == ["notify"] and s["Restart"] == ["on-failure"] and int(s["WatchdogSec"][0]) > 0
    assert s["SupplementaryGroups"] == ["video gpio maskgate-operators"] and s["User"] == ["maskgate"]
    assert s["RuntimeDirectory"] == ["maskgate"], "the control socket's directory, /run/maskgate"
    assert s["ProtectSystem"] == ["strict"] and s["NoNewPrivileges"] == ["yes"] and s["StateDirectory"] == ["maskgate"]
    assert s["DevicePolicy"] == ["closed"] and any("gpio" in d for d in s["DeviceAllow"])
    assert s["ExecStart"][0].endswith("maskgate run --config /etc/maskgate/maskgate.yaml")


def test_sandbox_allows_the_network_features_and_nothing_more():
    """RTSP cameras, MQTT and the web server need IP; raw sockets, Bluetooth etc. stay blocked."""
    families = set(unit_settings()["RestrictAddressFamilies"][0].split())
    assert families == {"AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6"}
    s = unit_settings()
    assert s["ProtectSystem"] == ["strict"] and s["PrivateTmp"] == ["yes"] and s["ProtectHome"] == ["yes"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_passes(tmp_path):
    # The unit's ExecStart exists only once installed: point it at a real binary for the check.
    unit = tmp_path / "maskgate.service"
    unit.write_text(UNIT.read_text().replace("/opt/maskgate/venv/bin/maskgate", shutil.which("true")))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("script", ["install.sh", "uninstall.sh"])
def test_scripts_parse_and_check_for_root(script):
    path = ROOT / "systemd" / script
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    text = path.read_text()
    assert 'id -u)" -eq 0' in text


def run_path_link_lines(script: str, root: Path) -> None:
    """The script's lines about /usr/local/bin/maskgate, run with / moved to ``root``."""
    lines = [line.replace("/usr/local/bin", f"{root}/usr/local/bin").replace("/opt/maskgate", f"{root}/opt/maskgate")
             for line in (ROOT / "systemd" / script).read_text().splitlines() if "/usr/local/bin/maskgate" in line]
    assert lines, f"{script} does not handle /usr/local/bin/maskgate"
    subprocess.run(["bash", "-euc", f'prefix={root}/opt/maskgate\n' + "\n".join(lines)], check=True)


def test_install_puts_the_service_binary_on_the_path_and_uninstall_removes_only_that(tmp_path):
    (tmp_path / "usr/local/bin").mkdir(parents=True)
    link = tmp_path / "usr/local/bin/maskgate"
    binary = Path(unit_settings()["ExecStart"][0].split()[0].replace("/opt/maskgate", f"{tmp_path}/opt/maskgate"))
    run_path_link_lines("install.sh", tmp_path)
    run_path_link_lines("install.sh", tmp_path)  # re-running upgrades in place
    assert link.is_symlink() and Path(link.readlink()) == binary
    run_path_link_lines("uninstall.sh", tmp_path)
    assert not link.exists() and not link.is_symlink()
    link.write_text("#!/bin/sh\n")  # somebody else's maskgate
    run_path_link_lines("uninstall.sh", tmp_path)
    assert link.read_text() == "#!/bin/sh\n"
