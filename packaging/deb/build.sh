#!/usr/bin/env bash
# Builds dist/homegw_<version>_amd64.deb from this repository (version from
# pyproject.toml), with plain dpkg-deb: no debhelper.
#
#   packaging/deb/build.sh [--out DIR]        (default DIR: dist/, git-ignored)
#
# How the venv gets to /opt/homegw/venv (the dh-virtualenv way): it is made
# with Debian's /usr/bin/python3 and --system-site-packages (so Debian's
# python3-bpfcc imports) inside a staging root, STAGE/opt/homegw/venv, and
# homegw (non-editable, from a copy of the tracked files plus the vendored web
# UI assets) and its runtime dependencies are pip-installed into it, ignoring
# what the build machine's system site has (the target has only bcc there).
# A venv names its own path in three places: the scripts' shebangs, the
# activate scripts and pyvenv.cfg's `command`; every text file naming STAGE
# has that prefix cut off, so they name /opt/homegw/venv. Bytecode, which
# embeds source paths, is compiled only afterwards, with STAGE stripped from
# the recorded paths (compileall -s/-p), and the dist-infos' RECORDs get the
# rewritten files' hashes. venv/bin/python is a symlink to
# /usr/bin/python3, so the venv runs wherever Debian's python3 is 3.11 (the
# control file's python3 bounds). The build fails if any file of the package
# still contains the build directory (`grep -r` over the staging root).
# pip and setuptools (the venv's seed) are not shipped: dpkg owns the venv.
#
# Reproducible enough: file mtimes are clamped to SOURCE_DATE_EPOCH (default:
# the last commit's time), which dpkg-deb also uses, and bytecode is
# hash-checked; the dependency versions are whatever pip resolves that day.
set -euo pipefail
cd "$(dirname "$0")/../.."

out=dist
while [ $# -gt 0 ]; do
  case "$1" in
  --out) out="$2"; shift 2 ;;
  *) echo "usage: $0 [--out DIR]" >&2; exit 2 ;;
  esac
done

version=$(/usr/bin/python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
bash scripts/vendor.sh --check || bash scripts/vendor.sh

work=$(mktemp -d /tmp/homegw-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
stage="$work/root"
venv=/opt/homegw/venv

echo "build: homegw $version in $work"
# the source: tracked files as they are in the work tree, plus the vendored assets
mkdir -p "$work/src"
git ls-files -z | tar --null -T - -c | tar -x -C "$work/src"
cp -a webui/static/vendor "$work/src/webui/static/"

/usr/bin/python3 -m venv --system-site-packages "$stage$venv"
"$stage$venv/bin/python" -m pip install -q --disable-pip-version-check --no-compile \
  --ignore-installed "$work/src" 2> >(grep -v "is ignored: it is neither" >&2)
"$stage$venv/bin/python" -m pip uninstall -q -y pip setuptools
rm -f "$stage$venv"/lib/python3*/site-packages/homegw-*.dist-info/direct_url.json
rm -rf "$stage$venv/bin/pip" "$stage$venv"/bin/pip3* "$stage$venv"/bin/activate.{csh,fish} "$stage$venv"/bin/Activate.ps1
find "$stage" -name __pycache__ -prune -exec rm -rf {} +

# relocate: STAGE/opt/homegw/venv -> /opt/homegw/venv in every text file
grep -rlIZ --fixed-strings "$stage" "$stage" | xargs -0 -r sed -i "s|$stage||g"
# the RECORDs' hashes of the rewritten files (and no rows for removed ones)
"$stage$venv/bin/python" - "$stage$venv"/lib/python3*/site-packages <<'PY'
import base64, csv, hashlib, io, os, sys
site = sys.argv[1]
for info in sorted(os.listdir(site)):
    record = os.path.join(site, info, "RECORD")
    if not info.endswith(".dist-info") or not os.path.exists(record):
        continue
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in csv.reader(open(record, newline="")):
        path = os.path.normpath(os.path.join(site, row[0]))
        if not os.path.lexists(path):
            continue
        if row[1] and os.path.isfile(path):
            data = open(path, "rb").read()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            row[1:] = ["sha256=" + digest.decode(), str(len(data))]
        writer.writerow(row)
    open(record, "w").write(out.getvalue())
PY
"$stage$venv/bin/python" -m compileall -q -s "$stage" -p / "$stage$venv/lib" >/dev/null

install -D -m 0644 packaging/systemd/homegw.service "$stage/lib/systemd/system/homegw.service"
install -D -m 0644 packaging/systemd/homegw.default "$stage/etc/default/homegw"
install -D -m 0644 homegw.example.yaml "$stage/etc/homegw/homegw.yaml"
install -D -m 0644 homegw.example.yaml "$stage/usr/share/homegw/homegw.yaml"
install -D -m 0755 scripts/kernel-headers.sh "$stage/usr/lib/homegw/kernel-headers.sh"
install -D -m 0644 README.md "$stage/usr/share/doc/homegw/README.md"
install -D -m 0644 packaging/deb/copyright "$stage/usr/share/doc/homegw/copyright"
mkdir -p "$stage/usr/bin"
ln -s "$venv/bin/homegw" "$stage/usr/bin/homegw"

if grep -rl --fixed-strings "$work" "$stage"; then
  echo "build: the files above still name the build directory $work" >&2
  exit 1
fi

mkdir -p "$stage/DEBIAN"
size=$(du -sk --apparent-size --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@INSTALLED_SIZE@/$size/" packaging/deb/control.in >"$stage/DEBIAN/control"
install -m 0644 packaging/deb/conffiles "$stage/DEBIAN/conffiles"
install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$stage/DEBIAN/"

chmod -R u+rwX,go+rX,go-w "$stage"
find "$stage" -newermt "@$SOURCE_DATE_EPOCH" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$out"
deb="$out/homegw_${version}_amd64.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "build: $deb ($(du -h "$deb" | cut -f1), installed $((size / 1024)) MiB)"
