# Sourced by the scripts/install-*.sh scripts: what they share about Debian packages.

# Print the packages of "$@" that are not fully installed, space-separated. dpkg-query answers
# in milliseconds, so an install script that finds nothing missing costs nothing.
missing_packages() {
    local pkg status missing=()
    for pkg in "$@"; do
        status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
        if [[ "$status" != "install ok installed" ]]; then
            missing+=("$pkg")
        fi
    done
    echo "${missing[*]}"
}

# Install the packages "$@" without recommends. The package lists are refreshed only when
# the first try fails: an update costs seconds and is only needed where the lists are absent
# or stale. Another apt-get (a parallel CI step, unattended upgrades) may hold the dpkg lock:
# wait for it rather than fail.
apt_install() {
    local opts=(-o DPkg::Lock::Timeout=600)
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get "${opts[@]}" install -y --no-install-recommends "$@"; then
        apt-get "${opts[@]}" update
        apt-get "${opts[@]}" install -y --no-install-recommends "$@"
    fi
}
