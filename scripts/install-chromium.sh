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

source "$(dirname "$0")/apt-lib.sh"
read -r -a missing <<<"$(missing_packages "${packages[@]}")"
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-chromium.sh: already installed: ${packages[*]}"
    exit 0
fi
echo "install-chromium.sh: installing ${missing[*]}"
apt_install "${missing[@]}"
echo "install-chromium.sh: done"
