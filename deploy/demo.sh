#!/usr/bin/env bash
# The demo command: install, start a local Kafka broker if none answers, a worker and live demo
# traffic, and print MQL handoffs and returns to nurture as they happen; also a collector and a
# local page with its pixel (the address is printed) that shows a demo lead's live score. Ctrl-C
# stops it.
#
#   bash deploy/demo.sh [leadscore demo options, e.g. --duration 120]
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup-venv.sh
exec .venv/bin/leadscore demo "$@"
