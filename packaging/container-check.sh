#!/usr/bin/env bash
# The packaged unit under a real systemd: boots a minimal Debian root file system with
# systemd as PID 1 in systemd-nspawn, installs the .deb, and runs the service the way an
# operator does. Run by check.sh as `container-check.sh DEB OUT`; every result goes to OUT
# as "PASS text" / "FAIL text" / "SKIP text". Where containers cannot run here (no
# mmdebstrap/systemd-nspawn, not root, no namespaces), it says SKIP and why, never PASS.
#
# The root file system is built once with mmdebstrap (about 60 s, ~210 MB, Debian's
# mirrors) and cached in $KES_CI_CACHE (default /var/cache/kes-ci); each run boots an
# ephemeral copy, so the cache stays clean. Whole run: about 30 s once cached.
set -uo pipefail
deb=$1 out=$2
res() { echo "$1 $2" >>"$out"; }
# ok DESC CMD...: PASS when CMD succeeds.
ok() { local d=$1; shift; if "$@" >/dev/null 2>&1; then res PASS "$d"; else res FAIL "$d"; fi; }

cache=${KES_CI_CACHE:-/var/cache/kes-ci}
rootfs=$cache/bookworm
for tool in mmdebstrap systemd-nspawn nsenter; do
    if ! command -v $tool >/dev/null; then
        res SKIP "container: $tool not installed (apt-get install mmdebstrap systemd-container): unit not run under systemd"
        exit 0
    fi
done
if [[ $(id -u) -ne 0 ]]; then
    res SKIP "container: needs root: unit not run under systemd"
    exit 0
fi
if ! unshare -p -f -m --mount-proc true 2>/dev/null; then
    res SKIP "container: PID and mount namespaces are not available here: unit not run under systemd"
    exit 0
fi
if [[ ! -x $rootfs/lib/systemd/systemd ]]; then
    mkdir -p "$cache"
    rm -rf "$rootfs.tmp"
    if ! mmdebstrap --quiet --variant=apt \
        --include=systemd,systemd-sysv,dbus,libcap2-bin,adduser,ca-certificates,curl,openssl \
        bookworm "$rootfs.tmp" >"$cache/mmdebstrap.log" 2>&1; then
        res SKIP "container: mmdebstrap could not build a Debian root (no mirror?): see $cache/mmdebstrap.log"
        exit 0
    fi
    mv "$rootfs.tmp" "$rootfs"
fi

log=$(mktemp)
systemd-nspawn -q -D "$rootfs" --ephemeral --boot --register=no --keep-unit \
    --private-network --capability=CAP_IPC_LOCK --bind-ro="$deb:/tmp/kes.deb" \
    >"$log" 2>&1 </dev/null &
nspawn=$!
pid1=
cleanup() {
    [[ -n $pid1 ]] && nsenter -t "$pid1" -a systemctl poweroff >/dev/null 2>&1
    for _ in $(seq 100); do kill -0 $nspawn 2>/dev/null || break; sleep 0.2; done
    kill $nspawn 2>/dev/null
    wait $nspawn 2>/dev/null
    rm -f "$log"
}
trap cleanup EXIT
for _ in $(seq 150); do
    pid1=$(ps -o pid= --ppid $nspawn 2>/dev/null | tr -d ' ' | head -n1)
    [[ -n $pid1 ]] && state=$(nsenter -t "$pid1" -a systemctl is-system-running 2>/dev/null) &&
        [[ $state == running || $state == degraded ]] && break
    kill -0 $nspawn 2>/dev/null || break
    sleep 0.2
done
if [[ -z $pid1 ]] || ! nsenter -t "$pid1" -a true 2>/dev/null; then
    res SKIP "container: systemd-nspawn could not boot the root here: $(tail -n3 "$log" | tr '\n' ' ')"
    exit 0
fi
res PASS "container: systemd booted as PID 1 (state ${state:-unknown})"
cin() { nsenter -t "$pid1" -a "$@"; }
sh_in() { nsenter -t "$pid1" -a sh -c "$1"; }

ok "container: dpkg -i installs the .deb on minimal Debian" cin dpkg -i /tmp/kes.deb
# Server TLS pair, an admin and an app identity, and a config with a policy for the app.
sh_in 'cd /root && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 -keyout /etc/kes/private.key \
    -out /etc/kes/public.crt && chown root:kes /etc/kes/private.key /etc/kes/public.crt &&
    chmod 0640 /etc/kes/private.key && kes identity new --key admin.key --cert admin.crt admin &&
    kes identity new --key app.key --cert app.crt app' >/dev/null 2>&1
admin=$(cin kes identity of /root/admin.crt 2>/dev/null | tail -n1 | tr -d ' \r')
app=$(cin kes identity of /root/app.crt 2>/dev/null | tail -n1 | tr -d ' \r')
config() { # $1: the app policy's allow list
    sh_in "cat >/etc/kes/config.yml <<END
address: 127.0.0.1:7373
admin:
  identity: $admin
tls:
  key: /etc/kes/private.key
  cert: /etc/kes/public.crt
policy:
  app:
    allow: [$1]
    identities: [$app]
log:
  error: on
  audit: on
keystore:
  fs:
    path: /var/lib/kes/keys
END"
}
config '/v1/key/generate/*'
as_admin() { sh_in "cd /root && KES_SERVER=https://127.0.0.1:7373 KES_CLIENT_KEY=admin.key KES_CLIENT_CERT=admin.crt kes $1 -k"; }
as_app() { sh_in "cd /root && KES_SERVER=https://127.0.0.1:7373 KES_CLIENT_KEY=app.key KES_CLIENT_CERT=app.crt kes $1 -k"; }

ok "container: the installed bash completion completes 'kes key c' to create" \
    sh_in 'test "$(bash -c ". /usr/share/bash-completion/completions/kes; COMP_WORDS=(kes key c); COMP_CWORD=2; COMP_LINE=\"kes key c\"; COMP_POINT=9; _kes; echo \${COMPREPLY[*]}")" = create'
ok "container: systemctl start kes (Type=notify) succeeds" cin systemctl start kes
ok "container: kes is active" cin systemctl is-active kes
main=$(cin systemctl show -p MainPID --value kes 2>/dev/null)
status=$(cin cat "/proc/$main/status" 2>/dev/null)
ok "container: runs as user kes" test "$(cin ps -o user= -p "$main" 2>/dev/null || cin stat -c %U "/proc/$main")" = kes
ok "container: Seccomp: 2" grep -qP '^Seccomp:\t2$' <<<"$status"
ok "container: NoNewPrivs: 1" grep -qP '^NoNewPrivs:\t1$' <<<"$status"
amb=$(sed -n 's/^CapAmb:\t//p' <<<"$status")
ok "container: CAP_IPC_LOCK is ambient (CapAmb $amb)" test $(((0x${amb:-0} >> 14) & 1)) -eq 1
lck=$(sed -n 's/^VmLck:\s*\([0-9]*\) kB/\1/p' <<<"$status")
ok "container: memory is locked (VmLck ${lck:-0} kB)" test "${lck:-0}" -gt 0
ok "container: the banner says MLock enabled" sh_in "journalctl -u kes -o cat | grep -q '^MLock *enabled'"
# glibc applies the unit's GLIBC_TUNABLES only outside its secure mode (AT_SECURE, auxv
# type 23), which a file capability on the binary turns on for anyone but root. The
# package's binary carries one (postinst setcap, for manual runs), yet the kernel ignores it
# here: under NoNewPrivileges=yes systemd mounts the service's file systems nosuid. So the
# server neither restarts itself nor warns.
secure=$(cin od -An -tu8 -w16 "/proc/$main/auxv" 2>/dev/null | awk '$1 == 23 { print $2 }')
fcaps=$(cin getcap /usr/bin/kes 2>/dev/null)
rootopts=$(cin awk '$5 == "/" { print $6 }' "/proc/$main/mountinfo" 2>/dev/null)
ok "container: not in glibc's secure mode, so the unit's GLIBC_TUNABLES apply (AT_SECURE ${secure:-?}; file caps '${fcaps}'; / mounted ${rootopts:-?})" test "$secure" = 0
ok "container: the server neither restarted itself nor warned about its tunables" \
    sh_in "! journalctl -u kes -o cat | grep -Eq '^Restart(ed|ing) with GLIBC_TUNABLES|secure mode'"

ok "container: the admin creates a key over mTLS" as_admin "key create k1"
ok "container: the app identity derives a data key from it" as_app "key dek k1"
ok "container: the app may not create keys yet" sh_in "! (cd /root && KES_SERVER=https://127.0.0.1:7373 KES_CLIENT_KEY=app.key KES_CLIENT_CERT=app.crt kes key create k2 -k)"
config '/v1/key/generate/*, /v1/key/create/*'
ok "container: the image has no /bin/kill (no procps)" sh_in 'test ! -e /bin/kill'
ok "container: systemctl reload kes succeeds" cin systemctl reload kes
ok "container: after the reload the changed policy lets the app create a key" as_app "key create k2"
ok "container: the reload printed one line naming the change" \
    sh_in "journalctl -u kes -o cat | grep -q \"completed. Changed: policy 'app' changed\""
sh_in "echo 'admin: [' >/etc/kes/config.yml"
ok "container: systemctl reload kes fails on a broken config" sh_in "! systemctl reload kes"
ok "container: systemctl status kes shows why" sh_in "systemctl status kes --no-pager -n 20 | grep -q 'reload refused, the server keeps its current configuration'"
ok "container: still active after the refused reload" cin systemctl is-active kes
ok "container: still serving after the refused reload" as_app "key dek k1"
ok "container: audit lines in journalctl -u kes" sh_in "journalctl -u kes -o cat | grep -q '\"path\":\"/v1/key/create/k2\"'"
score_in=$(cin systemd-analyze security kes 2>/dev/null | sed -n 's/.*Overall exposure level for kes.service: \([0-9.]*\) .*/\1/p')
offline=$(systemd-analyze security --offline=yes "$(dirname "$0")/../systemd/kes.service" 2>/dev/null | sed -n 's/.*Overall exposure level for kes.service: \([0-9.]*\) .*/\1/p')
ok "container: systemd-analyze security kes inside ($score_in) equals the offline figure ($offline)" test -n "$score_in" -a "$score_in" = "$offline"
ok "container: systemctl stop kes" cin systemctl stop kes
ok "container: the stop was clean (Result=success, exit status 0)" \
    sh_in 'test "$(systemctl show -p Result --value kes)" = success && test "$(systemctl show -p ExecMainStatus --value kes)" = 0'
ok "container: dpkg --purge kes" cin dpkg --purge kes
ok "container: purge removed the packaged config and the unit, and kept the operator's TLS files" \
    sh_in 'test ! -e /etc/kes/config.yml && test ! -e /usr/lib/systemd/system/kes.service && test -e /etc/kes/private.key'
