#!/usr/bin/env bash
# Brings the web UI's one third-party asset, uPlot (the charts), into the
# git-ignored webui/static/vendor/: the npm package's tarball at a pinned
# version, straight from the npm registry with curl (no Node.js needed on the
# machine), checked against its pinned sha512 integrity, its dist .min.js and
# .min.css copied out. Idempotent: does nothing when the pinned version is
# there. `vendor.sh --check` only says (exit 0 or 1) whether it is there.
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
[ "${1:-}" = "--check" ] && exit 1
REGISTRY="${NPM_CONFIG_REGISTRY:-https://registry.npmjs.org}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tarball="$work/uplot-$UPLOT_VERSION.tgz"
curl -fsSL --retry 3 -o "$tarball" "${REGISTRY%/}/uplot/-/uplot-$UPLOT_VERSION.tgz" \
  || fail "could not download uplot@$UPLOT_VERSION from $REGISTRY"
actual=$(python3 -c 'import base64, hashlib, sys
digest = hashlib.sha512(open(sys.argv[1], "rb").read()).digest()
print("sha512-" + base64.b64encode(digest).decode())' "$tarball")
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
