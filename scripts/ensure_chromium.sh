#!/usr/bin/env bash
# The browser tests drive Debian's Chromium through Playwright. Install it when we can (root on a
# Debian machine); otherwise the browser tests skip with a message saying why.
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser tests..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "could not install chromium; browser tests will be skipped"
fi
exit 0
