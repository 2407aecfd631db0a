# shellcheck shell=bash
# The logs role's health check (components/logs/index.ts): runs as root inside the role's bundle, last,
# on every run; exits non-zero with what is wrong on stderr. The test roots without systemd have no services.
# @settings-begin
readonly unit='leaninfra-victorialogs.service'
readonly upload_unit='systemd-journal-upload.service'
readonly timer='leaninfra-log-errors.timer'
readonly health_url='http://127.0.0.1:9428/health'
# @settings-end
if [ -d /run/systemd/system ]; then
  answer=''
  for _ in $(seq 30); do
    if answer=$(curl --fail --silent --max-time 5 "$health_url"); then break; fi
    sleep 1
  done
  if [ "$answer" != OK ]; then
    echo "VictoriaLogs does not answer OK on $health_url: systemctl status $unit; journalctl -u $unit" >&2
    exit 1
  fi
  if ! systemctl is-active --quiet "$upload_unit"; then
    echo "$upload_unit is not running, so the journal is not shipped to VictoriaLogs: systemctl status $upload_unit" >&2
    exit 1
  fi
  if ! systemctl is-enabled --quiet "$timer" || ! systemctl is-active --quiet "$timer"; then
    echo "$timer is not enabled and active: leaninfra_app_error_lines is not written (systemctl status $timer)" >&2
    exit 1
  fi
fi
