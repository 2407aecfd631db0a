# shellcheck shell=bash
# The files the proxy role creates once and never overwrites: the deploy owns the upstream and release
# lines, and without Cloudflare's Origin CA the certificate comes from Let's Encrypt later (nginx
# cannot start without one). `seed_first_files` creates the missing ones, printing one line for each
# and listing their paths in the `seeded` array. Included by validate.sh and apply.sh; the settings
# block is rendered by components/proxy/index.ts.

# shellcheck disable=SC2016 # release_line is nginx text: $leaninfra_release is nginx's variable
# @settings-begin
readonly release_line='set $leaninfra_release "none";'
readonly release_file='/etc/leaninfra/nginx/release.conf'
readonly upstream_line='server 127.0.0.1:8001;'
readonly upstream_file='/etc/leaninfra/nginx/upstream.conf'
readonly letsencrypt=1
readonly certificate='/etc/leaninfra/tls/site.crt'
readonly private_key='/etc/leaninfra/secrets/site.key'
readonly canonical_name='example.com'
readonly -a names=('example.com' 'www.example.com')
# @settings-end

seeded=()
seed_line() {
  if [ -e "$1" ]; then return 0; fi
  printf '%s\n' "$2" >"$1.leaninfra-new"
  chmod 0644 "$1.leaninfra-new"
  mv -fT "$1.leaninfra-new" "$1"
  seeded+=("$1")
  echo "created $1 ($2): the deploy rewrites it from now on"
}

# A self-signed placeholder for every name, until Let's Encrypt's first certificate.
seed_placeholder_certificate() {
  local san out
  if [ -e "$certificate" ] && [ -e "$private_key" ]; then return 0; fi
  if [ -e "$certificate" ] || [ -e "$private_key" ]; then
    echo "only one of $certificate and $private_key exists; move it away, then run again" >&2
    return 1
  fi
  san=$(printf 'DNS:%s,' "${names[@]}")
  if ! out=$(umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=$canonical_name" -addext "subjectAltName=${san%,}" \
    -keyout "$private_key.leaninfra-new" -out "$certificate.leaninfra-new" 2>&1); then
    echo "$out" >&2
    return 1
  fi
  chmod 0600 "$private_key.leaninfra-new"
  chmod 0644 "$certificate.leaninfra-new"
  mv -fT "$private_key.leaninfra-new" "$private_key"
  mv -fT "$certificate.leaninfra-new" "$certificate"
  seeded+=("$certificate" "$private_key")
  echo "created a self-signed placeholder certificate $certificate (key $private_key) until Let's Encrypt's first one"
}

seed_first_files() {
  seed_line "$upstream_file" "$upstream_line"
  seed_line "$release_file" "$release_line"
  if ((letsencrypt)); then seed_placeholder_certificate; fi
}
