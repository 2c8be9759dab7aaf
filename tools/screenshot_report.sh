#!/usr/bin/env bash
# Render an HTML report (bench.report's report.html) with headless Chromium to a PNG, to look at
# the page as a user would. Installs nothing: on Debian/Ubuntu a developer gets the browser with
#   sudo apt-get install chromium
#
# usage: tools/screenshot_report.sh REPORT.html [OUT.png] [WIDTHxHEIGHT]
#   OUT.png defaults to REPORT.png next to the report; the window defaults to 1280x2400.
#   CHROMIUM=/path/to/browser overrides the browser found on PATH.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 3 ]; then
    echo "usage: $0 REPORT.html [OUT.png] [WIDTHxHEIGHT]" >&2
    exit 2
fi
report=$1
if [ ! -f "$report" ]; then
    echo "$0: $report: no such file" >&2
    exit 2
fi
out=${2:-${report%.*}.png}
size=${3:-1280x2400}
if ! [[ $size =~ ^[0-9]+x[0-9]+$ ]]; then
    echo "$0: window size '$size': expected WIDTHxHEIGHT, e.g. 1280x2400" >&2
    exit 2
fi

browser=${CHROMIUM:-}
if [ -z "$browser" ]; then
    for name in chromium chromium-browser google-chrome google-chrome-stable; do
        if command -v "$name" >/dev/null 2>&1; then
            browser=$(command -v "$name")
            break
        fi
    done
fi
if [ -z "$browser" ]; then
    echo "$0: no Chromium found (tried chromium, chromium-browser, google-chrome); install it" \
         "with: sudo apt-get install chromium   (or set CHROMIUM=/path/to/browser)" >&2
    exit 3
fi

abs_report=$(cd "$(dirname "$report")" && pwd)/$(basename "$report")
abs_out=$(mkdir -p "$(dirname "$out")" && cd "$(dirname "$out")" && pwd)/$(basename "$out")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT

# A fresh profile and every background fetch switched off: the page must render from disk alone,
# and a report that needed the network would show its gaps in the screenshot.
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --user-data-dir="$profile" --screenshot="$abs_out" \
    --window-size="${size/x/,}" "file://$abs_report" >/dev/null 2>"$profile/stderr" || {
        echo "$0: $browser failed:" >&2
        tail -n 20 "$profile/stderr" >&2
        exit 1
    }
if [ ! -s "$abs_out" ]; then
    echo "$0: $browser wrote no screenshot:" >&2
    tail -n 20 "$profile/stderr" >&2
    exit 1
fi
echo "$abs_out"
