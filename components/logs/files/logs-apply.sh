# shellcheck shell=bash
# The logs role's apply step (components/logs/index.ts): runs as root inside the role's bundle on every
# run. On the VM: the pinned VictoriaLogs installed (restarted when its binary changed), then VictoriaLogs,
# the journal upload and the error-lines timer enabled and running. The test roots without systemd only
# get the files.
# @settings-begin
readonly installer='/usr/local/sbin/leaninfra-victorialogs-install'
readonly unit='leaninfra-victorialogs.service'
readonly upload_unit='systemd-journal-upload.service'
readonly timer='leaninfra-log-errors.timer'
# @settings-end
if [ -d /run/systemd/system ]; then
  changed=$("$installer" activate)
  if [ -n "$changed" ]; then
    echo "$changed"
    systemctl restart "$unit"
    echo "restarted $unit on its new binary"
  fi
  for u in "$unit" "$upload_unit" "$timer"; do
    if ! systemctl is-enabled --quiet "$u"; then
      systemctl enable --quiet "$u"
      echo "enabled $u at boot"
    fi
    if ! systemctl is-active --quiet "$u"; then
      systemctl start "$u"
      echo "started $u"
    fi
  done
fi
