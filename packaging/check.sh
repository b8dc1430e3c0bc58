#!/usr/bin/env bash
# CI check of the packaging: builds the .deb (and the .rpm when rpmbuild exists) from
# a given binary, twice, and asserts contents, modes, owners, control fields,
# conffiles, maintainer scripts, the systemd unit, reproducibility and lint.
#
# Usage: packaging/check.sh [BINARY]        (default target/debug/kes)
#
# Optional parts run only when their tool is there and say "skip" otherwise:
# systemd-analyze, lintian, rpmbuild/rpm, rpmlint, openssl (example config loads),
# and, as root with unshare + overlayfs, a real `dpkg -i` / purge in a throwaway
# overlay of / that leaves the machine untouched.
# Last line: "N passed, F failed"; the exit status is non-zero when F > 0.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pkg=$root/packaging
self=$pkg/$(basename "${BASH_SOURCE[0]}")

# ---------------------------------------------------------------------------------
# Install test, run by the main script as `unshare -m check.sh --install-test DEB OUT`.
# Every result goes to OUT as "PASS text" / "FAIL text" / "SKIP text".
if [[ ${1:-} == --install-test ]]; then
    deb=$2 out=$3
    res() { echo "$1 $2" >>"$out"; }
    ok() { if "$@" >/dev/null 2>&1; then res PASS "$desc"; else res FAIL "$desc"; fi; }
    base=$(mktemp -d)
    server_pid=
    cleanup() {
        [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
        umount -R "$base" 2>/dev/null
        rmdir "$base" 2>/dev/null
    }
    trap cleanup EXIT
    if ! mount -t tmpfs tmpfs "$base" 2>/dev/null; then
        res SKIP "install test: cannot mount a tmpfs"
        exit 0
    fi
    mkdir -p "$base"/{upper,work,m}
    m=$base/m
    if ! mount -t overlay overlay -o "lowerdir=/,upperdir=$base/upper,workdir=$base/work" "$m" 2>/dev/null; then
        res SKIP "install test: overlayfs over / is not available"
        exit 0
    fi
    mount --bind /proc "$m/proc" && mount --bind /dev "$m/dev"
    mkdir -p "$m/tmp" && cp "$deb" "$m/tmp/kes.deb"
    inroot() { chroot "$m" "$@"; }
    if inroot getent passwd kes >/dev/null; then
        res SKIP "install test: a kes user already exists on this machine"
        exit 0
    fi

    desc="install: dpkg -i succeeds" ok inroot dpkg -i /tmp/kes.deb
    desc="install: system user kes exists with home /var/lib/kes and nologin" \
        ok bash -c "chroot '$m' getent passwd kes | grep -q '^kes:x:[0-9]*:[0-9]*:.*:/var/lib/kes:/usr/sbin/nologin$'"
    st() { inroot stat -c '%a %U:%G' "$1" 2>/dev/null; }
    for spec in "/etc/kes|750 root:kes" "/etc/kes/config.yml|640 root:kes" \
        "/var/lib/kes|700 kes:kes" "/var/lib/kes/keys|700 kes:kes" "/usr/bin/kes|755 root:root"; do
        p=${spec%%|*} want=${spec#*|}
        got=$(st "$p")
        desc="install: $p is $want (got '$got')" ok test "$got" = "$want"
    done
    desc="install: dpkg-statoverride pins /etc/kes/config.yml to root:kes 640" \
        ok bash -c "chroot '$m' dpkg-statoverride --list /etc/kes/config.yml | grep -qx 'root kes 640 /etc/kes/config.yml'"
    if inroot sh -c 'command -v getcap' >/dev/null; then
        desc="install: /usr/bin/kes has cap_ipc_lock=ep (setcap in postinst)" \
            ok bash -c "chroot '$m' getcap /usr/bin/kes | grep -q 'cap_ipc_lock=ep'"
    else
        res SKIP "install: getcap not installed"
    fi
    desc="install: the service is neither enabled nor started" \
        ok test ! -e "$m/etc/systemd/system/multi-user.target.wants/kes.service"

    # The packaged server, as the kes user, on the packaged config (plus a throwaway
    # TLS pair): reads root:kes 0640 files, uses /var/lib/kes/keys, and locks memory
    # through the file capability alone (--mlock makes that mandatory).
    if command -v openssl >/dev/null && command -v setpriv >/dev/null; then
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
            -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$m/etc/kes/private.key" -out "$m/etc/kes/public.crt" >/dev/null 2>&1
        inroot chown root:kes /etc/kes/private.key /etc/kes/public.crt
        inroot chmod 0640 /etc/kes/private.key /etc/kes/public.crt
        log=$base/server.log
        chroot "$m" setpriv --reuid=kes --regid=kes --init-groups \
            /usr/bin/kes server --config /etc/kes/config.yml --addr 127.0.0.1:0 --mlock >"$log" 2>&1 &
        server_pid=$!
        for _ in $(seq 1 100); do
            grep -q 'Server is up' "$log" 2>/dev/null && break
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.2
        done
        desc="install: kes (as user kes, --mlock) starts on the packaged config" ok grep -q 'Server is up' "$log"
        desc="install: memory locked by the file capability (banner: MLock enabled)" ok grep -Eq '^MLock +enabled' "$log"
        desc="install: fs key store at /var/lib/kes/keys" ok grep -q 'Filesystem: /var/lib/kes/keys' "$log"
        grep -q 'Server is up' "$log" || sed 's/^/    server: /' "$log" >&2
        kill "$server_pid" 2>/dev/null
        wait "$server_pid" 2>/dev/null
        server_pid=

        # The unit's way: NoNewPrivileges (file caps ignored), ambient CAP_IPC_LOCK,
        # GLIBC_TUNABLES, no core files, and READY=1 on NOTIFY_SOCKET from behind the
        # server's own seccomp filter. RLIMIT_MEMLOCK stays as it is (a sandbox may lack
        # CAP_SYS_RESOURCE to raise it): CAP_IPC_LOCK alone must be enough.
        if command -v prlimit >/dev/null; then
            notify=0
            sock=/run/kes-check-notify.sock
            if grep -q NOTIFY_SOCKET "$m/usr/bin/kes" && command -v python3 >/dev/null; then
                notify=1
                rm -f "$m$sock"
                python3 - "$m$sock" "$base/notify.msg" <<'EOF' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(20)
try:
    msg = s.recv(4096)
except OSError:
    msg = b""
open(sys.argv[2], "wb").write(msg)
EOF
                listener=$!
                for _ in $(seq 1 50); do [[ -S $m$sock ]] && break; sleep 0.1; done
                chmod 0777 "$m$sock" 2>/dev/null
            fi
            # Without the file capability, so that only the ambient one can lock memory
            # (some kernels honour file caps even under no_new_privs).
            inroot setcap -r /usr/bin/kes 2>/dev/null
            log=$base/server-unit.log
            chroot "$m" env NOTIFY_SOCKET=$sock GLIBC_TUNABLES=glibc.pthread.stack_cache_size=0:glibc.malloc.tcache_count=0 RUST_MIN_STACK=262144 \
                prlimit --core=0:0 \
                setpriv --reuid=kes --regid=kes --init-groups --no-new-privs \
                --inh-caps=-all,+ipc_lock --ambient-caps=-all,+ipc_lock --bounding-set=-all,+ipc_lock \
                /usr/bin/kes server --config /etc/kes/config.yml --addr 127.0.0.1:0 --mlock >"$log" 2>&1 &
            server_pid=$!
            for _ in $(seq 1 100); do
                grep -q 'Server is up' "$log" 2>/dev/null && break
                kill -0 "$server_pid" 2>/dev/null || break
                sleep 0.1
            done
            desc="install: as the unit runs it (NoNewPrivileges, ambient CAP_IPC_LOCK, no file cap): MLock enabled" \
                ok grep -Eq '^MLock +enabled' "$log"
            grep -Eq '^MLock +enabled' "$log" || sed 's/^/    server: /' "$log" >&2
            if ((notify)); then
                for _ in $(seq 1 100); do
                    kill -0 "$listener" 2>/dev/null || break
                    sleep 0.1
                done
                kill "$listener" 2>/dev/null
                wait "$listener" 2>/dev/null
                desc="install: READY=1 reaches NOTIFY_SOCKET from behind the seccomp filter" \
                    ok grep -q '^READY=1' "$base/notify.msg"
            else
                res SKIP "install: binary without sd_notify (or no python3): READY=1 not checked"
            fi
            kill "$server_pid" 2>/dev/null
            wait "$server_pid" 2>/dev/null
            server_pid=
        else
            res SKIP "install: prlimit missing: unit-style start not tried"
        fi
    else
        res SKIP "install: openssl or setpriv missing, server start not tried"
    fi

    desc="install: reinstall (upgrade path) succeeds" ok inroot dpkg -i /tmp/kes.deb
    desc="install: config keeps root:kes 640 after reinstall" ok test "$(st /etc/kes/config.yml)" = "640 root:kes"
    desc="install: dpkg --purge succeeds" ok inroot dpkg --purge kes
    desc="install: purge keeps the key store /var/lib/kes" ok test -d "$m/var/lib/kes"
    desc="install: purge removes the statoverrides" \
        ok bash -c "! chroot '$m' dpkg-statoverride --list | grep -q ' /etc/kes'"
    exit 0
fi

# ---------------------------------------------------------------------------------
bin=${1:-$root/target/debug/kes}
passed=0 failed=0 skipped=0
pass() { passed=$((passed + 1)); echo "ok    $*"; }
fail() { failed=$((failed + 1)); echo "FAIL  $*"; }
skip() { skipped=$((skipped + 1)); echo "skip  $*"; }
report() { # a results file of "PASS|FAIL|SKIP text" lines
    while read -r kind text; do
        case $kind in
        PASS) pass "$text" ;;
        FAIL) fail "$text" ;;
        SKIP) skip "$text" ;;
        esac
    done <"$1"
}
check() { # description, command...
    local d=$1
    shift
    if "$@" >/dev/null 2>&1; then pass "$d"; else fail "$d"; fi
}
finish() {
    echo "($skipped optional checks skipped)"
    echo "$passed passed, $failed failed"
    ((failed == 0))
    exit
}

if [[ ! -x $bin ]]; then
    fail "binary '$bin' exists (build it with: cargo build --locked)"
    finish
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

version=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$root/Cargo.toml" | head -n1)
debversion=$(sed -n '1s/^kes (\([^)]*\)).*/\1/p' "$pkg/debian/changelog")
check "packaging/debian/changelog top entry ($debversion) matches Cargo.toml ($version)" \
    test "${debversion%-*}" = "$version"

# --- Debian ------------------------------------------------------------------------
echo "== deb"
if ! command -v dpkg-deb >/dev/null; then
    fail "dpkg-deb is installed"
    finish
fi
arch=$(dpkg --print-architecture)
deb1=$("$pkg/build-deb.sh" "$bin" "$work/deb1" 2>"$work/deb1.err" | tail -n1)
check "build-deb.sh builds a .deb" test -f "$deb1"
[[ -f $deb1 ]] || { cat "$work/deb1.err"; finish; }
sleep 1 # a second build one second later must not differ
deb2=$("$pkg/build-deb.sh" "$bin" "$work/deb2" 2>/dev/null | tail -n1)
check "the .deb is named kes_${debversion}_$arch.deb" test "$(basename "$deb1")" = "kes_${debversion}_$arch.deb"
sha1=$(sha256sum "$deb1" | cut -d' ' -f1)
sha2=$(sha256sum "$deb2" 2>/dev/null | cut -d' ' -f1)
check "two builds of the same input are byte-identical (sha256 $sha1)" test "$sha1" = "$sha2"

field() { dpkg-deb -f "$deb1" "$1"; }
check "control: Package is kes" test "$(field Package)" = kes
check "control: Version is $debversion" test "$(field Version)" = "$debversion"
check "control: Architecture is $arch" test "$(field Architecture)" = "$arch"
check "control: Depends has libc6 (>= 2.34)" grep -q 'libc6 (>= 2.34)' <<<"$(field Depends)"
check "control: Maintainer is set" grep -Eq '^.+ <[^>]+@[^>]+>$' <<<"$(field Maintainer)"
check "control: Description has a synopsis and a long text" test "$(field Description | wc -l)" -ge 3
check "control: Installed-Size is a number" grep -Eq '^[0-9]+$' <<<"$(field Installed-Size)"

ctrl=$work/control
dpkg-deb -e "$deb1" "$ctrl"
check "conffiles lists exactly /etc/kes/config.yml" test "$(cat "$ctrl/conffiles")" = /etc/kes/config.yml
for s in postinst prerm postrm; do
    check "maintainer script $s is 0755 and parses with sh -n" \
        bash -c "test \"\$(stat -c %a '$ctrl/$s')\" = 755 && sh -n '$ctrl/$s'"
done
check "postinst creates the kes user (systemd-sysusers or adduser)" \
    grep -Eq 'systemd-sysusers /usr/lib/sysusers.d/kes.conf|adduser --system' "$ctrl/postinst"
check "postinst grants cap_ipc_lock for manual runs, tolerating failure" \
    grep -q 'setcap cap_ipc_lock=+ep /usr/bin/kes || true' "$ctrl/postinst"
check "postinst reloads systemd" grep -q 'daemon-reload' "$ctrl/postinst"
check "no maintainer script enables or starts the service" \
    bash -c "! cat '$ctrl/postinst' '$ctrl/prerm' '$ctrl/postrm' | grep -v '^ *#' | grep -Eq '(systemctl|deb-systemd-invoke|deb-systemd-helper)[^#]* (enable|start)( |$)'"
check "postrm never deletes the key store" bash -c "! grep -Eq 'rm -[a-z]*r[a-z]* .*/var/lib/kes' '$ctrl/postrm'"

# Every file and directory, with mode and owner, and nothing else.
listing=$work/listing
dpkg-deb -c "$deb1" | awk '{print $1, $2, $6}' >"$listing"
expect=$work/expect
cat >"$expect" <<'EOF'
drwxr-xr-x root/root ./
drwxr-xr-x root/root ./etc/
drwxr-x--- root/root ./etc/kes/
-rw-r----- root/root ./etc/kes/config.yml
drwxr-xr-x root/root ./usr/
drwxr-xr-x root/root ./usr/bin/
-rwxr-xr-x root/root ./usr/bin/kes
drwxr-xr-x root/root ./usr/lib/
drwxr-xr-x root/root ./usr/lib/systemd/
drwxr-xr-x root/root ./usr/lib/systemd/system/
-rw-r--r-- root/root ./usr/lib/systemd/system/kes.service
drwxr-xr-x root/root ./usr/lib/sysusers.d/
-rw-r--r-- root/root ./usr/lib/sysusers.d/kes.conf
drwxr-xr-x root/root ./usr/lib/tmpfiles.d/
-rw-r--r-- root/root ./usr/lib/tmpfiles.d/kes.conf
drwxr-xr-x root/root ./usr/share/
drwxr-xr-x root/root ./usr/share/bash-completion/
drwxr-xr-x root/root ./usr/share/bash-completion/completions/
-rw-r--r-- root/root ./usr/share/bash-completion/completions/kes
drwxr-xr-x root/root ./usr/share/doc/
drwxr-xr-x root/root ./usr/share/doc/kes/
-rw-r--r-- root/root ./usr/share/doc/kes/README.md
-rw-r--r-- root/root ./usr/share/doc/kes/changelog.Debian.gz
-rw-r--r-- root/root ./usr/share/doc/kes/copyright
drwxr-xr-x root/root ./usr/share/lintian/
drwxr-xr-x root/root ./usr/share/lintian/overrides/
-rw-r--r-- root/root ./usr/share/lintian/overrides/kes
drwxr-xr-x root/root ./usr/share/man/
drwxr-xr-x root/root ./usr/share/man/man1/
-rw-r--r-- root/root ./usr/share/man/man1/kes.1.gz
drwxr-xr-x root/root ./usr/share/zsh/
drwxr-xr-x root/root ./usr/share/zsh/vendor-completions/
-rw-r--r-- root/root ./usr/share/zsh/vendor-completions/_kes
EOF
while read -r mode owner path; do
    check "data: $path is $mode $owner" grep -qxF -e "$mode $owner $path" "$listing"
done <"$expect"
check "data: no file beyond the expected $(wc -l <"$expect") entries" \
    test "$(sort "$listing" | comm -23 - <(sort "$expect") | wc -l)" -eq 0
if ! cmp -s <(sort "$listing") <(sort "$expect"); then
    diff <(sort "$expect") <(sort "$listing") | sed 's/^/    /'
fi

tree=$work/tree
dpkg-deb -x "$deb1" "$tree"
sde=$(date -d "$(sed -n 's/^ -- .*>  //p' "$pkg/debian/changelog" | head -n1)" +%s)
check "every mtime is the changelog date (SOURCE_DATE_EPOCH $sde)" \
    test "$(find "$tree" -mindepth 1 -printf '%T@\n' | sed 's/\..*//' | sort -u)" = "$sde"
check "the packaged unit is systemd/kes.service" cmp "$tree/usr/lib/systemd/system/kes.service" "$root/systemd/kes.service"
check "the packaged config is packaging/config.yml" cmp "$tree/etc/kes/config.yml" "$pkg/config.yml"
check "the packaged sysusers.d and tmpfiles.d files are systemd/kes.{sysusers,tmpfiles}" \
    bash -c "cmp '$tree/usr/lib/sysusers.d/kes.conf' '$root/systemd/kes.sysusers' && cmp '$tree/usr/lib/tmpfiles.d/kes.conf' '$root/systemd/kes.tmpfiles'"
check "md5sums cover every shipped non-conffile" \
    bash -c "cd '$tree' && md5sum --quiet -c '$ctrl/md5sums' && test \$(wc -l <'$ctrl/md5sums') -eq \$(find . -type f ! -path './etc/*' | wc -l)"
check "the packaged binary runs and reports version $version" \
    grep -q "$version" <<<"$("$tree/usr/bin/kes" --version 2>&1)"
# Completions from the package, driving the packaged binary as the shells do.
check "bash completion: 'kes key c<TAB>' offers create" \
    test "$(PATH=$tree/usr/bin:$PATH bash -c '. "$0"; COMP_WORDS=(kes key c); COMP_CWORD=2
        COMP_LINE="kes key c"; COMP_POINT=9; _kes; printf "%s\n" "${COMPREPLY[@]}"' \
        "$tree/usr/share/bash-completion/completions/kes")" = create
check "bash completion: 'kes server --signal<TAB>' offers --signal-reload" \
    test "$(PATH=$tree/usr/bin:$PATH bash -c '. "$0"; COMP_WORDS=(kes server --signal); COMP_CWORD=2
        COMP_LINE="kes server --signal"; COMP_POINT=19; _kes; printf "%s\n" "${COMPREPLY[@]}"' \
        "$tree/usr/share/bash-completion/completions/kes")" = --signal-reload
if command -v zsh >/dev/null; then
    check "zsh completion: _kes parses and calls the packaged binary" \
        zsh -n "$tree/usr/share/zsh/vendor-completions/_kes"
else
    check "zsh completion: _kes is a #compdef file asking kes through COMP_LINE" \
        bash -c "head -n1 '$tree/usr/share/zsh/vendor-completions/_kes' | grep -qx '#compdef kes' && grep -q COMP_LINE '$tree/usr/share/zsh/vendor-completions/_kes'"
    skip "zsh not installed: zsh completion not run"
fi
check "sysusers.d declares the kes system user" grep -Eq '^u +kes +- ' "$root/systemd/kes.sysusers"
check "tmpfiles.d makes /var/lib/kes 0700 kes:kes" grep -Eq '^d +/var/lib/kes +0700 +kes +kes' "$root/systemd/kes.tmpfiles"

# --- The systemd unit --------------------------------------------------------------
echo "== systemd unit"
unit=$tree/usr/lib/systemd/system/kes.service
for line in 'Type=notify' 'NotifyAccess=main' 'User=kes' 'Group=kes' \
    'ExecStartPre=/usr/bin/kes server --check --config /etc/kes/config.yml' \
    'ExecStart=/usr/bin/kes server --config /etc/kes/config.yml' \
    'ExecReload=/usr/bin/kes server --config /etc/kes/config.yml --signal-reload $MAINPID' \
    'Restart=on-failure' \
    'LimitMEMLOCK=infinity' 'LimitCORE=0' 'AmbientCapabilities=CAP_IPC_LOCK' \
    'CapabilityBoundingSet=CAP_IPC_LOCK' 'NoNewPrivileges=yes' 'ProtectSystem=strict' \
    'ProtectHome=yes' 'PrivateTmp=yes' 'PrivateDevices=yes' 'ProtectKernelTunables=yes' \
    'ProtectKernelModules=yes' 'ProtectControlGroups=yes' 'RestrictNamespaces=yes' \
    'RestrictSUIDSGID=yes' 'MemoryDenyWriteExecute=yes' 'LockPersonality=yes' \
    'SystemCallArchitectures=native' 'SystemCallFilter=@system-service' \
    'SystemCallFilter=seccomp mlockall' 'StateDirectory=kes' 'ConfigurationDirectory=kes' \
    'UMask=0077'; do
    check "unit: $line" grep -qxF "$line" "$unit"
done
check "unit: Environment has no glibc stack cache nor tcache" grep -Eq '^Environment=.*\bGLIBC_TUNABLES=glibc\.pthread\.stack_cache_size=0:glibc\.malloc\.tcache_count=0\b' "$unit"
check "unit: the seccomp allow line comes after every deny line" \
    bash -c "test \$(grep -n '^SystemCallFilter=seccomp' '$unit' | cut -d: -f1) -gt \$(grep -n '^SystemCallFilter=~' '$unit' | tail -n1 | cut -d: -f1)"
if command -v systemd-analyze >/dev/null; then
    # verify wants ExecStart to exist: point a copy at the extracted binary.
    mkdir -p "$work/unit"
    sed "s#/usr/bin/kes#$tree/usr/bin/kes#g" "$unit" >"$work/unit/kes.service"
    check "systemd-analyze verify reports nothing" \
        bash -c "out=\$(systemd-analyze verify '$work/unit/kes.service' 2>&1) && test -z \"\$out\""
    score=$(systemd-analyze security --offline=yes "$unit" 2>/dev/null | sed -n 's/.*Overall exposure level for kes.service: \([0-9.]*\) .*/\1/p')
    check "systemd-analyze security --offline: exposure $score <= 2.0" \
        systemd-analyze security --offline=yes --threshold=20 "$unit"
    check "the exposure score recorded in the unit's comment is the measured one ($score)" \
        grep -q "Overall exposure level for kes.service: $score " "$root/systemd/kes.service"
else
    skip "systemd-analyze not installed: unit not verified"
fi

# --- The example config loads in the packaged binary -------------------------------
echo "== example config"
if command -v openssl >/dev/null; then
    cfgdir=$work/cfg
    mkdir -p "$cfgdir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$cfgdir/private.key" -out "$cfgdir/public.crt" >/dev/null 2>&1
    sed "s#/etc/kes/#$cfgdir/#g; s#/var/lib/kes/keys#$cfgdir/keys#" "$pkg/config.yml" >"$cfgdir/config.yml"
    # The unit's ExecStartPre= line, as systemd would run it, on the moved config.
    pre=$(sed -n 's/^ExecStartPre=//p' "$unit" | sed "s#/usr/bin/kes#$tree/usr/bin/kes#; s#/etc/kes/config.yml#$cfgdir/config.yml#")
    check "the unit's ExecStartPre= (kes server --check) accepts packaging/config.yml" $pre
    sed 's#^\(  cert: \).*#\1/nonexistent.crt#' "$cfgdir/config.yml" >"$cfgdir/broken.yml"
    check "the unit's ExecStartPre= refuses a config whose certificate is missing" \
        bash -c "! ${pre/config.yml/broken.yml} >/dev/null 2>&1"
    "$tree/usr/bin/kes" server --config "$cfgdir/config.yml" --addr 127.0.0.1:0 --no-mlock >"$cfgdir/log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
        grep -q 'Server is up' "$cfgdir/log" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    check "kes server starts on packaging/config.yml (paths moved to a temp dir)" grep -q 'Server is up' "$cfgdir/log"
    grep -q 'Server is up' "$cfgdir/log" || sed 's/^/    server: /' "$cfgdir/log"
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
else
    skip "openssl not installed: example config not started"
fi

# --- lintian -----------------------------------------------------------------------
echo "== lintian"
if command -v lintian >/dev/null; then
    # Errors and warnings fail; info/pedantic/experimental tags are listed (they come
    # and go with dependencies, e.g. a typo in a crate's strings).
    lint=$(lintian -EvIL +pedantic --tag-display-limit 0 "$deb1" 2>&1 | grep -v 'root privileges')
    check "lintian reports no error or warning (shipped overrides applied)" \
        bash -c "! grep -Eq '^[EW]: ' <<<\"\$1\"" _ "$lint"
    [[ -n $lint ]] && sed 's/^/    /' <<<"$lint"
else
    skip "lintian not installed"
fi

# --- Cargo.toml metadata stays in step with the script -----------------------------
echo "== Cargo.toml metadata"
if python3 -c 'import tomllib' 2>/dev/null; then
    meta() { python3 - "$root/Cargo.toml" "$1" <<'EOF'
import sys, tomllib
m = tomllib.load(open(sys.argv[1], "rb"))["package"]["metadata"]
if sys.argv[2] == "deb":
    d = m["deb"]
    for src, dest, mode in d["assets"]:
        dest = "/" + dest + (src.rsplit("/", 1)[-1] if dest.endswith("/") else "")
        print(dest, mode)
    print("depends", d["depends"]); print("conf", *d["conf-files"])
else:
    r = m["generate-rpm"]
    for a in r["assets"]:
        print(a["dest"], a["mode"], a.get("caps", "-"), a.get("config", "-"))
    for k in ("pre_install_script", "post_install_script", "pre_uninstall_script", "post_uninstall_script"):
        print("script", r[k])
EOF
    }
    debmeta=$(meta deb)
    while read -r dest mode; do
        [[ $dest == depends || $dest == conf ]] && continue
        path=.${dest%.1}
        [[ $dest == *.1 ]] && path=.$dest.gz # cargo-deb gzips man pages itself
        want=$(stat -c %a "$tree/$path" 2>/dev/null)
        check "cargo-deb asset $dest has mode $mode like the script's package" test "$want" = "$mode"
    done <<<"$debmeta"
    check "cargo-deb depends matches the control file" \
        test "$(sed -n 's/^depends //p' <<<"$debmeta")" = "$(field Depends)"
    check "cargo-deb conf-files is /etc/kes/config.yml" grep -qx 'conf /etc/kes/config.yml' <<<"$debmeta"
    rpmmeta=$(meta rpm)
    check "generate-rpm: /usr/bin/kes carries cap_ipc_lock=ep" grep -qx '/usr/bin/kes 755 cap_ipc_lock=ep -' <<<"$rpmmeta"
    check "generate-rpm: config is noreplace, 640" grep -qx '/etc/kes/config.yml 640 - noreplace' <<<"$rpmmeta"
    check "generate-rpm: scriptlet files exist" \
        bash -c "cd '$root' && for f in $(sed -n 's/^script //p' <<<"$rpmmeta" | tr '\n' ' '); do test -f \$f || exit 1; done"
else
    skip "python3 with tomllib missing: Cargo.toml metadata not compared"
fi

# --- RPM ---------------------------------------------------------------------------
echo "== rpm"
if command -v rpmbuild >/dev/null && command -v rpm >/dev/null; then
    rpm1=$("$pkg/build-rpm.sh" "$bin" "$work/rpm1" 2>"$work/rpm1.err" | tail -n1)
    check "build-rpm.sh builds an .rpm" test -f "$rpm1"
    if [[ -f $rpm1 ]]; then
        rpm2=$("$pkg/build-rpm.sh" "$bin" "$work/rpm2" 2>/dev/null | tail -n1)
        check "two rpm builds are byte-identical" test "$(sha256sum <"$rpm1")" = "$(sha256sum <"$rpm2")"
        q() { rpm -qp "$@" "$rpm1" 2>/dev/null; }
        check "rpm: name-version-release is kes-$version-${debversion##*-}" \
            test "$(q --qf '%{NAME}-%{VERSION}-%{RELEASE}')" = "kes-$version-${debversion##*-}"
        dump=$(q --dump | awk '{print $1, $5, $6, $7}')
        for spec in "/usr/bin/kes 0100755 root root" "/etc/kes 040750 root kes" \
            "/etc/kes/config.yml 0100640 root kes" "/var/lib/kes 040700 kes kes" \
            "/usr/lib/systemd/system/kes.service 0100644 root root" \
            "/usr/lib/sysusers.d/kes.conf 0100644 root root" "/usr/lib/tmpfiles.d/kes.conf 0100644 root root" \
            "/usr/share/doc/kes/README.md 0100644 root root" "/usr/share/doc/kes/copyright 0100644 root root" \
            "/usr/share/man/man1/kes.1.gz 0100644 root root" \
            "/usr/share/bash-completion/completions/kes 0100644 root root" \
            "/usr/share/zsh/site-functions/_kes 0100644 root root"; do
            check "rpm -qpl: ${spec% * * *} is ${spec#* }" grep -qxF "$spec" <<<"$dump"
        done
        check "rpm: exactly 12 paths, no build-id links" test "$(q -l | wc -l)" -eq 12
        check "rpm: /etc/kes/config.yml is %config(noreplace)" \
            grep -qx '/etc/kes/config.yml cn' <<<"$(q --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]')"
        check "rpm: /usr/bin/kes has file capability cap_ipc_lock=ep" \
            grep -q '^/usr/bin/kes.*cap_ipc_lock=ep' <<<"$(q --filecaps)"
        check "rpm: Requires glibc >= 2.34" grep -qx 'glibc >= 2.34' <<<"$(q -R)"
        scripts=$(q --scripts)
        check "rpm --scripts: %pre creates the kes user" grep -q 'useradd -r -g kes' <<<"$scripts"
        check "rpm --scripts: %post fixes ownership and reloads systemd" \
            bash -c "grep -q 'chown root:kes /etc/kes' <<<'$scripts' && grep -q daemon-reload <<<'$scripts'"
        check "rpm --scripts: nothing enables or starts the service" \
            bash -c "! grep -v '^ *#' <<<'$scripts' | grep -Eq 'systemctl[^#]* (enable|start)( |$)'"
        check "rpm --scripts: the scriptlets are packaging/rpm/*.sh verbatim" \
            bash -c "for s in pre post preun postun; do grep -qF \"\$(head -n1 '$pkg/rpm/'\$s.sh)\" <<<'$scripts' || exit 1; done"
        if command -v rpmlint >/dev/null; then
            # The spec is linted next to its scriptlet sources, as rpmbuild sees it.
            mkdir -p "$work/spec"
            cp "$pkg/kes.spec" "$pkg"/rpm/*.sh "$work/spec/"
            rl=$(rpmlint -r "$pkg/kes.rpmlintrc" "$rpm1" "$work/spec/kes.spec" 2>&1)
            check "rpmlint (with packaging/kes.rpmlintrc) reports 0 errors, 0 warnings" \
                grep -q ' 0 errors, 0 warnings' <<<"$rl"
            grep -E ': [EW]: ' <<<"$rl" | sed 's/^/    /'
        else
            skip "rpmlint not installed"
        fi
    else
        cat "$work/rpm1.err"
    fi
else
    skip "rpmbuild not installed (apt-get install rpm): rpm not built"
fi

# --- A real install in a throwaway overlay ------------------------------------------
echo "== install test"
if [[ $(id -u) -eq 0 ]] && command -v unshare >/dev/null && command -v chroot >/dev/null; then
    results=$work/install-results
    : >"$results"
    unshare -m "$self" --install-test "$deb1" "$results"
    report "$results"
    [[ -s $results ]] || skip "install test produced no result (unshare -m failed?)"
else
    skip "install test needs root and unshare"
fi

# --- The unit under a real systemd (systemd-nspawn) ----------------------------------
echo "== systemd container test"
results=$work/container-results
: >"$results"
"$pkg/container-check.sh" "$deb1" "$results"
report "$results"
[[ -s $results ]] || fail "container test produced no result"

finish
