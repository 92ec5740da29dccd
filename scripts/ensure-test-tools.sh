#!/usr/bin/env bash
# Tools some tests drive, from Debian's packages (nothing is downloaded at test time):
# Chromium + ChromeDriver for the dashboard's browser test, promtool for the metrics check, kubectl
# (kustomize) and docker-compose to render and validate deploy/k8s and docker-compose.yml.
# On Debian as root, install what is missing; elsewhere, say how (those tests are then skipped).
set -euo pipefail

CHROMIUM=${PULSE_TEST_CHROMIUM:-/usr/bin/chromium}
CHROMEDRIVER=${PULSE_TEST_CHROMEDRIVER:-/usr/bin/chromedriver}

missing=()
[ -x "$CHROMIUM" ] || missing+=(chromium)
[ -x "$CHROMEDRIVER" ] || missing+=(chromium-driver)
command -v promtool >/dev/null || missing+=(prometheus)
command -v kubectl >/dev/null || missing+=(kubernetes-client)
command -v docker-compose >/dev/null || missing+=(docker-compose)

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ]; then
  echo "Installing ${missing[*]} for the browser, metrics and deployment tests…"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi

cat >&2 <<TXT
Missing for some tests (they will be skipped): ${missing[*]}. To run them:
  - on Debian/Ubuntu:  sudo apt-get install -y chromium chromium-driver prometheus kubernetes-client docker-compose
  - elsewhere: install Chromium (or Chrome) with the matching ChromeDriver and point
    PULSE_TEST_CHROMIUM / PULSE_TEST_CHROMEDRIVER at them; promtool comes with Prometheus;
    any kubectl with kustomize, and docker-compose (v1 or the v2 standalone binary).
TXT
