# shellcheck shell=bash
# The grafana role's health check (components/grafana/index.ts): runs as root inside the role's bundle,
# last, on every run; exits non-zero with what is wrong on stderr. The test roots have no systemd.
# @settings-begin
readonly grafana=1
readonly unit='grafana-server'
readonly health_url='http://127.0.0.1:3000/api/health'
# @settings-end
if ((grafana)) && [ -d /run/systemd/system ]; then
  if ! systemctl is-active --quiet "$unit"; then
    echo "$unit is not running: systemctl status $unit; journalctl -u $unit" >&2
    exit 1
  fi
  # Grafana answers its health URL once its database is ready; a restart takes a few seconds.
  for _ in $(seq 1 30); do
    if health=$(curl -fsS --max-time 5 -- "$health_url" 2>/dev/null) && grep -q '"database": *"ok"' <<<"$health"; then
      exit 0
    fi
    sleep 2
  done
  echo "Grafana does not answer $health_url with a ready database: journalctl -u $unit" >&2
  exit 1
fi
