#!/usr/bin/env bash
# Managed by LeanInfra (role "proxy"); edit the role in the repository, not this file.
# certbot's deploy hook for LeanInfra's certificate. certbot runs it after each issuance and renewal
# (it is saved in the certificate's renewal config under /etc/letsencrypt/renewal/): it copies the
# certificate and key to where nginx reads them, then reloads nginx. Run by hand, it installs the
# lineage in RENEWED_LINEAGE, default_lineage below when unset.
# shellcheck source=components/host/files/leaninfra-lib.sh
source "${BASH_SOURCE[0]%/*}/../../host/files/leaninfra-lib.sh" # @lib
umask 077

# @settings-begin
readonly default_lineage='/etc/letsencrypt/live/leaninfra'
readonly cert='/etc/leaninfra/tls/site.crt'
readonly key='/etc/leaninfra/secrets/site.key'
# @settings-end
lineage=${RENEWED_LINEAGE:-$default_lineage}

for file in fullchain.pem privkey.pem; do
  if [[ ! -s $lineage/$file ]]; then
    echo "certbot deploy hook: $lineage/$file is missing or empty; nothing installed" >&2
    exit 1
  fi
done
# Beside the targets, so each mv is atomic: nginx never reads a half-written file.
install -m 0644 -o root -g root -T -- "$lineage/fullchain.pem" "$cert.new"
install -m 0600 -o root -g root -T -- "$lineage/privkey.pem" "$key.new"
mv -fT -- "$key.new" "$key"
mv -fT -- "$cert.new" "$cert"
echo "installed the certificate of $lineage as $cert (key: $key)"

if [[ -d /run/systemd/system ]]; then
  nginx -t -q
  systemctl reload nginx
  echo "reloaded nginx"
else
  echo "systemd is not running here: skipped systemctl reload nginx"
fi
