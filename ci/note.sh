#!/usr/bin/env bash
# ci/note.sh STACK LOG STATUS: the merge-request note of one `pulumi preview --diff` (its output in
# LOG, its exit status STATUS) on stdout: a hidden marker line (ci/post-note.sh finds the note to
# update by it), the stack, the commit, the change counts, the policy result and the whole output in
# a collapsible block, cut to NOTE_LIMIT bytes (GitHub takes 65,536 characters, GitLab 1,000,000)
# with a line saying so.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/lib.sh"

(($# == 3)) || ci_fail "usage: ci/note.sh STACK LOG STATUS"
stack=$1 log=$2 status=$3
limit=${NOTE_LIMIT:-65536}
commit=${COMMIT_SHA:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
pack=${POLICY_PACK:-policy}
[[ -r $log ]] || ci_fail "note: cannot read $log"

# block TITLE: the indented lines under a heading of Pulumi's summary ("Resources:", "Policy Packs run:").
block() {
  awk -v title="$1" '$0 == title { on = 1; next } on && /^[^ ]/ { exit } on && NF { sub(/^ +/, ""); print }' "$log"
}

if ((status == 0)); then result="succeeded"; else result="**failed** (exit $status)"; fi
changes=$(block "Resources:" | paste -sd, - | sed 's/,/, /g')
# A violation is a line "PACK@vVERSION [LEVEL]  POLICY  (TYPE: NAME)DESCRIPTION" under the resource.
# shellcheck disable=SC2016 # the backticks are Markdown's, not a command
violations=$(sed -nE 's/^ +[^ ]+@v[^ ]+ (\[(mandatory|advisory|remediate)\]) +([^ ]+) +(\([^)]*\)).*/  - \1 `\3` \4/p' "$log")
packs=$(block "Policy Packs run:" | awk 'NR > 1 { print $1 " " $2 }' | paste -sd, - | sed 's/,/, /g')
if [[ -n $violations ]]; then
  count=$(wc -l <<<"$violations")
  policy="**failed**, violations: $count"$'\n'"$(head -n 20 <<<"$violations")"
  ((count <= 20)) || policy+=$'\n'"  - ... and $((count - 20)) more in the output"
elif [[ -n $packs ]]; then
  policy="passed ($packs)"
else
  policy="not reached (the preview stopped before the policy pack ran; see the output)"
fi

head="<!-- leaninfra-preview:$stack -->
### \`pulumi preview --diff\` of stack \`$stack\`

- **Commit:** \`$commit\`
- **Preview:** $result
- **Changes:** ${changes:-none reported}
- **Policy pack \`$pack\`:** $policy

<details><summary>Output</summary>

\`\`\`\`\`\`diff"
tail='``````

</details>'

# The output goes in whole when it fits; otherwise its first lines that fit, and a line saying how
# much was cut and where the rest is (the job's log). The fence is six backticks, so a fence of three in
# the output cannot end it.
budget=$((limit - ${#head} - ${#tail} - 400))
# Pulumi's progress lines ("@ previewing update....") say nothing in a note.
output=$(mktemp)
trap 'rm -f "$output"' EXIT
grep -v '^@ ' "$log" >"$output" || true
total=$(wc -l <"$output")
if (($(wc -c <"$output") <= budget)); then
  body=$(cat "$output")
else
  body=$(head -c "$((budget > 0 ? budget : 0))" "$output" | sed '$d')
  shown=$(wc -l <<<"$body")
  body+=$'\n'"... cut: $shown of $total lines shown to fit the note's limit of $limit characters; the whole output is in the job's log${JOB_URL:+ ($JOB_URL)}"
fi
printf '%s\n%s\n%s\n' "$head" "$body" "$tail"
