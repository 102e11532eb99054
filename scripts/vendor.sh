#!/usr/bin/env bash
# Brings the web UI's one third-party asset, uPlot (the charts), into the
# git-ignored webui/static/vendor/: the npm package at a pinned version,
# checked against its pinned sha512 integrity, its dist .min.js and .min.css
# copied out. Idempotent: does nothing when the pinned version is there.
# Fails loudly (non-zero, a message on stderr) when it cannot fetch or check
# the package: the appliance never serves pages whose charts are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

UPLOT_VERSION=1.6.32
UPLOT_INTEGRITY="sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw=="
VENDOR=webui/static/vendor
STAMP="$VENDOR/uplot.version"
FILES=(uPlot.iife.min.js uPlot.min.css)

fail() { echo "vendor: $*" >&2; exit 1; }

present() {
  [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$UPLOT_VERSION" ] || return 1
  for file in "${FILES[@]}"; do [ -s "$VENDOR/$file" ] || return 1; done
}

if present; then
  exit 0
fi
command -v npm >/dev/null || fail "npm is needed to fetch uPlot $UPLOT_VERSION (apt-get install npm)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "uplot@$UPLOT_VERSION" >/dev/null) \
  || fail "npm could not fetch uplot@$UPLOT_VERSION"
tarball="$work/uplot-$UPLOT_VERSION.tgz"
[ -f "$tarball" ] || fail "npm pack left no $tarball"
actual=$(node -e 'const c = require("crypto"), f = require("fs");
  process.stdout.write("sha512-" + c.createHash("sha512").update(f.readFileSync(process.argv[1])).digest("base64"))' "$tarball")
[ "$actual" = "$UPLOT_INTEGRITY" ] || fail "uplot-$UPLOT_VERSION.tgz is not the pinned package ($actual)"

tar -xzf "$tarball" -C "$work"
mkdir -p "$VENDOR"
for file in "${FILES[@]}"; do
  [ -s "$work/package/dist/$file" ] || fail "uplot $UPLOT_VERSION has no dist/$file"
  cp "$work/package/dist/$file" "$VENDOR/$file.tmp"
  mv "$VENDOR/$file.tmp" "$VENDOR/$file"
done
cp "$work/package/LICENSE" "$VENDOR/uPlot.LICENSE" 2>/dev/null || true
echo "$UPLOT_VERSION" >"$STAMP.tmp" && mv "$STAMP.tmp" "$STAMP"
echo "vendor: uPlot $UPLOT_VERSION in $VENDOR"
