#!/usr/bin/env bash
# Install maskgate as a systemd service on Raspberry Pi OS 64-bit (bookworm). Run as root from a
# checkout: sudo systemd/install.sh   (re-running upgrades in place; the config is kept)
#   --kiosk      also show the kiosk page full-screen on the Pi's display at every desktop login
#                (X11, labwc and wayfire sessions; screen blanking off)
#   --no-kiosk   only remove the kiosk's autostart entries
set -euo pipefail
kiosk_entry=/etc/xdg/autostart/maskgate-kiosk.desktop
repo=$(cd "$(dirname "$0")/.." && pwd)
# The desktop user: who ran sudo, else the one the display manager logs in automatically.
desktop_user=${SUDO_USER:-}
if [ -z "$desktop_user" ] || [ "$desktop_user" = root ]; then
    desktop_user=$(sed -n 's/^autologin-user=//p' /etc/lightdm/lightdm.conf 2>/dev/null | tail -n 1)
fi
wayfire_ini=${desktop_user:+$(getent passwd "$desktop_user" | cut -d: -f6)/.config/wayfire.ini}
case "${1:-}" in
    --kiosk) kiosk=yes ;;
    --no-kiosk)
        rm -f "$kiosk_entry"
        [ -z "$wayfire_ini" ] || "$repo/systemd/kiosk-autostart.sh" disable "$wayfire_ini"
        echo "kiosk autostart removed (takes effect at the next login)"; exit 0 ;;
    "") kiosk=no ;;
    *) echo "usage: install.sh [--kiosk | --no-kiosk]" >&2; exit 2 ;;
esac

prefix=/opt/maskgate

[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (sudo systemd/install.sh)" >&2; exit 1; }
[ "$(uname -m)" = aarch64 ] || echo "install.sh: warning: $(uname -m) is not aarch64 (Raspberry Pi OS 64-bit)" >&2

echo "== system packages (picamera2 and lgpio, gpiozero's pin driver on a Pi 5, come from the Raspberry Pi archive)"
apt-get update
apt-get install -y --no-install-recommends python3-venv python3-picamera2 python3-lgpio

echo "== service user"
id -u maskgate >/dev/null 2>&1 || useradd --system --home-dir /var/lib/maskgate --shell /usr/sbin/nologin maskgate
for group in video gpio; do getent group "$group" >/dev/null && usermod -a -G "$group" maskgate; done
# Operators may use `maskgate door unlock|lock|auto|silence|status`: usermod -a -G maskgate-operators <user>
getent group maskgate-operators >/dev/null || groupadd --system maskgate-operators

echo "== virtual environment in $prefix/venv (system site packages, for picamera2)"
mkdir -p "$prefix"
cp "$repo/README.md" "$prefix/README.md"
python3 -m venv --system-site-packages "$prefix/venv"
# [pi]: simplejpeg from PyPI, built for the venv's numpy, shadows Debian's (see docs/pi.md).
"$prefix/venv/bin/pip" install --upgrade "$repo[pi]"
ln -sfn "$prefix/venv/bin/maskgate" /usr/local/bin/maskgate  # `maskgate` on every user's PATH

echo "== configuration in /etc/maskgate"
install -d -m 0755 /etc/maskgate
if [ ! -e /etc/maskgate/maskgate.yaml ]; then
    install -m 0640 -o root -g maskgate "$repo/config/maskgate.yaml" /etc/maskgate/maskgate.yaml
fi
# It may hold tokens and passwords: readable by root and the service only (also when kept from before).
chown root:maskgate /etc/maskgate/maskgate.yaml
chmod 0640 /etc/maskgate/maskgate.yaml
"$prefix/venv/bin/maskgate" check-config /etc/maskgate/maskgate.yaml

echo "== service"
install -m 0644 "$repo/systemd/maskgate.service" /etc/systemd/system/maskgate.service
systemctl daemon-reload
systemctl enable --now maskgate.service
if [ "$kiosk" = yes ]; then
    echo "== kiosk: Chromium full-screen on the local page at desktop login (auto-login desktop user)"
    command -v chromium-browser >/dev/null || command -v chromium >/dev/null \
        || apt-get install -y --no-install-recommends chromium-browser || apt-get install -y chromium
    install -m 0755 "$repo/systemd/kiosk.sh" "$prefix/kiosk.sh"
    install -D -m 0644 "$repo/systemd/maskgate-kiosk.desktop" "$kiosk_entry"  # X11 (LXDE) and labwc
    [ -z "$wayfire_ini" ] || "$repo/systemd/kiosk-autostart.sh" enable "$wayfire_ini"  # wayfire
    # Screen blanking off for X11 and Wayland alike (raspi-config: Display Options → Screen Blanking).
    if command -v raspi-config >/dev/null; then raspi-config nonint do_blanking 1; fi
fi
systemctl --no-pager status maskgate.service || true
echo "door overrides: add operators with 'usermod -a -G maskgate-operators USER', then 'maskgate door status'"
echo "installed: logs with 'journalctl -u maskgate -f', decisions with 'sudo maskgate events'"
