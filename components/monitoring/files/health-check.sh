# shellcheck shell=bash
# The monitoring role's health check (components/monitoring/index.ts): runs as root inside the role's
# bundle, last, on every run; exits non-zero with what is wrong on stderr. The test roots have no systemd.
# @settings-begin
readonly -a units=('prometheus' 'prometheus-alertmanager')
readonly prometheus_url='http://127.0.0.1:9090'
readonly alertmanager_url='http://127.0.0.1:9093'
# @settings-end
cd /
if [ -d /run/systemd/system ]; then
  for unit in "${units[@]}"; do
    if ! systemctl is-active --quiet "$unit"; then
      echo "$unit is not running: systemctl status $unit; journalctl -u $unit" >&2
      exit 1
    fi
  done
  # Started is not ready: both answer their readiness endpoint within a minute.
  for url in "$prometheus_url/-/ready" "$alertmanager_url/-/ready"; do
    for _ in $(seq 60); do
      if curl -fsS -o /dev/null --max-time 2 "$url"; then continue 2; fi
      sleep 1
    done
    echo "$url does not answer: journalctl -u prometheus -u prometheus-alertmanager" >&2
    exit 1
  done
fi
