# %post: ownership of the config and the key store (kes.spec also declares them in
# %files; cargo-generate-rpm cannot declare directories, so this makes both agree).
# Only paths in root-owned directories are changed as root: inside /var/lib/kes the
# kes user could swap a directory for a symlink, so keys/ is left to systemd-tmpfiles
# (which refuses unsafe path transitions) or to the server, which creates it.
# Not enabled, not started: the config needs a TLS key and certificate first.
mkdir -p /etc/kes /var/lib/kes
chown root:kes /etc/kes /etc/kes/config.yml
chmod 0750 /etc/kes
chmod 0640 /etc/kes/config.yml
chown kes:kes /var/lib/kes
chmod 0700 /var/lib/kes
if command -v systemd-tmpfiles >/dev/null 2>&1; then
    systemd-tmpfiles --create /usr/lib/tmpfiles.d/kes.conf >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
