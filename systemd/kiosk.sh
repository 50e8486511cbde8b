#!/usr/bin/env bash
# Start Chromium in kiosk mode on the Pi's display, showing the local maskgate page. Started at login by
# /etc/xdg/autostart/maskgate-kiosk.desktop (installed by `sudo systemd/install.sh --kiosk`; removed by
# `sudo systemd/install.sh --no-kiosk`). MASKGATE_URL overrides the page (default http://127.0.0.1:8080/).
set -u
url=${MASKGATE_URL:-http://127.0.0.1:8080/}
browser=$(command -v chromium-browser || command -v chromium) || { echo "kiosk.sh: chromium not installed" >&2; exit 1; }
# Wait (up to 2 minutes) for the daemon's page, so the screen never shows a browser error.
for _ in $(seq 120); do
    python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$url" 2>/dev/null && break
    sleep 1
done
# Keep the screen on (X11; Wayland sessions blank per the desktop's own setting).
command -v xset >/dev/null && [ -n "${DISPLAY:-}" ] && xset s off -dpms s noblank 2>/dev/null
profile=${XDG_RUNTIME_DIR:-/tmp}/maskgate-kiosk
exec "$browser" --kiosk --noerrdialogs --disable-infobars --no-first-run --disable-session-crashed-bubble \
    --disable-translate --check-for-update-interval=31536000 --user-data-dir="$profile" "$url"
