# shellcheck shell=bash
# The proxy role's health check: the files nginx reads, nginx -t, and (under systemd) nginx running
# and answering on stub_status, and mtail serving the request metrics. components/proxy/index.ts
# renders the settings block.

# @settings-begin
readonly -a must_exist=('/etc/leaninfra/nginx/upstream.conf' '/etc/leaninfra/tls/site.crt')
readonly private_key='/etc/leaninfra/secrets/site.key'
readonly status_url='http://127.0.0.1:8080/stub_status'
readonly mtail_url='http://127.0.0.1:3903/metrics'
# @settings-end

bad=0
for f in "${must_exist[@]}"; do
  if [ ! -s "$f" ]; then echo "$f is missing or empty" >&2; bad=1; fi
done
if [ "$(stat -c '%a %U' "$private_key" 2>/dev/null)" != "600 root" ]; then
  echo "$private_key must be mode 600, owned by root" >&2
  bad=1
fi
if ! nginx -t -q; then echo "nginx -t fails (output above)" >&2; bad=1; fi
if [ -d /run/systemd/system ]; then
  if ! systemctl is-active --quiet nginx; then
    echo "nginx is not running (systemctl status nginx; journalctl -u nginx)" >&2
    bad=1
  else
    # A reload is a signal: nginx opens new listeners a moment after systemctl returns.
    answered=0
    for _ in $(seq 20); do
      if curl -fsS --max-time 5 -o /dev/null "$status_url" 2>/dev/null; then answered=1; break; fi
      sleep 0.5
    done
    if ((!answered)); then
      curl -fsS --max-time 5 -o /dev/null "$status_url" >&2 || true
      echo "nginx does not answer on $status_url (tried for 10 s)" >&2
      bad=1
    fi
  fi
fi
if [ -d /run/systemd/system ]; then
  if ! systemctl is-active --quiet mtail; then
    echo "mtail is not running: no request metrics (systemctl status mtail; journalctl -u mtail)" >&2
    bad=1
  else
    answered=0
    for _ in $(seq 20); do
      if curl -fsS --max-time 5 -o /dev/null "$mtail_url" 2>/dev/null; then answered=1; break; fi
      sleep 0.5
    done
    if ((!answered)); then
      echo "mtail does not answer on $mtail_url (tried for 10 s)" >&2
      bad=1
    fi
  fi
fi
exit "$bad"
