# shellcheck shell=bash
# The proxy role's validation: nginx -t as nginx will read the config after apply, and mtail compiles
# its programs. The files apply would create are stood in for, then removed, so validation leaves
# nothing behind.
# shellcheck source=components/proxy/files/seed-first-files.sh
source "${BASH_SOURCE[0]%/*}/seed-first-files.sh" # @include

# @settings-begin
readonly mtail_progs='/etc/mtail'
# @settings-end

trap 'if ((${#seeded[@]})); then rm -f -- "${seeded[@]}"; fi' EXIT
seed_first_files >/dev/null
nginx -t
# mtail compiles its programs and exits; on the way it binds a free loopback port, never mtail.service's.
if ! out=$(mtail --compile_only --logtostderr --progs "$mtail_progs" --address 127.0.0.1 --port 0 2>&1); then
  printf '%s\n' "$out" | grep -v '^I' >&2
  echo "mtail cannot compile the programs in $mtail_progs (above)" >&2
  exit 1
fi
