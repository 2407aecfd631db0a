import { LAYOUT } from "../host/layout";
import { HostRole, RoleFile, systemctlHandler } from "../host/role";
import { POSTGRES_PATHS as P } from "../postgres/config";
import { backupScript, shq } from "./backup-script";
import { DrillSettings, drillScript, restoreScript } from "./drill";
import { BACKUPS } from "./layout";
import {
  ARCHIVE_COMMAND,
  ARCHIVE_TIMEOUT_SECONDS,
  BACKUPS_PATHS,
  BACKUP_JOBS,
  BackupsSettings,
  parseS3Endpoint,
  renderArchivingConf,
  renderBackupsSecretsEnv,
  renderPgbackrestConf,
  renderS3cmdConfig,
  resolveBackupsSettings,
} from "./pgbackrest";
import { BACKUP_SERVICE, DRILL_SERVICE, backupTimers, backupUnitFiles } from "./units";

export * from "./pgbackrest";
export * from "./units";
export { BACKUP_METRICS, DUMP_CIPHER_OPTIONS, JOB_TIME_LIMITS, LOCK_WAIT_SECONDS, backupScript, dumpObjectKey } from "./backup-script";
export { BACKUPS } from "./layout";

const daemonReload = systemctlHandler("daemon-reload");

/** The tools that read the new files check them: PostgreSQL, pgBackRest (offline) and systemd. */
function validateScript(): string {
  // By name: systemd finds them in /etc/systemd/system, and the template needs an instance to be checked.
  const units = [...BACKUP_JOBS.map((job) => BACKUP_SERVICE.replace("@.", `@${job}.`)), ...backupTimers(BACKUP_JOBS)];
  return `cd /
# PostgreSQL reads every conf.d file: a bad line fails here, and a later file must not override ours.
value=$(runuser -u postgres -- ${P.bin}/postgres -D ${P.configDir} -C archive_command)
if [ "$value" != ${shq(ARCHIVE_COMMAND)} ]; then
  echo "PostgreSQL's configuration sets archive_command to '$value', not pgBackRest's (a conf.d file after ${BACKUPS_PATHS.archivingConf}?)" >&2
  exit 1
fi
# pgBackRest reads its configuration without touching the bucket: an unknown option is a warning there.
out=$(runuser -u postgres -- pgbackrest --config=${BACKUPS.pgbackrestConf} --stanza=${BACKUPS.stanza} help backup repo1-type 2>&1) || {
  echo "$out" >&2
  exit 1
}
if echo "$out" | grep -E 'WARN:|ERROR:' >&2; then
  echo "pgBackRest does not accept ${BACKUPS.pgbackrestConf} (above)" >&2
  exit 1
fi
# systemd reads the units; the drill's service only once leaninfra-drill is installed.
systemd-analyze verify ${units.join(" ")}
if [ -x ${BACKUPS.bin.drill} ]; then systemd-analyze verify ${DRILL_SERVICE}; fi`;
}

/**
 * apply: the stanza in the bucket (created once), then archiving on (a reload, only when PostgreSQL does
 * not use it yet: the stanza must exist before WAL is pushed), pgbackrest check, and the timers enabled.
 * Prints one line per change.
 */
function applyScript(settings: BackupsSettings): string {
  const s = resolveBackupsSettings(settings);
  const endpoint = parseS3Endpoint(s.s3.endpoint);
  const repo = `s3://${s.s3.bucket}${BACKUPS.repoPath}`;
  return `cd /
port=${s.port}
die() {
  echo "$*" >&2
  exit 1
}
backrest() { runuser -u postgres -- pgbackrest --config=${BACKUPS.pgbackrestConf} --stanza=${BACKUPS.stanza} "$@"; }
q() { runuser -u postgres -- psql -X -A -t -q -p "$port" -d postgres -c "$1"; }

if ! pg_ctlcluster 17 main status >/dev/null 2>&1; then
  die "PostgreSQL 17/main is not running: apply the postgres role first (pg_lsclusters shows the cluster)"
fi
tls=()
${s.storageCaPem ? `tls=(--cacert ${BACKUPS_PATHS.storageCaFile})` : "# The system's CAs verify R2's certificate."}
if ! error=$(curl --silent --show-error --output /dev/null --max-time 20 "\${tls[@]}" ${shq(endpoint.url + "/")} 2>&1); then
  die "the bucket's endpoint ${endpoint.url} does not answer ($error): check the network and the endpoint (leaninfra:backup* settings)"
fi

# The stanza: 0 = fine, 2 = fine but no backup yet, 1 and 3 = missing (created here), anything else is a problem.
# Printable ASCII only: with a wrong passphrase pgBackRest quotes binary garbage, which jq refuses.
info=$(timeout 300 runuser -u postgres -- pgbackrest --config=${BACKUPS.pgbackrestConf} --stanza=${BACKUPS.stanza} --output=json info | tr -cd '\\40-\\176') ||
  die "pgbackrest info failed; see /var/log/pgbackrest/"
code=$(jq -r '.[0].status.code' <<<"$info")
case $code in
  0 | 2) ;;
  1 | 3)
    for attempt in 1 2 3 4 5; do
      if out=$(backrest --log-level-console=warn stanza-create 2>&1); then break; fi
      # An archive-push still running (e.g. from an earlier setup) holds the stanza's lock for a moment.
      if [ "$attempt" = 5 ] || ! grep -q 'unable to acquire lock' <<<"$out"; then
        echo "$out" | tr -cd '\\11\\12\\40-\\176' >&2
        die "pgbackrest stanza-create failed (output above)"
      fi
      sleep 10
    done
    echo "created pgBackRest stanza ${BACKUPS.stanza} in ${repo}"
    ;;
  *)
    message=$(jq -r '.[0].repo[0].status.message // .[0].status.message' <<<"$info" | tr -cd '\\11\\12\\40-\\176' | head -n 1)
    if grep -qE 'FormatError|CryptoError' <<<"$message"; then
      die "${repo} does not decrypt with this passphrase: it was created with another repo1-cipher-pass. Restore the old passphrase, or start a new repository path. pgBackRest: $message"
    fi
    die "pgBackRest cannot use ${repo} (status $code): $message"
    ;;
esac

# Archiving on: PostgreSQL reloads the conf.d file (without systemd, as in the tests, pg_ctlcluster does it).
archiving() { q "select setting from pg_settings where name in ('archive_command', 'archive_timeout') order by name"; }
want=$(printf '%s\\n%s' ${shq(ARCHIVE_COMMAND)} ${ARCHIVE_TIMEOUT_SECONDS})
if [ "$(archiving)" != "$want" ]; then
  if [ -d /run/systemd/system ]; then
    systemctl reload ${P.unit}
  else
    pg_ctlcluster 17 main reload >&2
  fi
  for _ in $(seq 50); do
    if [ "$(archiving)" = "$want" ]; then break; fi
    sleep 0.2
  done
  [ "$(archiving)" = "$want" ] || die "PostgreSQL was reloaded but does not use ${BACKUPS_PATHS.archivingConf}: $(archiving | paste -sd ' ')"
  echo "reloaded PostgreSQL: WAL is archived to ${repo} (archive_timeout ${ARCHIVE_TIMEOUT_SECONDS} s)"
fi

# Archiving and the repository work end to end: one WAL segment pushed and found in the bucket.
if ! out=$(backrest check 2>&1); then
  echo "$out" | tr -cd '\\11\\12\\40-\\176' >&2
  die "pgbackrest check failed (output above): WAL does not reach ${repo}"
fi

for timer in ${backupTimers(BACKUP_JOBS).join(" ")}; do
  if ! systemctl is-enabled --quiet "$timer" 2>/dev/null; then
    systemctl enable --quiet "$timer" 2>/dev/null || systemctl enable "$timer" >&2
    echo "enabled $timer"
  fi
  if [ -d /run/systemd/system ] && ! systemctl is-active --quiet "$timer"; then
    systemctl start "$timer"
    echo "started $timer"
  fi
done`;
}

function healthCheckScript(settings: BackupsSettings): string {
  const s = resolveBackupsSettings(settings);
  return `cd /
port=${s.port}
q() { runuser -u postgres -- psql -X -A -t -q -p "$port" -d postgres -c "$1"; }
if ! pg_ctlcluster 17 main status >/dev/null 2>&1; then
  echo "PostgreSQL 17/main is not running: nothing is archived" >&2
  exit 1
fi
command=$(q "show archive_command")
if [ "$command" != ${shq(ARCHIVE_COMMAND)} ]; then
  echo "PostgreSQL's archive_command is '$command', not pgBackRest's: WAL does not reach the bucket (reload PostgreSQL)" >&2
  exit 1
fi
failing=$(q "select last_failed_wal || ' at ' || last_failed_time from pg_stat_archiver
  where last_failed_time is not null and last_failed_time > coalesce(last_archived_time, '-infinity')")
if [ -n "$failing" ]; then
  echo "WAL archiving to the bucket fails (last failure: $failing): see /var/log/pgbackrest/${BACKUPS.stanza}-archive-push-async.log" >&2
  exit 1
fi
for timer in ${backupTimers(BACKUP_JOBS).join(" ")}; do
  if ! systemctl is-enabled --quiet "$timer" 2>/dev/null; then
    echo "$timer is not enabled: the backups would not run" >&2
    exit 1
  fi
done`;
}

/**
 * Backups of PostgreSQL 17 to the off-account R2 bucket: pgBackRest (WAL archived continuously, weekly
 * full and daily differential backups, daily check, weekly verify), a monthly encrypted pg_dump, and the
 * timer of the weekly restore drill (leaninfra-drill, see drill.ts). Needs the postgres role first.
 * Throws an Error naming every invalid setting.
 */
export interface BackupsRoleSettings extends BackupsSettings {
  /** The server's host name (leaninfra:hostname, default app), which `leaninfra-restore` asks the owner to type before it touches production. */
  hostName?: string;
  /** The restore drill's checks (row tolerance, freshness); database and ports come from the settings above. */
  drill?: Omit<DrillSettings, "database" | "productionPort">;
}

export function backupsRole(settings: BackupsRoleSettings): HostRole {
  const s = resolveBackupsSettings(settings);
  const productionPort = settings.port;
  const files: RoleFile[] = [
    { path: BACKUPS.pgbackrestConf, mode: "0640", group: "postgres", content: renderPgbackrestConf(s) },
    { path: BACKUPS.secretsFile, mode: "0600", content: renderBackupsSecretsEnv(s) },
    { path: BACKUPS_PATHS.s3cmdConfig, mode: "0600", content: renderS3cmdConfig(s) },
    ...(s.storageCaPem ? [{ path: BACKUPS_PATHS.storageCaFile, mode: "0644", content: s.storageCaPem }] : []),
    // No reload here: apply reloads once the stanza exists, so no WAL is pushed to a missing stanza.
    { path: BACKUPS_PATHS.archivingConf, mode: "0644", content: renderArchivingConf() },
    { path: BACKUPS.bin.backup, mode: "0755", content: backupScript(s) },
    { path: BACKUPS.bin.drill, mode: "0755", content: drillScript({ ...settings.drill, database: s.database, productionPort }) },
    { path: BACKUPS.bin.restore, mode: "0755", content: restoreScript({ hostName: settings.hostName ?? "app", database: s.database, productionPort }) },
    ...backupUnitFiles(s.schedules, BACKUP_JOBS).map((unit) => ({ ...unit, mode: "0644", onChange: daemonReload })),
  ];
  return {
    name: "backups",
    description: `pgBackRest to s3://${s.s3.bucket}${BACKUPS.repoPath} (WAL continuously, full weekly, diff daily), monthly dumps, restore drill timer`,
    // curl: the fast reachability probe; jq: pgBackRest's JSON; openssl: the dump's encryption; s3cmd: the dump's upload.
    packages: ["pgbackrest", "s3cmd", "openssl", "curl", "jq"],
    directories: [
      { path: "/etc/pgbackrest", mode: "0755" },
      { path: LAYOUT.secrets, mode: "0700" },
      { path: LAYOUT.logs, mode: "0750", group: "adm" },
      { path: LAYOUT.textfileDir, mode: "0755" },
    ],
    files,
    validate: validateScript(),
    apply: applyScript(s),
    healthCheck: healthCheckScript(s),
  };
}
