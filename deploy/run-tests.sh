#!/usr/bin/env bash
# The test command: set up the virtual environment, start a local Kafka broker, run ruff, mypy
# and every test tier (unit, agents, integration, reliability) against it, and stop the broker it started.
#
#   bash deploy/run-tests.sh [pytest arguments]
#
# LEADSCORE_TEST_BOOTSTRAP=host:port uses that broker instead of starting one.
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/setup-venv.sh
bash deploy/install-tools.sh  # promtool and prometheus (alert rules, scrape), chromium (pixel in a browser), wrk

started_broker=""
kafka_port=${LEADSCORE_TEST_KAFKA_PORT:-19192}  # its controller listens on 29192; a default broker's on 19092
kafka_state="${LEADSCORE_TEST_KAFKA_STATE_DIR:-$PWD/var/test-kafka}"
stop_broker() {
  if [ -n "$started_broker" ]; then
    echo "== stopping the test broker"
    .venv/bin/leadscore kafka stop --port "$kafka_port" --state-dir "$kafka_state" || true
  fi
}
trap stop_broker EXIT

if [ -n "${LEADSCORE_TEST_BOOTSTRAP:-}" ]; then
  echo "== using the broker at $LEADSCORE_TEST_BOOTSTRAP"
else
  echo "== starting a local Apache Kafka broker on 127.0.0.1:$kafka_port"
  if ! .venv/bin/leadscore kafka status --port "$kafka_port" --state-dir "$kafka_state" >/dev/null 2>&1; then
    started_broker=yes
  fi
  .venv/bin/leadscore kafka start --port "$kafka_port" --state-dir "$kafka_state"
  .venv/bin/leadscore kafka status --port "$kafka_port" --state-dir "$kafka_state"  # prints the version
  export LEADSCORE_TEST_BOOTSTRAP="127.0.0.1:$kafka_port"
fi

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy --strict"
.venv/bin/mypy

# The tests run the compiled scoring core: rebuilt here if its sources changed (setup-venv.sh did
# it too), since a stale build would shadow them (tests/conftest.py refuses to start on one).
bash deploy/compile-core.sh

echo "== pytest: unit, agents, integration and reliability tiers"
set +e
.venv/bin/python -m pytest -m "unit or agents or integration or reliability" -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests; the selection or the test layout is wrong" >&2
fi
exit "$status"
