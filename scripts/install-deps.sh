#!/usr/bin/env bash
# Installs what the build needs and is missing, from Debian's packages. With --for-tests,
# also what the tests need: Chromium for the playground's browser test, and the Node
# client tests' packages from their committed lockfile (npm ci). Idempotent.
set -euo pipefail

for_tests=false
[ "${1:-}" = "--for-tests" ] && for_tests=true

need=()
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
# TLS for the server's HTTP client (OIDC discovery, JWKS, token endpoints)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v c++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
if $for_tests; then
  command -v node >/dev/null 2>&1 || need+=(nodejs)
  command -v npm >/dev/null 2>&1 || need+=(npm)
  [ -x /usr/bin/chromium ] || need+=(chromium)
fi

if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install a Rust toolchain (rustup) first" >&2
  exit 1
fi

$for_tests || exit 0

# Node packages of the client tests, reinstalled when the lockfile changed.
for dir in tests/clients; do
  if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    echo "npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done
