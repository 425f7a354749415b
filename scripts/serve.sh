#!/usr/bin/env bash
# Starts the server with its embedded defaults (local log in ./sluice-data,
# psql on 127.0.0.1:5433, HTTP on 127.0.0.1:8088) on a fresh Debian machine:
# installs libclang-dev (the rocksdb crate needs it to build) if missing, builds
# in release mode and runs `sluice serve` with any extra flags you pass.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! dpkg -s libclang-dev >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libclang-dev >/dev/null
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
exec cargo run --release --bin sluice -- serve "$@"
