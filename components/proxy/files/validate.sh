# shellcheck shell=bash
# The proxy role's validation: nginx -t as nginx will read the config after apply. The files apply
# would create are stood in for, then removed, so validation leaves nothing behind.
# shellcheck source=components/proxy/files/seed-first-files.sh
source "${BASH_SOURCE[0]%/*}/seed-first-files.sh" # @include

trap 'if ((${#seeded[@]})); then rm -f -- "${seeded[@]}"; fi' EXIT
seed_first_files >/dev/null
nginx -t
