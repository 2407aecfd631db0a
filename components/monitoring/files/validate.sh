# shellcheck shell=bash
# The monitoring role's validate step (components/monitoring/index.ts): runs as root inside the role's
# bundle when a file changed, before the handlers; a non-zero exit puts the changed files back, so the
# running Prometheus and Alertmanager keep their previous configuration.
# @settings-begin
readonly prometheus_yml='/etc/prometheus/prometheus.yml'
readonly alertmanager_yml='/etc/prometheus/alertmanager.yml'
readonly blackbox_yml='/etc/prometheus/blackbox.yml'
readonly -a units=('prometheus.service' 'prometheus-alertmanager.service')
# @settings-end
cd /
# promtool reads prometheus.yml and every rule file it names (syntax, PromQL, templates).
promtool check config "$prometheus_yml"
# amtool reads alertmanager.yml and the templates it names.
amtool check-config "$alertmanager_yml"
prometheus-blackbox-exporter --config.check --config.file="$blackbox_yml" 2>&1
# systemd reads each unit with its drop-in (not Debian's Documentation= man pages: a server may have no man-db).
# systemd only warns about a setting it ignores (a typo in a sandbox option): any remark is refused too.
if ! remarks=$(systemd-analyze verify --man=no "${units[@]}" 2>&1) || [ -n "$remarks" ]; then
  echo "$remarks" >&2
  echo "systemd-analyze verify ${units[*]} has the remarks above: refused" >&2
  exit 1
fi
