# %pre: the service user, as in kes.sysusers (systemd-sysusers is not on every RPM system).
getent group kes >/dev/null || groupadd -r kes
getent passwd kes >/dev/null || \
    useradd -r -g kes -d /var/lib/kes -M -s /usr/sbin/nologin -c "KES key server" kes
exit 0
