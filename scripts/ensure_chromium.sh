#!/usr/bin/env bash
# The browser tests drive Debian's Chromium through Playwright. Install it when we can (root on a
# Debian machine); otherwise the browser tests skip with a message saying why.
# axe-core (the accessibility checks Playwright injects) comes from npm into tools/browser/.
cd "$(dirname "$0")/.." || exit 0
if ! command -v chromium >/dev/null 2>&1 \
  && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser tests..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "could not install chromium; browser tests will be skipped"
fi
if [ ! -f tools/browser/node_modules/axe-core/axe.min.js ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "installing axe-core for the browser tests..."
    (cd tools/browser && npm ci --no-audit --no-fund --silent) \
      || echo "could not install axe-core; the accessibility tests will be skipped"
  else
    echo "no npm: the accessibility tests (axe-core) will be skipped"
  fi
fi
exit 0
