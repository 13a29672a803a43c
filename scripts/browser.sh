#!/usr/bin/env bash
# Installs Debian's chromium (and chromedriver) for the browser tests where it is
# missing and we can (root with apt-get). Otherwise the browser tests skip and say why.
set -u
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "browser: installing chromium (Debian package) for the browser tests"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; then
    apt-get update -qq >/dev/null && \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
fi
[ -x /usr/bin/chromium ] || echo "browser: chromium is not installed and cannot be here; browser tests will be skipped"
exit 0
