#!/usr/bin/env bash
# Builds appserver_VERSION_amd64.deb into OUTDIR (default dist/):
#   packaging/build-deb.sh [VERSION] [OUTDIR]
# VERSION defaults to the top entry of packaging/debian/changelog; another version gets a changelog
# entry of its own. The launcher (/usr/bin/appserver) and the server's libraries (/usr/lib/appserver) are
# a release build with the Swift runtime linked statically, so the target machine needs no Swift;
# dpkg-buildpackage (dh, debhelper compat 13) packs them.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CHANGELOG_VERSION=$(dpkg-parsechangelog -l "$ROOT/packaging/debian/changelog" -S Version)
VERSION=${1:-$CHANGELOG_VERSION}
OUT=$(mkdir -p "${2:-$ROOT/dist}" && cd "${2:-$ROOT/dist}" && pwd)
WORK=$ROOT/.build-deb

# A copy of the sources with the package's version in Version.swift. rsync copies only what changed,
# so building a second version recompiles one small module.
mkdir -p "$WORK/src"
rsync -a --delete "$ROOT/Package.swift" "$ROOT/Sources" "$ROOT/Tests" "$WORK/src/"
cat > "$WORK/src/Sources/AppServerCLI/Version.swift" <<SWIFT
/// Written by packaging/build-deb.sh.
let appServerVersion = "$VERSION"
SWIFT
# --static-swift-stdlib links the runtime into executables only; -static-stdlib does it for the server's
# library too.
(cd "$WORK/src" && env -u PKG_CONFIG_PATH swift build -c release --scratch-path "$WORK/scratch" \
    --static-swift-stdlib -Xswiftc -static-stdlib -Xswiftc -enforce-exclusivity=unchecked \
    -Xlinker -z -Xlinker relro -Xlinker -z -Xlinker now)
BINARY=$WORK/scratch/release/appserver
[ "$("$BINARY" --version)" = "$VERSION" ] || { echo "build-deb: the binary does not say $VERSION" >&2; exit 1; }

# The tree dpkg-buildpackage works in: debian/ and what debian/appserver.install names.
PKG=$WORK/pkg/appserver-$VERSION
rm -rf "$WORK/pkg"
mkdir -p "$PKG/examples" "$PKG/bash-completion"
cp -r "$ROOT/packaging/debian" "$PKG/debian"
cp "$BINARY" "$PKG/appserver"
cp "$WORK/scratch/release/libappserver-hosted.so" "$WORK/scratch/release/libappserver-preload.so" "$PKG/"
cp -r "$ROOT/systemd" "$PKG/systemd"
cp "$ROOT/packaging/appserver.toml" "$ROOT/packaging/appserver.1" "$ROOT/README.md" "$PKG/"
rsync -a --exclude __pycache__ --exclude '.venv*' "$ROOT/examples/hello" "$PKG/examples/"
"$BINARY" --generate-completion-script bash | sed "1{/^#!/d}" > "$PKG/bash-completion/appserver"
if [ "$VERSION" != "$CHANGELOG_VERSION" ]; then
    { printf 'appserver (%s) unstable; urgency=medium\n\n  * Release %s.\n\n -- %s  %s\n\n' \
        "$VERSION" "$VERSION" "$(dpkg-parsechangelog -l "$ROOT/packaging/debian/changelog" -S Maintainer)" "$(date -R)"
      cat "$ROOT/packaging/debian/changelog"; } > "$PKG/debian/changelog"
fi
(cd "$PKG" && dpkg-buildpackage --build=binary --unsigned-source --unsigned-changes --no-sign >"$WORK/dpkg-buildpackage.log" 2>&1) \
    || { tail -40 "$WORK/dpkg-buildpackage.log" >&2; exit 1; }
mv "$WORK/pkg/appserver_${VERSION}_amd64.deb" "$OUT/"
echo "$OUT/appserver_${VERSION}_amd64.deb"
