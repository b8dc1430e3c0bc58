#!/usr/bin/env bash
# Builds the kes .deb from an already built binary, with dpkg-deb only (no cargo-deb,
# no debhelper). The result is reproducible: the same binary and source tree give a
# byte-identical .deb (fixed mtimes from SOURCE_DATE_EPOCH, root:root ownership,
# single-threaded xz, gzip without names or timestamps).
#
# Usage: packaging/build-deb.sh [--no-strip] [BINARY] [OUTDIR]
#   BINARY  default target/release/kes
#   OUTDIR  default target/debian
# The Debian version and the default timestamp come from the top entry of
# packaging/debian/changelog, whose upstream part must equal Cargo.toml's version
# (bump both at a release; `dch -v X.Y.Z-1` writes the entry).
# Environment:
#   SOURCE_DATE_EPOCH  timestamp for every file (default: the changelog entry's date)
#   DEB_ARCH           Architecture field (default: dpkg --print-architecture)
#   DEB_MAINTAINER     Maintainer field
# Prints the path of the .deb on its last line.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pkg=$root/packaging

strip=1
if [[ ${1:-} == --no-strip ]]; then
    strip=0
    shift
fi
bin=${1:-$root/target/release/kes}
outdir=${2:-$root/target/debian}

die() { echo "build-deb: $*" >&2; exit 1; }
[[ -f $bin && -x $bin ]] || die "no executable binary at '$bin' (build it with: cargo build --release --locked)"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found"

# The [package] version: the first `version = "..."` line of Cargo.toml.
version=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$root/Cargo.toml" | head -n1)
[[ -n $version ]] || die "cannot read the version from Cargo.toml"
changelog=$pkg/debian/changelog
debversion=$(sed -n '1s/^kes (\([^)]*\)).*/\1/p' "$changelog")
[[ ${debversion%-*} == "$version" ]] ||
    die "packaging/debian/changelog is at '$debversion' but Cargo.toml at '$version': add a changelog entry"
arch=${DEB_ARCH:-$(dpkg --print-architecture)}
maintainer=${DEB_MAINTAINER:-kes maintainers <packaging@kes.invalid>}

if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
    SOURCE_DATE_EPOCH=$(date -d "$(sed -n 's/^ -- .*>  //p' "$changelog" | head -n1)" +%s) ||
        die "cannot read the date of the top entry of $changelog"
fi
export SOURCE_DATE_EPOCH
export TZ=UTC LC_ALL=C

umask 022
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
st=$work/kes_${debversion}_$arch
mkdir -p "$st"

# File tree. Modes are set explicitly so the local umask and checkout modes never leak.
install -D -m 0755 "$bin" "$st/usr/bin/kes"
if ((strip)) && command -v strip >/dev/null; then
    # A no-op for the release profile (strip = true); shrinks debug builds. Deterministic.
    strip --strip-unneeded --remove-section=.comment --remove-section=.note "$st/usr/bin/kes"
fi
install -D -m 0644 "$root/systemd/kes.service" "$st/usr/lib/systemd/system/kes.service"
install -D -m 0644 "$root/systemd/kes.sysusers" "$st/usr/lib/sysusers.d/kes.conf"
install -D -m 0644 "$root/systemd/kes.tmpfiles" "$st/usr/lib/tmpfiles.d/kes.conf"
install -d -m 0750 "$st/etc/kes"
# root:root in the archive; postinst registers a statoverride root:kes 0640.
install -m 0640 "$pkg/config.yml" "$st/etc/kes/config.yml"
doc=$st/usr/share/doc/kes
install -D -m 0644 "$root/README.md" "$doc/README.md"
install -m 0644 "$pkg/copyright" "$doc/copyright"
gzip -9n <"$changelog" >"$doc/changelog.Debian.gz"
chmod 0644 "$doc/changelog.Debian.gz"
install -d -m 0755 "$st/usr/share/man/man1"
gzip -9n <"$pkg/kes.1" >"$st/usr/share/man/man1/kes.1.gz"
chmod 0644 "$st/usr/share/man/man1/kes.1.gz"
# Completions: both ask the binary itself (COMP_LINE), so they never go stale.
install -D -m 0644 "$pkg/completions/kes.bash" "$st/usr/share/bash-completion/completions/kes"
install -D -m 0644 "$pkg/completions/kes.zsh" "$st/usr/share/zsh/vendor-completions/_kes"
install -D -m 0644 "$pkg/debian/lintian-overrides" "$st/usr/share/lintian/overrides/kes"

# Control area.
install -d -m 0755 "$st/DEBIAN"
for s in postinst prerm postrm; do
    install -m 0755 "$pkg/debian/$s" "$st/DEBIAN/$s"
done
echo /etc/kes/config.yml >"$st/DEBIAN/conffiles"
chmod 0644 "$st/DEBIAN/conffiles"
# Installed-Size in KiB from apparent sizes (block sizes depend on the filesystem).
size=$(du -s --apparent-size --block-size=1024 --exclude=DEBIAN "$st" | cut -f1)
cat >"$st/DEBIAN/control" <<EOF
Package: kes
Version: $debversion
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: libc6 (>= 2.34), adduser
Recommends: ca-certificates, libcap2-bin
Section: admin
Priority: optional
Description: hardened key server compatible with MinIO KES
 A hardened, synchronous drop-in replacement for MinIO's KES key server and
 its command-line client. It speaks the KES HTTP API over mutual TLS, reads
 upstream KES configuration files and keeps keys in a local directory or in
 Azure Key Vault.
 .
 The server locks its memory, is non-dumpable and confines its own system
 calls with seccomp. The package ships a hardened systemd unit (kes.service),
 which is installed but neither enabled nor started.
EOF
chmod 0644 "$st/DEBIAN/control"
(cd "$st" && find . \( -path ./DEBIAN -o -path ./etc \) -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$st/DEBIAN/md5sums"
chmod 0644 "$st/DEBIAN/md5sums"

# Fixed timestamps on everything, including directories and the control files.
find "$st" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$outdir"
out=$outdir/kes_${debversion}_$arch.deb
dpkg-deb --root-owner-group -Zxz --threads-max=1 --build "$st" "$out" >/dev/null
echo "$out"
