import { LAYOUT } from "../host/layout";
import { POSTGRES_PATHS } from "../postgres/config";
import { BACKUPS } from "./layout";
import { BACKUPS_PATHS, BackupJob, BackupSchedules } from "./pgbackrest";

const HEADER = `# Managed by LeanInfra (role "backups"); edit components/backups/ in the repository, not this file.`;

/** What each job is, for the units' descriptions; the order of the timers in the role. */
const JOB_DESCRIPTIONS: Record<BackupJob, string> = {
  full: "full pgBackRest backup to the off-account bucket",
  diff: "differential pgBackRest backup (changes since the last full) to the off-account bucket",
  check: "pgBackRest check: WAL archiving to the bucket works",
  verify: "pgBackRest verify: every backup and WAL file in the bucket reads back with its checksum",
  dump: "monthly pg_dump of the app database, encrypted, to the off-account bucket",
};

/**
 * The timers' spread: RandomizedDelaySec keeps a fleet of forks from hitting R2 at the same second,
 * and Persistent=true runs a job missed while the server was off as soon as it is back.
 */
const RANDOM_DELAY: Record<BackupJob | "drill", string> = {
  full: "30min",
  diff: "30min",
  check: "30min",
  verify: "1h",
  dump: "1h",
  drill: "1h",
};

export const BACKUP_SERVICE = "leaninfra-backup@.service";
export const WAL_QUEUE_SERVICE = "leaninfra-wal-queue.service";
export const WAL_QUEUE_TIMER = "leaninfra-wal-queue.timer";

/**
 * systemd sandboxing every service of the role keeps (each checked by systemd-analyze security and by
 * the services running under it in tests/integration/backups-systemd.test.ts). The jobs run as root
 * and switch to postgres with runuser, so they keep root's capabilities; what they lose is write access
 * to /usr, /boot and /etc, other users' homes, the kernel's knobs and new privileges. No PrivateTmp:
 * pgBackRest keeps its locks in /tmp/pgbackrest, which a job must share with PostgreSQL's archive-push
 * and with pgbackrest run by hand, or two backups could run at once.
 */
const SANDBOX = `# Sandbox: the job writes only to /var (logs, spool, metrics), /run, /tmp and the data volume.
ProtectSystem=full
ProtectHome=yes
NoNewPrivileges=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
# ss reads sockets through netlink; pgBackRest, s3cmd, curl and psql need IP and Unix sockets.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK`;
export const backupTimerName = (job: BackupJob) => `leaninfra-backup@${job}.timer`;
export const DRILL_SERVICE = "leaninfra-drill.service";
export const DRILL_TIMER = "leaninfra-drill.timer";

/** One template service for every job: `systemctl start leaninfra-backup@full` runs `leaninfra-backup full`. */
export function renderBackupService(): string {
  return `${HEADER}
[Unit]
Description=LeanInfra backup job %i (leaninfra-backup %i)
Documentation=file:${BACKUPS.bin.backup}
After=network-online.target ${POSTGRES_PATHS.unit}.service
Wants=network-online.target

[Service]
Type=oneshot
ExecStart=${BACKUPS.bin.backup} %i
# Backups yield to the app: lower CPU and I/O priority. leaninfra-backup bounds each job's run time itself.
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7
RestrictNamespaces=yes
${SANDBOX}
`;
}

function timer(description: string, unit: string, onCalendar: string, delay: string): string {
  return `${HEADER}
[Unit]
Description=${description}

[Timer]
OnCalendar=${onCalendar}
RandomizedDelaySec=${delay}
Persistent=true
Unit=${unit}

[Install]
WantedBy=timers.target
`;
}

export function renderBackupTimer(job: BackupJob, schedules: BackupSchedules): string {
  return timer(`LeanInfra: ${JOB_DESCRIPTIONS[job]} (${schedules[job]})`, `leaninfra-backup@${job}.service`, schedules[job], RANDOM_DELAY[job]);
}

/** The restore drill's service: runs leaninfra-drill, which components/backups/drill.ts renders. */
export function renderDrillService(): string {
  return `${HEADER}
[Unit]
Description=LeanInfra restore drill: restore the latest backup into a scratch cluster and prove the app serves from it
Documentation=file:${BACKUPS.bin.drill}
After=network-online.target ${POSTGRES_PATHS.unit}.service docker.service
Wants=network-online.target

[Service]
Type=oneshot
ExecStart=${BACKUPS.bin.drill}
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7
${SANDBOX}
`;
}

/**
 * leaninfra-wal-queue every minute: it only reads pg_wal's archive marks and pgBackRest's log and writes
 * one metrics file, so it gets a tighter sandbox: no network, only reading past file permissions.
 */
export function renderWalQueueService(): string {
  return `${HEADER}
[Unit]
Description=LeanInfra: WAL waiting for the bucket, as node_exporter metrics (leaninfra-wal-queue)
Documentation=file:${BACKUPS.bin.walQueue}

[Service]
Type=oneshot
ExecStart=${BACKUPS.bin.walQueue}
Nice=10
# Root reads PostgreSQL's 0700 data directory through CAP_DAC_READ_SEARCH alone.
CapabilityBoundingSet=CAP_DAC_READ_SEARCH
ProtectSystem=strict
ReadWritePaths=${LAYOUT.textfileDir}
PrivateNetwork=yes
PrivateDevices=yes
RestrictNamespaces=yes
PrivateTmp=yes
UMask=0022
${SANDBOX.replace(/^RestrictAddressFamilies=.*$/m, "RestrictAddressFamilies=AF_UNIX").replace(/^# ss reads.*\n/m, "")}
`;
}

export function renderWalQueueTimer(): string {
  return `${HEADER}
[Unit]
Description=LeanInfra: WAL archive queue metrics every minute

[Timer]
OnBootSec=1min
OnUnitActiveSec=1min
AccuracySec=10s
Unit=${WAL_QUEUE_SERVICE}

[Install]
WantedBy=timers.target
`;
}

export function renderDrillTimer(schedules: BackupSchedules): string {
  return timer(`LeanInfra: weekly restore drill (${schedules.drill})`, DRILL_SERVICE, schedules.drill, RANDOM_DELAY.drill);
}

/** Every unit file of the role: path and content. */
export function backupUnitFiles(schedules: BackupSchedules, jobs: readonly BackupJob[]): { path: string; content: string }[] {
  const at = (name: string) => `${BACKUPS_PATHS.systemdDir}/${name}`;
  return [
    { path: at(BACKUP_SERVICE), content: renderBackupService() },
    ...jobs.map((job) => ({ path: at(backupTimerName(job)), content: renderBackupTimer(job, schedules) })),
    { path: at(DRILL_SERVICE), content: renderDrillService() },
    { path: at(DRILL_TIMER), content: renderDrillTimer(schedules) },
    { path: at(WAL_QUEUE_SERVICE), content: renderWalQueueService() },
    { path: at(WAL_QUEUE_TIMER), content: renderWalQueueTimer() },
  ];
}

/** Every timer the role enables, jobs first. */
export function backupTimers(jobs: readonly BackupJob[]): string[] {
  return [...jobs.map(backupTimerName), DRILL_TIMER, WAL_QUEUE_TIMER];
}

/** The timers that start jobs writing to the bucket or the database: leaninfra-restore stops them for its duration. */
export function restorePausedTimers(jobs: readonly BackupJob[]): string[] {
  return [...jobs.map(backupTimerName), DRILL_TIMER];
}
