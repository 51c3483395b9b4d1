#!/usr/bin/env bash
# Install what the timeline tests need (`remotemap runs plot`): headless Chromium, which
# renders the page (--dump-dom) and draws its PNG (--screenshot), and a font for its text.
# No chromium-driver: the tests drive Chromium's own command line, not WebDriver.
#
# Idempotent: a fast no-op when everything is installed already. Exits 0 with a message when
# not run as root, so a developer without root simply gets skipped timeline rendering tests.
set -euo pipefail

packages=(chromium fonts-dejavu-core)

if [[ "$(id -u)" != 0 ]]; then
    echo "install-chromium.sh: not root, installing nothing (the rendering tests will be skipped)"
    exit 0
fi

missing=()
for pkg in "${packages[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-chromium.sh: already installed: ${packages[*]}"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# Wait for another apt-get holding the dpkg lock (a parallel CI step) rather than fail.
apt_opts=(-o DPkg::Lock::Timeout=600)
echo "install-chromium.sh: installing ${missing[*]}"
# Without refreshing the package lists first; only when that fails are they updated.
if ! apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}"; then
    apt-get "${apt_opts[@]}" update
    apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}"
fi
echo "install-chromium.sh: done"
