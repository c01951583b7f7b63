#!/usr/bin/env bash
# Installs what raibid-ci needs on a Debian/Ubuntu machine, skipping what is already there.
#   scripts/install-deps.sh run    # what `raibid up` needs: redis-server, git, bubblewrap, and
#                                  # the C compiler and linker that building Rust code needs
#   scripts/install-deps.sh test   # plus what the test suite starts for real
set -euo pipefail

want=(redis-server:redis-server git:git bwrap:bubblewrap cc:gcc setpriv:util-linux)
if [ "${1:-run}" = test ]; then
  want+=(buildah:buildah docker-registry:docker-registry tmux:tmux busybox:busybox-static
         make:make curl:curl openssl:openssl redis-cli:redis-tools git-lfs:git-lfs capsh:libcap2-bin
         podman:podman runc:runc catatonit:catatonit
         # The container executor's tests run each engine: a private dockerd beside podman.
         dockerd:docker.io
         # Container steps with the network: podman's bridge, deterministic whatever apt would
         # pick for podman's virtual network stack without recommends.
         /usr/lib/podman/netavark:netavark iptables:iptables
         # services: steps find them by name through podman's DNS.
         /usr/lib/podman/aardvark-dns:aardvark-dns
         # The web page's script runs under node against a real server.
         node:nodejs
         # promtool checks monitoring/; a test runs the Prometheus server against a real raibid server.
         promtool:prometheus
         # systemd-analyze verifies the unit `raibid up --systemd-unit` writes.
         systemd-analyze:systemd)
fi

missing=()
for pair in "${want[@]}"; do
  cmd=${pair%%:*}
  pkg=${pair#*:}
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ] && [ ! -x "/usr/bin/$cmd" ]; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    echo "installing with sudo: ${missing[*]}"
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "missing packages: ${missing[*]}" >&2
    echo "install them with: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  # Debian starts the Prometheus server it installs as a service (where systemd runs): the
  # tests start their own.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    if [ "$(id -u)" -eq 0 ]; then
      systemctl disable --now prometheus >/dev/null 2>&1 || true
    else
      sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust 1.88 or later with rustup (https://rustup.rs);" \
       "distribution packages are older than this project needs" >&2
  exit 1
fi
