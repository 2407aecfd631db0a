#!/usr/bin/env bash
# ci/post-note.sh gitlab|github NOTE_FILE: puts NOTE_FILE on the merge request (GitLab) or pull
# request (GitHub) as one note, updated on every push instead of adding another: the note whose body
# holds NOTE_FILE's first line (its hidden marker, e.g. <!-- leaninfra-preview:prod -->) is replaced,
# else a new one is created.
#   gitlab: CI_API_V4_URL, CI_PROJECT_ID, CI_MERGE_REQUEST_IID (set by GitLab) and LEANINFRA_NOTE_TOKEN,
#           a project access token with the api scope and the Reporter role (the job token cannot write notes).
#   github: GITHUB_API_URL, GITHUB_REPOSITORY (set by Actions), PR_NUMBER and GITHUB_TOKEN
#           (the workflow's token with pull-requests: write).
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "$0")/lib.sh"

(($# == 2)) || ci_fail "usage: ci/post-note.sh gitlab|github NOTE_FILE"
platform=$1 note=$2
[[ -s $note ]] || ci_fail "post-note: $note is missing or empty"
marker=$(head -n 1 "$note")
[[ $marker == "<!--"*"-->" ]] || ci_fail "post-note: the first line of $note is not a hidden marker (<!-- ... -->): \"$marker\""

case $platform in
  gitlab)
    : "${CI_API_V4_URL:?}" "${CI_PROJECT_ID:?}" "${CI_MERGE_REQUEST_IID:?this job runs in merge request pipelines}"
    [[ -n ${LEANINFRA_NOTE_TOKEN:-} ]] ||
      ci_fail "post-note: LEANINFRA_NOTE_TOKEN is not set: create a project access token (role Reporter, scope api) and store it as a masked CI/CD variable"
    auth="PRIVATE-TOKEN: $LEANINFRA_NOTE_TOKEN"
    list="$CI_API_V4_URL/projects/$CI_PROJECT_ID/merge_requests/$CI_MERGE_REQUEST_IID/notes?sort=asc&order_by=created_at"
    create="$CI_API_V4_URL/projects/$CI_PROJECT_ID/merge_requests/$CI_MERGE_REQUEST_IID/notes"
    item=$create
    update=PUT
    ;;
  github)
    : "${GITHUB_API_URL:?}" "${GITHUB_REPOSITORY:?}" "${PR_NUMBER:?this job runs on pull requests}"
    [[ -n ${GITHUB_TOKEN:-} ]] || ci_fail "post-note: GITHUB_TOKEN is not set (the workflow passes secrets.GITHUB_TOKEN, with pull-requests: write)"
    auth="Authorization: Bearer $GITHUB_TOKEN"
    list="$GITHUB_API_URL/repos/$GITHUB_REPOSITORY/issues/$PR_NUMBER/comments?"
    create="$GITHUB_API_URL/repos/$GITHUB_REPOSITORY/issues/$PR_NUMBER/comments"
    item="$GITHUB_API_URL/repos/$GITHUB_REPOSITORY/issues/comments"
    update=PATCH
    ;;
  *) ci_fail "post-note: \"$platform\" is not a platform (allowed: gitlab, github)" ;;
esac

api() {
  curl --silent --show-error --fail-with-body --retry 3 -H "$auth" -H "Accept: application/json" -H "Content-Type: application/json" "$@"
}

# The first note holding the marker, looked for page by page (100 a page) until a short page.
existing=""
for ((page = 1; page <= 50; page++)); do
  notes=$(api "$list&per_page=100&page=$page")
  existing=$(jq -r --arg marker "$marker" 'map(select(.body | contains($marker))) | first | .id // empty' <<<"$notes")
  [[ -z $existing && $(jq length <<<"$notes") -eq 100 ]] || break
done

payload=$(jq -Rs '{body: .}' <"$note")
if [[ -n $existing ]]; then
  api -X "$update" --data "$payload" "$item/$existing" >/dev/null
  echo "post-note: updated note $existing ($marker)"
else
  created=$(api -X POST --data "$payload" "$create" | jq -r .id)
  echo "post-note: created note $created ($marker)"
fi
