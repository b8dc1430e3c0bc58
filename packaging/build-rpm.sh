#!/usr/bin/env bash
# Builds the kes .rpm from an already built binary with rpmbuild and
# packaging/kes.spec (no cargo-generate-rpm). Reproducible: timestamps come from
# SOURCE_DATE_EPOCH (build time and file mtimes clamped to it) and the build host
# name is fixed.
#
# Usage: packaging/build-rpm.sh [--no-strip] [BINARY] [OUTDIR]
#   BINARY  default target/release/kes
#   OUTDIR  default target/rpm
# Environment: SOURCE_DATE_EPOCH (default: the date of the top entry of
# packaging/debian/changelog), RPM_ARCH
# (default: rpm --eval %{_arch}), RPM_PACKAGER (the Packager tag).
# Prints the path of the .rpm on its last line.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pkg=$root/packaging

strip=1
if [[ ${1:-} == --no-strip ]]; then
    strip=0
    shift
fi
bin=${1:-$root/target/release/kes}
outdir=${2:-$root/target/rpm}

die() { echo "build-rpm: $*" >&2; exit 1; }
[[ -f $bin && -x $bin ]] || die "no executable binary at '$bin' (build it with: cargo build --release --locked)"
command -v rpmbuild >/dev/null || die "rpmbuild not found (Debian/Ubuntu: apt-get install rpm)"

version=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$root/Cargo.toml" | head -n1)
[[ -n $version ]] || die "cannot read the version from Cargo.toml"
arch=${RPM_ARCH:-$(rpm --eval '%{_arch}')}
# Release number and default timestamp: the same top entry of packaging/debian/changelog
# that build-deb.sh uses, so the two packages of one release agree.
changelog=$pkg/debian/changelog
debversion=$(sed -n '1s/^kes (\([^)]*\)).*/\1/p' "$changelog")
[[ ${debversion%-*} == "$version" ]] ||
    die "packaging/debian/changelog is at '$debversion' but Cargo.toml at '$version': add a changelog entry"
release=${debversion##*-}

if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
    SOURCE_DATE_EPOCH=$(date -d "$(sed -n 's/^ -- .*>  //p' "$changelog" | head -n1)" +%s) ||
        die "cannot read the date of the top entry of $changelog"
fi
export SOURCE_DATE_EPOCH
export TZ=UTC LC_ALL=C
changelog_date=$(date -u -d "@$SOURCE_DATE_EPOCH" '+%a %b %d %Y')

umask 022
top=$(mktemp -d)
trap 'rm -rf "$top"' EXIT
mkdir -p "$top"/{SOURCES,SPECS,BUILD,BUILDROOT,RPMS,SRPMS}
install -m 0755 "$bin" "$top/SOURCES/kes"
if ((strip)) && command -v strip >/dev/null; then
    strip --strip-unneeded --remove-section=.comment --remove-section=.note "$top/SOURCES/kes"
fi
cp "$root/systemd/kes.service" "$root/systemd/kes.sysusers" "$root/systemd/kes.tmpfiles" \
    "$pkg/config.yml" "$root/README.md" "$pkg/copyright" "$pkg/kes.1" "$top/SOURCES/"
cp "$pkg"/rpm/{pre,post,preun,postun}.sh "$pkg"/completions/kes.{bash,zsh} "$top/SOURCES/"
cp "$pkg/kes.spec" "$top/SPECS/"

rpmbuild -bb --quiet \
    --target "$arch" \
    --define "_topdir $top" \
    --define "kes_version $version" \
    --define "kes_release $release" \
    --define "kes_changelog_date $changelog_date" \
    --define "packager ${RPM_PACKAGER:-kes maintainers <packaging@kes.invalid>}" \
    --define "_buildhost reproducible" \
    --define "use_source_date_epoch_as_buildtime 1" \
    --define "clamp_mtime_to_source_date_epoch 1" \
    --define "_binary_payload w9.xzdio" \
    "$top/SPECS/kes.spec" >&2

mkdir -p "$outdir"
built=$(find "$top/RPMS" -name "kes-$version-$release.*.rpm" | head -n1)
[[ -n $built ]] || die "rpmbuild produced no package"
out=$outdir/$(basename "$built")
cp "$built" "$out"
echo "$out"
