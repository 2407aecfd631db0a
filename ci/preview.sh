#!/usr/bin/env bash
# ci/preview.sh [gitlab|github]: `pulumi preview --diff` of STACK (default prod) with the policy pack
# POLICY_PACK (default policy), its output in the job's log and in out/ci/preview-STACK.log, the
# merge-request note built from it in out/ci/preview-STACK.md (ci/note.sh) and, given a platform,
# posted there (ci/post-note.sh) whether the preview passed or not. Exits with the preview's status,
# so a failed preview or a policy violation fails the merge request's pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=ci/lib.sh
source ci/lib.sh

platform=${1:-}
stack=${STACK:-prod}
pack=${POLICY_PACK:-policy}
[[ -f Pulumi.$stack.yaml ]] || ci_fail "no Pulumi.$stack.yaml in this checkout (STACK=$stack)"
[[ -f $pack/PulumiPolicy.yaml ]] || ci_fail "POLICY_PACK=$pack holds no PulumiPolicy.yaml: every preview runs the policy pack"
require_backend "$stack"

mkdir -p out/ci
log=out/ci/preview-$stack.log note=out/ci/preview-$stack.md
status=0
pulumi preview --diff --stack "$stack" --policy-pack "$pack" --non-interactive --color never 2>&1 | tee "$log" || status=${PIPESTATUS[0]}

POLICY_PACK=$pack bash ci/note.sh "$stack" "$log" "$status" >"$note"
echo "preview: note in $note ($(wc -c <"$note") bytes)"
[[ -z $platform ]] || bash ci/post-note.sh "$platform" "$note"
exit "$status"
