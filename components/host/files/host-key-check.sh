#!/usr/bin/env bash
# LeanInfra: checks, on the machine running `pulumi up`, that the server presents its pinned SSH host
# key before any role connects. Rendered by renderHostKeyCheck (components/host/host-key.ts) and run by
# the Host's host-key-check command; needs bash and OpenSSH's ssh-keyscan and ssh-keygen.
set -uo pipefail

# @settings-begin
readonly server_name="app.example.com"
readonly address="198.51.100.10"
readonly port=22
readonly expected_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHn9lq7g1xv3Y2Yl7Zb3eVq9tW4k8dG0ZcU2n6pYb1Xq"
readonly expected_fingerprint="SHA256:example"
readonly expected_from="generated"
readonly generated_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHn9lq7g1xv3Y2Yl7Zb3eVq9tW4k8dG0ZcU2n6pYb1Xq"
readonly wait_seconds=600
readonly host_key_file="/etc/ssh/ssh_host_ed25519_key"
# @settings-end

where="${server_name} (${address} port ${port})"

for tool in ssh-keyscan ssh-keygen; do
  if ! command -v "$tool" >/dev/null; then
    echo "leaninfra: the SSH host key of ${where} cannot be checked: ${tool} is not installed here (it comes with the OpenSSH client)" >&2
    exit 1
  fi
done

# The fingerprint of one "type base64" key line, as ssh-keygen -l prints it.
fingerprint() {
  local file
  file=$(mktemp)
  printf '%s\n' "$1" >"$file"
  ssh-keygen -l -f "$file" | awk '{ print $2 }'
  rm -f "$file"
}

# The server's keys as "type base64" lines, for one type or for all; nothing when it does not answer.
scan() {
  local args=(-T 10 -p "$port")
  if [[ -n "$1" ]]; then args+=(-t "$1"); fi
  ssh-keyscan "${args[@]}" "$address" 2>/dev/null | awk '$1 !~ /^#/ && NF >= 3 { print $2 " " $3 }'
}

if [[ "$expected_from" == "config" ]]; then
  expected_source="leaninfra:sshHostKey (pinned by you)"
else
  expected_source="the key Pulumi generated for this server and installed through its cloud-init user data"
fi

started=$SECONDS
presented=""
while true; do
  presented=$(scan "${expected_key%% *}" | head -n 1)
  [[ -n "$presented" ]] && break
  others=$(scan "")
  if [[ -n "$others" ]]; then
    {
      echo "leaninfra: ${where} presents no ${expected_key%% *} host key, so its identity cannot be checked; nothing was sent to it."
      echo "  expected: ${expected_key%% *} ${expected_fingerprint}, from ${expected_source}"
      echo "  presented instead:"
      while read -r line; do echo "    ${line%% *} $(fingerprint "$line")"; done <<<"$others"
      echo "  Check the server from its Hetzner console: ls /etc/ssh/ssh_host_*_key.pub; sshd -T | grep -i '^hostkey'"
    } >&2
    exit 1
  fi
  if ((SECONDS - started >= wait_seconds)); then
    echo "leaninfra: ${where} did not answer on SSH within ${wait_seconds} seconds, so its host key could not be checked; nothing was sent to it. Check that the server runs and that leaninfra:sshAllowFrom includes this machine's address." >&2
    exit 1
  fi
  sleep 5
done

if [[ "$presented" == "$expected_key" ]]; then
  echo "leaninfra: ${where} presents its pinned host key ${expected_fingerprint}"
  exit 0
fi

presented_fingerprint=$(fingerprint "$presented")
{
  echo "leaninfra: the SSH host key of ${where} is not the pinned one; nothing was sent to the server and no role ran."
  echo "  expected:  ${expected_key%% *} ${expected_fingerprint}, from ${expected_source}"
  echo "  presented: ${presented%% *} ${presented_fingerprint}"
  if [[ "$expected_from" == "config" && "$presented" == "$generated_key" ]]; then
    echo "  The server presents the key Pulumi generated for it: it was created again (rebuilt or replaced) after leaninfra:sshHostKey was pinned."
    echo "  Remove the pin, then run pulumi up again: pulumi config rm leaninfra:sshHostKey"
  else
    echo "  If you did not change the server, someone may be answering in its place: stop here."
    echo "  Compare with what you know of the server out of band: the fingerprint your ssh trusted before (ssh-keygen -l -F ${address}),"
    echo "  or the server's own, read on its Hetzner console: ssh-keygen -l -f ${host_key_file}.pub"
    echo "  Only if they show ${presented_fingerprint} (e.g. a server created before LeanInfra pinned host keys), pin it and run pulumi up again:"
    echo "    pulumi config set leaninfra:sshHostKey \"${presented}\""
    echo "  (README: \"SSH host key\")"
  fi
} >&2
exit 1
