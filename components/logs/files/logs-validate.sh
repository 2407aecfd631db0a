# shellcheck shell=bash
# The logs role's validate step (components/logs/index.ts): runs as root inside the role's bundle when a
# file changed, before the handlers; a non-zero exit puts the changed files back. The pinned version is
# downloaded and checked first (nothing running changes), then VictoriaLogs parses the unit's flags and
# systemd reads the units.
# @settings-begin
readonly installer='/usr/local/sbin/leaninfra-victorialogs-install'
readonly binary='/usr/local/bin/victoria-logs-prod'
readonly staged='/usr/local/lib/victoria-logs/v1.52.1/victoria-logs-prod'
readonly -a args=('-httpListenAddr=127.0.0.1:9428')
readonly -a units=('leaninfra-victorialogs.service' 'systemd-journal-upload.service' 'leaninfra-log-errors.service' 'leaninfra-log-errors.timer')
# @settings-end
cd /
# The first install has nothing running to keep: the symlink the unit runs is made here, so systemd can check it.
if [ -e "$binary" ]; then "$installer" stage; else "$installer" activate; fi
# -version exits after the flags are parsed: an unknown flag or a bad value fails here, not at the restart.
if ! out=$("$staged" "${args[@]}" -version 2>&1); then
  echo "$out" >&2
  echo "VictoriaLogs ($staged) refuses the unit's flags (above)" >&2
  exit 1
fi
# --man=no: Debian's upload unit documents itself with man pages, which a server without man-db lacks.
systemd-analyze verify --man=no "${units[@]}"
