# shellcheck shell=bash
# The proxy role's apply step: the first files, Debian's default site gone, nginx restarted when it
# first has everything it includes, and mtail (the request metrics) enabled and running. Prints one
# line per change.
# shellcheck source=components/proxy/files/seed-first-files.sh
source "${BASH_SOURCE[0]%/*}/seed-first-files.sh" # @include

# @settings-begin
readonly debian_default_site='/etc/nginx/sites-enabled/default'
# @settings-end

seed_first_files
if [ -e "$debian_default_site" ] || [ -L "$debian_default_site" ]; then
  rm -f "$debian_default_site"
  echo "removed $debian_default_site (Debian's default site)"
fi
if ((${#seeded[@]})); then
  if [ -d /run/systemd/system ]; then
    nginx -t -q >&2
    # The first files exist only now, so nginx (until now Debian's, started by its package) starts
    # afresh: with this role's config and its unit's sandbox, which a reload would not apply.
    systemctl restart nginx >&2
  else
    echo "systemd is not running here: skipped systemctl restart nginx" >&2
  fi
fi
if [ -d /run/systemd/system ]; then
  if ! systemctl is-enabled --quiet mtail; then
    systemctl enable mtail >&2
    echo "enabled mtail.service (request metrics from nginx's access log)"
  fi
  if ! systemctl is-active --quiet mtail; then
    systemctl start mtail >&2
    echo "started mtail.service"
  fi
fi
