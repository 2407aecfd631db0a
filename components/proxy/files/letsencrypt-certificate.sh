# shellcheck shell=bash
# The proxy role's apply step without Cloudflare's Origin CA: nginx now serves the webroot on port
# 80, so certbot gets a Let's Encrypt certificate for every name (again when the names change);
# certbot.timer renews it and the deploy hook installs it. Appended to apply.sh by
# components/proxy/index.ts, which renders the settings block.

# @settings-begin
readonly acme_email='owner@example.com'
readonly -a acme_names=('example.com' 'www.example.com')
readonly acme_webroot='/var/www/letsencrypt'
readonly acme_cert_name='leaninfra'
readonly acme_lineage='/etc/letsencrypt/live/leaninfra'
readonly acme_deploy_hook='/etc/leaninfra/certbot-deploy-hook.sh'
readonly acme_names_stamp='/var/lib/leaninfra/proxy/letsencrypt-names'
readonly installed_certificate='/etc/leaninfra/tls/site.crt'
# @settings-end

want=$(printf '%s\n' "${acme_names[@]}")
printf -v listed '%s, ' "${acme_names[@]}"
listed=${listed%, }
have=$(cat "$acme_names_stamp" 2>/dev/null || true)
if [ "$want" != "$have" ] || [ ! -s "$acme_lineage/fullchain.pem" ]; then
  if [ -d /run/systemd/system ]; then
    # Every value joined to its option (--option=value): certbot's parser (argparse) then never reads
    # a value as an option, whatever it starts with. certbot takes no positional arguments after its
    # verb, so there is nothing for a `--` to separate.
    domains=()
    for name in "${acme_names[@]}"; do domains+=("--domains=$name"); done
    if ! certbot certonly --non-interactive --agree-tos --no-eff-email "--email=$acme_email" \
      --webroot "--webroot-path=$acme_webroot" "--cert-name=$acme_cert_name" "--deploy-hook=$acme_deploy_hook" \
      "${domains[@]}" >&2; then
      echo "certbot could not get a certificate for $listed: do their DNS records point at this server, and is port 80 open? (/var/log/letsencrypt/letsencrypt.log)" >&2
      exit 1
    fi
    printf '%s\n' "$want" >"$acme_names_stamp.new"
    mv -fT "$acme_names_stamp.new" "$acme_names_stamp"
    echo "obtained a Let's Encrypt certificate for $listed (certbot.timer renews it)"
  else
    echo "systemd is not running here: nginx is not serving, skipped certbot certonly for $listed" >&2
  fi
fi
# The hook installs each new certificate; this repairs a copy that differs (e.g. a hook that failed).
if [ -s "$acme_lineage/fullchain.pem" ] && ! cmp -s "$acme_lineage/fullchain.pem" "$installed_certificate"; then
  RENEWED_LINEAGE=$acme_lineage "$acme_deploy_hook" >&2
  echo "installed the Let's Encrypt certificate of $acme_lineage for nginx"
fi
