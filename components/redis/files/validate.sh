# shellcheck shell=bash
# The redis role's validate step (components/redis/index.ts): runs as root inside the role's bundle when a
# file changed, before the handlers; a non-zero exit puts the changed files back. Redis itself reads the
# new file: a throwaway server on a private socket, no TCP port, in a temp dir.
# @settings-begin
readonly config='/etc/redis/redis.conf'
# @settings-end
cd /
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chown redis:redis "$tmp"
runuser -u redis -- redis-server "$config" --port 0 --unixsocket "$tmp/check.sock" --dir "$tmp" \
  --pidfile "$tmp/redis.pid" --logfile "$tmp/redis.log" --daemonize no >"$tmp/out" 2>&1 &
pid=$!
for _ in $(seq 100); do
  if [ -S "$tmp/check.sock" ] || ! kill -0 "$pid" 2>/dev/null; then break; fi
  sleep 0.1
done
ok=0
if [ -S "$tmp/check.sock" ]; then ok=1; fi
kill "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
if [ "$ok" != 1 ]; then
  cat "$tmp/out" "$tmp/redis.log" >&2 2>/dev/null || true
  echo "redis-server does not start with $config (its output above)" >&2
  exit 1
fi
