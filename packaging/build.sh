#!/usr/bin/env bash
# Build the one-folder desktop program into dist/flukeid (Linux here; the same spec on Windows/macOS).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
"$VENV/bin/pip" install -q -e '.[package]'
start=$(date +%s)
"$VENV/bin/pyinstaller" packaging/flukeid.spec --noconfirm --clean --log-level WARN \
    --distpath dist --workpath build/pyinstaller
install -m 644 packaging/flukeid.desktop dist/flukeid/flukeid.desktop
echo "built dist/flukeid in $(( $(date +%s) - start )) s, $(du -sh dist/flukeid | cut -f1)"
