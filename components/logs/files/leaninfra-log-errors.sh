#!/usr/bin/env bash
# leaninfra-log-errors: how many error lines the app logged in the last minutes, counted by VictoriaLogs
# over the journal, as node_exporter textfile metrics. Run every minute by leaninfra-log-errors.timer.
#   leaninfra_app_error_lines               the count (absent when the query failed)
#   leaninfra_app_error_lines_query_success 1 when VictoriaLogs answered, else 0
# What counts as an error line: APP_ERROR_LINES_QUERY in components/logs/config.ts (the query below).
# Managed by LeanInfra (role "logs"): change components/logs/files/ in the repository, not this file.
# shellcheck source=components/host/files/leaninfra-lib.sh
source "${BASH_SOURCE[0]%/*}/../../host/files/leaninfra-lib.sh" # @lib

# @settings-begin
readonly url='http://127.0.0.1:9428/select/logsql/stats_query'
readonly query='_time:5m {SYSLOG_IDENTIFIER=~"app-.+"} | stats count() lines'
readonly window='5m'
readonly metrics_file='/var/lib/prometheus/node-exporter/leaninfra-log-errors.prom'
# @settings-end

lines=''
if answer=$(curl --fail --silent --show-error --max-time 20 --data-urlencode "query=$query" -- "$url" 2>&1); then
  lines=$(jq -r '.data.result[0].value[1] // empty' <<<"$answer" 2>/dev/null || true)
fi
success=0
if [[ $lines =~ ^[0-9]+$ ]]; then success=1; fi

{
  if ((success)); then
    metric leaninfra_app_error_lines "The app's error lines in the journal over the last $window (VictoriaLogs)." "$lines"
  fi
  metric leaninfra_app_error_lines_query_success '1 when VictoriaLogs answered the app error-lines query, else 0.' "$success"
} | write_textfile "$metrics_file"

if ((!success)); then
  echo "leaninfra-log-errors: VictoriaLogs did not answer the error-lines query at $url: $(one_line <<<"${answer:-}")" >&2
  exit 1
fi
