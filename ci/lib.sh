# shellcheck shell=bash
# Shared by the ci/*.sh scripts (sourced, not run): messages, the stack file's settings, and the
# state backend check every script that talks to Pulumi makes first.

ci_fail() {
  echo "ci: $*" >&2
  exit 2
}

# stack_setting FILE KEY: a plain value of the stack file's config (empty when unset), read with the
# yaml package the program uses, so quoting and comments are read as Pulumi reads them. KEY is a
# project setting's name (appTag): written <project>:appTag or without a namespace, as Pulumi reads both.
stack_setting() {
  node -e '
    const fs = require("node:fs");
    const { parse } = require("yaml");
    const [file, key] = process.argv.slice(1);
    const project = (parse(fs.readFileSync("Pulumi.yaml", "utf8")) ?? {}).name;
    const config = (parse(fs.readFileSync(file, "utf8")) ?? {}).config ?? {};
    const value = config[project + ":" + key] ?? config[key];
    if (value !== undefined && value !== null && typeof value !== "object") console.log(String(value));
  ' "$1" "$2"
}

# stack_setting_text TEXT KEY: the same from a stack file's text (a version from git history).
stack_setting_text() {
  local file
  file=$(mktemp)
  printf '%s' "$1" >"$file"
  stack_setting "$file" "$2"
  rm -f "$file"
}

# require_backend STACK: refuses early, naming what to set, when no state backend is configured, when
# a self-managed backend has no passphrase or no bucket credentials, or when it is the backup bucket
# (the server's backups and the state that can delete them must not share one place or one token).
require_backend() {
  local stack=$1 bucket backup
  if [[ -n ${PULUMI_BACKEND_URL:-} ]]; then
    [[ -n ${PULUMI_CONFIG_PASSPHRASE:-} ]] ||
      ci_fail "PULUMI_BACKEND_URL is set ($PULUMI_BACKEND_URL) but PULUMI_CONFIG_PASSPHRASE is not: set the stack's passphrase as a masked CI secret"
    case $PULUMI_BACKEND_URL in
      s3://*)
        [[ -n ${AWS_ACCESS_KEY_ID:-} && -n ${AWS_SECRET_ACCESS_KEY:-} ]] ||
          ci_fail "PULUMI_BACKEND_URL is an s3:// bucket but AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not both set: set the state bucket's S3 credentials as masked CI secrets"
        bucket=${PULUMI_BACKEND_URL#s3://}
        bucket=${bucket%%[/?]*}
        backup=$(stack_setting "Pulumi.$stack.yaml" backupBucketName)
        [[ -n $backup ]] ||
          backup=$(node --require ts-node/register/transpile-only -e 'console.log(require("./infra/config").defaultBucketName(process.argv[1]))' "$stack")
        [[ $bucket != "$backup" ]] ||
          ci_fail "PULUMI_BACKEND_URL is the backup bucket ($backup): keep the state in a bucket of its own, in another account than the backups (allowed: any other bucket, or Pulumi Cloud)"
        ;;
      file://* | gs://* | azblob://* | https://*) ;;
      *) ci_fail "PULUMI_BACKEND_URL: \"$PULUMI_BACKEND_URL\" is not a backend URL (allowed: s3://BUCKET?endpoint=...&region=auto, file://, gs://, azblob://, or unset with PULUMI_ACCESS_TOKEN for Pulumi Cloud)" ;;
    esac
  elif [[ -z ${PULUMI_ACCESS_TOKEN:-} ]]; then
    ci_fail "no state backend: set PULUMI_ACCESS_TOKEN (Pulumi Cloud), or PULUMI_BACKEND_URL=s3://BUCKET?endpoint=...&region=auto with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and PULUMI_CONFIG_PASSPHRASE (a bucket of your own, never the backup bucket), as masked CI variables"
  fi
}
