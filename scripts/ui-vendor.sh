#!/usr/bin/env bash
# Refreshes the dashboard's vendored xterm.js (ui/vendor/), which is committed so that
# a build needs neither npm nor the internet. Idempotent: installs the pinned versions
# below into target/ui-vendor/ (npm, once) and copies the ES module builds, the CSS and
# the licences. To move to a newer xterm.js, change the versions, run this, commit.
#
#   bash scripts/ui-vendor.sh
set -euo pipefail

XTERM_VERSION=6.0.0
FIT_VERSION=0.11.0

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$repo/target/ui-vendor"
out="$repo/ui/vendor"

mkdir -p "$work" "$out"
if [ ! -f "$work/package.json" ]; then
    echo '{"name": "repobox-ui-vendor", "private": true}' >"$work/package.json"
fi
have() { [ "$(node -p "require('$work/node_modules/$1/package.json').version" 2>/dev/null)" = "$2" ]; }
if ! have @xterm/xterm "$XTERM_VERSION" || ! have @xterm/addon-fit "$FIT_VERSION"; then
    (cd "$work" && npm install --no-audit --no-fund --save-exact --silent \
        "@xterm/xterm@$XTERM_VERSION" "@xterm/addon-fit@$FIT_VERSION")
fi

# The source-map comment is dropped: the maps are not vendored, and a browser with
# developer tools open would ask the server for them.
strip_map() { sed '/^\/\/# sourceMappingURL=/d' "$1" >"$2"; }
modules="$work/node_modules/@xterm"
strip_map "$modules/xterm/lib/xterm.mjs" "$out/xterm.mjs"
strip_map "$modules/addon-fit/lib/addon-fit.mjs" "$out/addon-fit.mjs"
cp "$modules/xterm/css/xterm.css" "$out/xterm.css"
cp "$modules/xterm/LICENSE" "$out/LICENSE.xterm"
cp "$modules/addon-fit/LICENSE" "$out/LICENSE.addon-fit"
printf '@xterm/xterm %s\n@xterm/addon-fit %s\n' "$XTERM_VERSION" "$FIT_VERSION" >"$out/VERSIONS"
echo "ui/vendor: @xterm/xterm $XTERM_VERSION, @xterm/addon-fit $FIT_VERSION"
