#!/usr/bin/env bash
# Install the command-line tools the test suite needs beyond Python packages. Idempotent.
#
#   bash deploy/install-tools.sh
#
# - promtool and prometheus (Debian's `prometheus` package): `promtool check rules/config/metrics`
#   and `promtool test rules` in tests/unit/test_alert_rules.py; a real Prometheus server scraping
#   a real worker in tests/integration/test_prometheus.py. The package's own service is never
#   started (policy-rc.d), and is stopped should it be running anyway.
#
# - chromium (Debian's): a real browser opens deploy/collector-page.html and fires the collector's
#   pixel in tests/integration/test_collector_browser.py (headless, kept off the network by flags).
# - wrk (Debian's): drives the collector in the collector part of `leadscore bench`.
#
# The Kubernetes manifests are validated by the `kubernetes-validate` Python package (the
# Kubernetes JSON schemas inside its wheel, no download at test time), installed with `.[dev]`.
set -euo pipefail

log() { echo "== install-tools: $*"; }
die() {
  echo "error: install-tools: $*" >&2
  exit 1
}

have_prometheus_tools() {
  command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    die "need root (or password-less sudo) to run: $*"
  fi
}

install_prometheus_package() {
  command -v apt-get >/dev/null 2>&1 ||
    die "promtool is not on PATH and there is no apt-get here; install Prometheus 2.42+ (prometheus and promtool) by hand"

  # Keep the package's init script from starting a Prometheus server: an existing policy-rc.d
  # is left alone; otherwise one that denies every start is put in place for the install only.
  local policy=/usr/sbin/policy-rc.d our_policy=""
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
    our_policy=yes
  fi
  local status=0
  export DEBIAN_FRONTEND=noninteractive
  log "apt-get install prometheus (promtool and the prometheus server)"
  if ! as_root apt-get install -y -q --no-install-recommends prometheus; then
    log "install failed; refreshing the package lists and trying again"
    as_root apt-get update -q && as_root apt-get install -y -q --no-install-recommends prometheus || status=$?
  fi
  if [ -n "$our_policy" ]; then
    as_root rm -f "$policy"
  fi
  [ "$status" -eq 0 ] || die "apt-get install prometheus failed (exit $status)"

  # Belt and braces: a Debian service started despite the policy is stopped again.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    log "stopping the prometheus service the package started"
    as_root systemctl disable --now prometheus || true
  elif [ -x /etc/init.d/prometheus ] && /etc/init.d/prometheus status >/dev/null 2>&1; then
    log "stopping the prometheus service the package started"
    as_root /etc/init.d/prometheus stop || true
  fi
}

if have_prometheus_tools; then
  log "promtool already installed: $(command -v promtool)"
else
  install_prometheus_package
  have_prometheus_tools || die "the prometheus package is installed but promtool or prometheus is not on PATH"
fi
log "$(promtool --version 2>&1 | head -n 1)"
log "$(prometheus --version 2>&1 | head -n 1)"

# chromium and wrk: plain Debian packages without services.
missing_packages=()
command -v chromium >/dev/null 2>&1 || missing_packages+=(chromium)
command -v wrk >/dev/null 2>&1 || missing_packages+=(wrk)
if [ "${#missing_packages[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 ||
    die "${missing_packages[*]} not on PATH and there is no apt-get here; install them by hand"
  export DEBIAN_FRONTEND=noninteractive
  log "apt-get install ${missing_packages[*]}"
  if ! as_root apt-get install -y -q --no-install-recommends "${missing_packages[@]}"; then
    log "install failed; refreshing the package lists and trying again"
    as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends "${missing_packages[@]}" ||
      die "apt-get install ${missing_packages[*]} failed"
  fi
fi
log "$(chromium --version 2>/dev/null | head -n 1)"
log "$(wrk --version 2>&1 | head -n 1)"
