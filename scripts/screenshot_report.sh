#!/usr/bin/env bash
# Renders the digits example's diagnosis pages in headless Chromium (Debian's `chromium`
# package, installed here if missing) and writes PNG screenshots next to them, so a person can
# check that the self-contained HTML report renders.
#
#   bash scripts/screenshot_report.sh            # runs the example first if the pages are missing
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

pages=(target/digits-diagnosis.html target/digits-fault-coarse-weights.html)
if [ ! -f "${pages[0]}" ] || [ ! -f "${pages[1]}" ]; then
    cargo run --release --features safetensors --example digits >/dev/null
fi

for page in "${pages[@]}"; do
    png="${page%.html}.png"
    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
        --window-size=1100,2600 --screenshot="$png" "file://$PWD/$page" 2>/dev/null
    echo "$png"
done
