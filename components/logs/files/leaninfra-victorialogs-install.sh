#!/usr/bin/env bash
# leaninfra-victorialogs-install: the vendor's VictoriaLogs release binary, checked by SHA-256, with its
# system user and data directory. Run by the logs role (components/logs/index.ts):
#   stage     download the pinned version's archive when it is not installed yet, check it, and unpack
#             victoria-logs-prod into its own versioned directory; the running binary is not touched;
#   activate  stage, then point the symlink the unit runs at that version;
#   pin-note  when no checksum is pinned: the installed archive's, and how to pin it.
# Prints one line per change, nothing otherwise; exits 1 with the reason on stderr when the archive
# cannot be fetched or does not match, leaving the installed version (and the running service) as it was.
# Managed by LeanInfra (role "logs"): change components/logs/files/ in the repository, not this file.
# shellcheck source=components/host/files/leaninfra-lib.sh
source "${BASH_SOURCE[0]%/*}/../../host/files/leaninfra-lib.sh" # @lib

# @settings-begin
readonly version='v1.52.1'
readonly arch='amd64'
readonly base_url='https://github.com/VictoriaMetrics/VictoriaLogs/releases/download/v1.52.1'
readonly pinned_sha256=''
readonly install_dir='/usr/local/lib/victoria-logs'
readonly binary='/usr/local/bin/victoria-logs-prod'
readonly user='victorialogs'
readonly data_dir='/srv/data/victoria-logs'
# @settings-end

readonly archive="victoria-logs-linux-$arch-$version.tar.gz"
readonly checksums="victoria-logs-linux-$arch-${version}_checksums.txt"
readonly version_dir="$install_dir/$version"
readonly target="$version_dir/victoria-logs-prod"
readonly recorded="$version_dir/archive.sha256"

die() {
  echo "leaninfra-victorialogs-install: $*" >&2
  exit 1
}

fetch() {
  local error
  if ! error=$(curl --fail --silent --show-error --location --proto '=https,http' --max-time 600 --retry 2 -o "$2" -- "$1" 2>&1); then
    die "cannot download $1 ($(one_line <<<"$error"); leaninfra:victoriaLogsUrl): the installed VictoriaLogs is left as it is"
  fi
}

ensure_account() {
  if ! getent passwd "$user" >/dev/null; then
    useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
      --comment "VictoriaLogs (LeanInfra)" "$user"
    echo "created the system user $user"
  fi
  if [[ ! -d $data_dir ]] || [[ $(stat -c '%U:%G %a' -- "$data_dir") != "$user:$user 750" ]]; then
    install -d -o "$user" -g "$user" -m 0750 -- "$data_dir"
    echo "made $data_dir VictoriaLogs' data directory ($user, 0750)"
  fi
}

# True when this version is installed from an archive that had the pinned checksum (any verified one
# when nothing is pinned).
installed() {
  [[ -x $target && -s $recorded ]] || return 1
  [[ -z $pinned_sha256 || $(<"$recorded") == "$pinned_sha256" ]]
}

stage() {
  ensure_account
  if installed; then return 0; fi
  local tmp got want binary_want
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: tmp is local
  trap "rm -rf -- '$tmp'" EXIT
  fetch "$base_url/$archive" "$tmp/$archive"
  got=$(sha256sum -- "$tmp/$archive" | cut -c1-64)
  if [[ -n $pinned_sha256 ]]; then
    [[ $got == "$pinned_sha256" ]] ||
      die "$base_url/$archive has SHA-256 $got, not $pinned_sha256 (leaninfra:victoriaLogsSha256): refused; the installed VictoriaLogs is left as it is"
  else
    # Nothing pinned: the release's own checksums file, from the same place, says what the archive must be.
    fetch "$base_url/$checksums" "$tmp/$checksums"
    want=$(awk -v f="$archive" '$2 == f || $2 == "*" f { print $1; exit }' "$tmp/$checksums")
    [[ $want =~ ^[0-9a-f]{64}$ ]] || die "$base_url/$checksums lists no SHA-256 for $archive: refused"
    [[ $got == "$want" ]] ||
      die "$base_url/$archive has SHA-256 $got, not $want as the release's $checksums says: refused; the installed VictoriaLogs is left as it is"
    binary_want=$(awk '$2 == "victoria-logs-prod" || $2 == "*victoria-logs-prod" { print $1; exit }' "$tmp/$checksums")
  fi
  tar -xzf "$tmp/$archive" -C "$tmp" --no-same-owner victoria-logs-prod 2>&1 || die "$archive holds no victoria-logs-prod at its root"
  if [[ -n ${binary_want:-} && $(sha256sum -- "$tmp/victoria-logs-prod" | cut -c1-64) != "$binary_want" ]]; then
    die "victoria-logs-prod in $archive does not match the release's $checksums: refused"
  fi
  "$tmp/victoria-logs-prod" -version >/dev/null 2>&1 || die "victoria-logs-prod from $archive does not run here (another architecture than $arch?)"
  install -d -m 0755 -- "$version_dir"
  # Renamed into place: a running VictoriaLogs keeps the file it started from.
  install -m 0755 -- "$tmp/victoria-logs-prod" "$target.new"
  mv -f -- "$target.new" "$target"
  printf '%s\n' "$got" >"$recorded.new"
  mv -f -- "$recorded.new" "$recorded"
  echo "installed VictoriaLogs $version ($arch) in $version_dir from $base_url/$archive, SHA-256 $got"
}

activate() {
  stage
  if [[ $(readlink -- "$binary" 2>/dev/null) != "$target" ]]; then
    ln -sfn -- "$target" "$binary.new"
    mv -Tf -- "$binary.new" "$binary"
    echo "$binary now runs VictoriaLogs $version"
  fi
}

pin_note() {
  if [[ -z $pinned_sha256 && -s $recorded ]]; then
    echo "VictoriaLogs' archive $archive (SHA-256 $(<"$recorded")) was checked against the release's $checksums only; pin it, so a changed archive is refused: pulumi config set victoriaLogsSha256 $(<"$recorded")"
  fi
}

case ${1:-} in
  stage) stage ;;
  activate) activate ;;
  pin-note) pin_note ;;
  *)
    echo "usage: ${0##*/} stage|activate|pin-note" >&2
    exit 2
    ;;
esac
