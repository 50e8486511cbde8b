#!/usr/bin/env bash
# Add or remove the kiosk in a wayfire session's autostart: kiosk-autostart.sh enable|disable ~USER/.config/wayfire.ini
# (labwc and X11 sessions start it from /etc/xdg/autostart instead). Edits in place, keeping everything else.
set -euo pipefail
line="maskgate_kiosk = /opt/maskgate/kiosk.sh"
action=${1:-}; ini=${2:-}
[ -n "$ini" ] || { echo "usage: kiosk-autostart.sh enable|disable WAYFIRE_INI" >&2; exit 2; }
case "$action" in
    enable)
        [ -f "$ini" ] || { echo "kiosk-autostart.sh: no $ini yet (log in to the wayfire desktop once; labwc and X11 need none)"; exit 0; }
        grep -qxF "$line" "$ini" && exit 0
        if grep -qx '\[autostart\]' "$ini"; then
            sed -i "/^\[autostart\]\$/a $line" "$ini"
        else
            printf '\n[autostart]\n%s\n' "$line" >> "$ini"
        fi ;;
    disable)
        [ -f "$ini" ] && sed -i "\\|^maskgate_kiosk = |d" "$ini"
        exit 0 ;;
    *) echo "usage: kiosk-autostart.sh enable|disable WAYFIRE_INI" >&2; exit 2 ;;
esac
