#!/usr/bin/env bash
# ci/up.sh [PULUMI_UP_ARGS...]: `pulumi up --yes` of STACK (default prod) with the policy pack
# POLICY_PACK (default policy), as a laptop runs it. Pulumi applies the host roles over SSH as the
# admin user through ssh-agent: LEANINFRA_SSH_PRIVATE_KEY (the private half of adminSshPublicKey, a
# masked CI secret) is loaded into an agent of this job's own, unless SSH_AUTH_SOCK is already set;
# the runner's address must be in sshAllowFrom.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=ci/lib.sh
source ci/lib.sh

stack=${STACK:-prod}
pack=${POLICY_PACK:-policy}
[[ -f Pulumi.$stack.yaml ]] || ci_fail "no Pulumi.$stack.yaml in this checkout (STACK=$stack)"
[[ -f $pack/PulumiPolicy.yaml ]] || ci_fail "POLICY_PACK=$pack holds no PulumiPolicy.yaml: every update runs the policy pack"
require_backend "$stack"

if [[ -n ${LEANINFRA_SSH_PRIVATE_KEY:-} ]]; then
  eval "$(ssh-agent -s)" >/dev/null
  trap 'ssh-agent -k >/dev/null' EXIT
  # ssh-add wants the key's last line to end in a newline; CI variables often drop it.
  printf '%s\n' "$LEANINFRA_SSH_PRIVATE_KEY" | ssh-add - >/dev/null
elif [[ -z ${SSH_AUTH_SOCK:-} ]]; then
  ci_fail "no SSH key: set LEANINFRA_SSH_PRIVATE_KEY (the private half of adminSshPublicKey) as a masked CI secret; pulumi up applies the host roles over SSH"
fi

pulumi up --yes --diff --stack "$stack" --policy-pack "$pack" --non-interactive --color never "$@"
