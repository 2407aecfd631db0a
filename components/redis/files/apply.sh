# shellcheck shell=bash
# The redis role's apply step (components/redis/index.ts): runs as root inside the role's bundle on every
# run. On the VM: enabled, running, and on the Docker bridge when that exists. The test roots have no systemd.
# @settings-begin
readonly unit='redis-server'
readonly port=6379
readonly docker_bridge='172.17.0.1'
# @settings-end
if [ -d /run/systemd/system ]; then
  if ! systemctl is-enabled --quiet "$unit"; then
    systemctl enable --quiet "$unit"
    echo "enabled $unit at boot"
  fi
  if ! systemctl is-active --quiet "$unit"; then
    systemctl start "$unit"
    echo "started $unit"
  fi
  if ip -4 -o addr show 2>/dev/null | grep -q " $docker_bridge/" &&
    ! ss -H -l -t -n "sport = :$port" | awk '{ print $4 }' | grep -qx "$docker_bridge:$port"; then
    systemctl restart "$unit"
    echo "restarted $unit to listen on the Docker bridge $docker_bridge (it started before the bridge existed)"
  fi
fi
