#!/usr/bin/env bash
# Start Chromium in kiosk mode on the Pi's display, showing the local maskgate page, with the screen kept
# on. Runs in the desktop session, under X11 (LXDE) or Wayland (labwc, wayfire): started at login by
# /etc/xdg/autostart/maskgate-kiosk.desktop (X11 and labwc) and the [autostart] section of the user's
# ~/.config/wayfire.ini (wayfire), both installed by `sudo systemd/install.sh --kiosk` and removed by
# `--no-kiosk`. A second start in the same session does nothing. MASKGATE_URL overrides the page
# (default http://127.0.0.1:8080/).
set -u
url=${MASKGATE_URL:-http://127.0.0.1:8080/}
runtime=${XDG_RUNTIME_DIR:-/tmp}
browser=$(command -v chromium-browser || command -v chromium) || { echo "kiosk.sh: chromium not installed" >&2; exit 1; }

exec 9>"$runtime/maskgate-kiosk.lock"
flock -n 9 || exit 0  # already showing (both autostart mechanisms ran)

# Wait (up to 2 minutes) for the daemon's page, so the screen never shows a browser error.
for _ in $(seq 120); do
    python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$url" 2>/dev/null && break
    sleep 1
done

# Keep the screen on. X11: the server's own blanking and DPMS. Wayland (labwc, wayfire): Raspberry Pi OS
# blanks through swayidle when raspi-config's "Screen Blanking" is on — install.sh turns that off; here
# the outputs are switched on in case they were already off.
if [ -n "${WAYLAND_DISPLAY:-}" ]; then
    command -v wlopm >/dev/null && wlopm --on '*' 2>/dev/null
elif [ -n "${DISPLAY:-}" ]; then
    command -v xset >/dev/null && xset s off -dpms s noblank 2>/dev/null
fi

exec "$browser" --kiosk --noerrdialogs --disable-infobars --no-first-run --disable-session-crashed-bubble \
    --disable-translate --check-for-update-interval=31536000 --ozone-platform-hint=auto \
    --user-data-dir="$runtime/maskgate-kiosk" "$url"
