# %postun: on upgrade ($1 >= 1) a running server restarts on the new binary; a stopped
# one stays stopped. The key store (/var/lib/kes) and the kes user are never removed:
# deleting keys makes every ciphertext they protect unreadable.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart kes.service >/dev/null 2>&1 || :
    fi
fi
exit 0
