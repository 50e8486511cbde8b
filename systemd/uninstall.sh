#!/usr/bin/env bash
# Remove the maskgate service and its virtual environment. Keeps /etc/maskgate and the event log in
# /var/lib/maskgate unless --purge is given.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "uninstall.sh: run as root" >&2; exit 1; }
systemctl disable --now maskgate.service 2>/dev/null || true
rm -f /etc/systemd/system/maskgate.service
systemctl daemon-reload
rm -rf /opt/maskgate /etc/xdg/autostart/maskgate-kiosk.desktop
for ini in /home/*/.config/wayfire.ini; do
    if [ -f "$ini" ]; then "$(dirname "$0")/kiosk-autostart.sh" disable "$ini"; fi
done
if [ "$(readlink /usr/local/bin/maskgate)" = /opt/maskgate/venv/bin/maskgate ]; then rm -f /usr/local/bin/maskgate; fi
if [ "${1:-}" = --purge ]; then
    rm -rf /etc/maskgate /var/lib/maskgate
    id -u maskgate >/dev/null 2>&1 && userdel maskgate
    getent group maskgate-operators >/dev/null && groupdel maskgate-operators
fi
echo "maskgate removed${1:+ (purged)}"
