# shellcheck shell=bash
# The redis role's health check (components/redis/index.ts): runs as root inside the role's bundle, last,
# on every run; exits non-zero with what is wrong on stderr. The test roots have no systemd.
# @settings-begin
readonly config='/etc/redis/redis.conf'
readonly unit='redis-server'
readonly admin_cli='/usr/local/sbin/leaninfra-redis-cli'
readonly admin_user='admin'
readonly policy='volatile-lru'
# @settings-end
test -s "$config"
if [ -d /run/systemd/system ]; then
  if ! systemctl is-active --quiet "$unit"; then
    echo "$unit is not running: systemctl status $unit; /var/log/redis/redis-server.log" >&2
    exit 1
  fi
  pong=$("$admin_cli" PING)
  if [ "$pong" != PONG ]; then
    echo "Redis does not answer PING as $admin_user: $pong" >&2
    exit 1
  fi
  running=$("$admin_cli" CONFIG GET maxmemory-policy | sed -n 2p)
  if [ "$running" != "$policy" ]; then
    echo "the running Redis has maxmemory-policy $running, not $policy: it did not restart with $config (systemctl restart $unit)" >&2
    exit 1
  fi
fi
