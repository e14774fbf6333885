#!/usr/bin/env bash
# Installs redis-server from Debian packages when it is missing (needs root or sudo).
set -euo pipefail
command -v redis-server >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "redis-server is missing and this user cannot install packages: run 'sudo apt-get install redis-server', then retry." >&2
  exit 1
fi
echo "installing redis-server from Debian packages…"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
# The package's own service is not used: `gruwatch up` runs Redis on 127.0.0.1 with our config.
