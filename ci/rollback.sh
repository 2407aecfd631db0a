#!/usr/bin/env bash
# ci/rollback.sh: redeploys the previous release through ci/up.sh, without a new commit. The previous
# release is ROLLBACK_TO when set, else the appTag that Pulumi.STACK.yaml held before the commit that
# set today's (from git history: the job needs the whole history, not a shallow clone). It is set in
# this job's checkout only (`pulumi config set`), so the owner must then commit the same change, or
# the next push to the default branch deploys today's tag again.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=ci/lib.sh
source ci/lib.sh

stack=${STACK:-prod}
file=Pulumi.$stack.yaml
[[ -f $file ]] || ci_fail "no $file in this checkout (STACK=$stack)"
current=$(stack_setting "$file" appTag)

# previous_tag: the first appTag, going back through the commits that changed the stack file, that
# differs from today's; empty when there is none.
previous_tag() {
  local commit text tag
  [[ $(git rev-parse --is-shallow-repository) == false ]] ||
    ci_fail "rollback: this checkout is shallow; the job needs the whole history (GIT_DEPTH: 0 / fetch-depth: 0) to find the previous appTag"
  for commit in $(git log --format=%H -- "$file"); do
    text=$(git show "$commit:$file" 2>/dev/null) || continue
    tag=$(stack_setting_text "$text" appTag)
    if [[ -n $tag && $tag != "$current" ]]; then
      echo "$tag"
      return
    fi
  done
}

if [[ -n ${ROLLBACK_TO:-} ]]; then
  target=$ROLLBACK_TO
  echo "rollback: ROLLBACK_TO=$target"
else
  target=$(previous_tag)
  [[ -n $target ]] ||
    ci_fail "rollback: no previous release: every commit of $file has appTag ${current:-unset}; nothing to roll back to (set ROLLBACK_TO=<tag> to deploy a given tag)"
  echo "rollback: $file's appTag is $current; the previous release in its history is $target"
fi
[[ $target != "$current" ]] || echo "rollback: $target is $file's appTag already: redeploying it"

require_backend "$stack"
pulumi config set --stack "$stack" appTag "$target"
bash ci/up.sh
cat <<MSG
rollback: stack $stack runs appTag $target. This checkout's change was not committed: set
  appTag: $target
in $file and commit it to the default branch (or revert the commit that set $current), or the next
push deploys $current again.
MSG
