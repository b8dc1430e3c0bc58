# %preun: on the last removal ($1 = 0) stop and disable the server before its binary goes.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now kes.service >/dev/null 2>&1 || :
fi
exit 0
