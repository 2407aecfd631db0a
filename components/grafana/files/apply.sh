# shellcheck shell=bash
# The grafana role's apply step (components/grafana/index.ts): runs as root inside the role's bundle on
# every run, after the role's files. Grafana is not in Debian: it comes from Grafana's signed apt
# repository, whose key is checked against its fingerprint before apt trusts it, so this step (not the
# bundle's package list, which installs before any file) adds the repository and installs it.
# With grafana off (or off the web), the nginx server is removed; with grafana off, the service stops.
# @settings-begin
readonly grafana=1
readonly served=1
readonly key_url='https://apt.grafana.com/gpg.key'
readonly fingerprint='B53AE77BADB630A683046005963FA27710458545'
readonly keyring='/etc/apt/keyrings/grafana.asc'
readonly sources='/etc/apt/sources.list.d/grafana.sources'
readonly repo_uri='https://apt.grafana.com'
readonly repo_suite='stable'
readonly repo_component='main'
readonly package='grafana'
readonly unit='grafana-server'
readonly plugin_id='victoriametrics-logs-datasource'
readonly plugin_version='0.21.0'
readonly plugins_dir='/var/lib/grafana/plugins'
readonly nginx_conf='/etc/nginx/conf.d/grafana.conf'
# @settings-end

have_systemd() { [ -d /run/systemd/system ]; }

# The nginx server goes when Grafana is not served on its host name; nginx checks the rest first.
if ((!served)) && [ -e "$nginx_conf" ]; then
  mv -- "$nginx_conf" "$nginx_conf.removed"
  if ! nginx -t 2>/dev/null; then
    mv -- "$nginx_conf.removed" "$nginx_conf"
    echo "nginx -t fails without $nginx_conf: left it in place" >&2
    nginx -t >&2 || true
    exit 1
  fi
  rm -f -- "$nginx_conf.removed"
  if have_systemd; then systemctl reload nginx; fi
  echo "removed $nginx_conf (Grafana is not served on its host name)"
fi

if ((!grafana)); then
  if have_systemd && systemctl cat "$unit.service" >/dev/null 2>&1; then
    if systemctl is-enabled --quiet "$unit" 2>/dev/null; then
      systemctl disable --quiet "$unit"
      echo "disabled $unit (grafana is false; its data in /var/lib/grafana is kept)"
    fi
    if systemctl is-active --quiet "$unit"; then
      systemctl stop "$unit"
      echo "stopped $unit"
    fi
  fi
  exit 0
fi

# The primary key's fingerprint of an armored key file; refuses a file holding more than one key.
key_fingerprint() {
  local listing
  listing=$(gpg --batch --no-tty --show-keys --with-colons -- "$1" 2>/dev/null) || return 1
  if [ "$(grep -c '^pub:' <<<"$listing")" != 1 ]; then return 1; fi
  awk -F: '$1 == "pub" { primary = 1; next } primary && $1 == "fpr" { print $10; exit }' <<<"$listing"
}

repo_changed=0
if [ ! -f "$keyring" ] || [ "$(key_fingerprint "$keyring" || true)" != "$fingerprint" ]; then
  tmp_key=$(mktemp)
  trap 'rm -f -- "$tmp_key"' EXIT
  if ! curl -fsSL --proto '=https' --tlsv1.2 --max-time 60 -o "$tmp_key" -- "$key_url"; then
    echo "could not download Grafana's apt key from $key_url" >&2
    exit 1
  fi
  got=$(key_fingerprint "$tmp_key" || true)
  if [ "$got" != "$fingerprint" ]; then
    echo "refused Grafana's apt key from $key_url: its fingerprint is '${got:-unreadable, or not exactly one key}', not $fingerprint; nothing was installed (check https://apt.grafana.com and components/grafana/render.ts GRAFANA_APT)" >&2
    exit 1
  fi
  install -D -m 0644 -- "$tmp_key" "$keyring"
  echo "installed Grafana's apt key $fingerprint as $keyring"
  repo_changed=1
fi

sources_text="# Managed by LeanInfra (role \"grafana\"): Grafana's signed apt repository.
Types: deb
URIs: $repo_uri
Suites: $repo_suite
Components: $repo_component
Signed-By: $keyring"
if [ "$(cat -- "$sources" 2>/dev/null || true)" != "$sources_text" ]; then
  printf '%s\n' "$sources_text" >"$sources.tmp"
  chmod 0644 -- "$sources.tmp"
  mv -f -- "$sources.tmp" "$sources"
  echo "wrote $sources"
  repo_changed=1
fi

installed_now=0
if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
  # apt-get update only warns about a repository it cannot reach; the install then says so.
  apt-get update -qq
  if ! apt-get install -y -qq --no-install-recommends "$package" >/dev/null; then
    echo "apt-get could not install $package from $repo_uri (apt-get update above says whether it was reached); Grafana stays off until the next run" >&2
    exit 1
  fi
  echo "installed $package $(dpkg-query -W -f='${Version}' "$package") from $repo_uri"
  installed_now=1
elif ((repo_changed)); then
  apt-get update -qq
fi

restart=0
plugin_json="$plugins_dir/$plugin_id/plugin.json"
if [ "$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$plugin_json" 2>/dev/null | head -n 1)" != "$plugin_version" ]; then
  if ! grafana cli --homepath /usr/share/grafana --pluginsDir "$plugins_dir" plugins install "$plugin_id" "$plugin_version" >/dev/null; then
    echo "grafana cli could not install the plugin $plugin_id $plugin_version from grafana.com" >&2
    exit 1
  fi
  chown -R grafana:grafana -- "$plugins_dir"
  echo "installed the Grafana plugin $plugin_id $plugin_version"
  restart=1
fi

if have_systemd; then
  if ((installed_now)); then systemctl daemon-reload; fi
  if ! systemctl is-enabled --quiet "$unit"; then
    systemctl enable --quiet "$unit"
    echo "enabled $unit at boot"
  fi
  if ! systemctl is-active --quiet "$unit"; then
    systemctl start "$unit"
    echo "started $unit"
  elif ((restart)); then
    systemctl restart "$unit"
    echo "restarted $unit (plugin $plugin_id)"
  fi
fi
