import { LAYOUT } from "../host/layout";

/**
 * VictoriaLogs (Apache-2.0, github.com/VictoriaMetrics/VictoriaLogs) is not in Debian: the role installs
 * the vendor's release binary of this version, its archive checked by SHA-256 (leaninfra-victorialogs-install).
 */
export const VICTORIALOGS_VERSION = "v1.52.1";
/** Where the vendor publishes the release's archives and their checksums files. */
export const VICTORIALOGS_RELEASE_URL = `https://github.com/VictoriaMetrics/VictoriaLogs/releases/download/${VICTORIALOGS_VERSION}`;
export const VICTORIALOGS_PORT = 9428;
/** The system user VictoriaLogs runs as; it owns the data directory and nothing else. */
export const VICTORIALOGS_USER = "victorialogs";

export const LOGS_PATHS = Object.freeze({
  /** One directory per version: the binary and the SHA-256 of the archive it came from. */
  installDir: "/usr/local/lib/victoria-logs",
  /** The unit runs this symlink; it moves to a new version only once that version's archive is verified. */
  binary: "/usr/local/bin/victoria-logs-prod",
  installer: "/usr/local/sbin/leaninfra-victorialogs-install",
  /** On the data volume, so the logs survive a rebuilt server. */
  dataDir: `${LAYOUT.data}/victoria-logs`,
  unit: "leaninfra-victorialogs.service",
  unitFile: "/etc/systemd/system/leaninfra-victorialogs.service",
  uploadUnit: "systemd-journal-upload.service",
  uploadDropInDir: "/etc/systemd/system/systemd-journal-upload.service.d",
  uploadDropIn: "/etc/systemd/system/systemd-journal-upload.service.d/leaninfra.conf",
  /** systemd-journal-upload --save-state keeps its cursor here (DynamicUser: /var/lib/private/..., linked from /var/lib). */
  uploadState: "/var/lib/systemd/journal-upload/state",
  errorsBin: "/usr/local/sbin/leaninfra-log-errors",
  errorsService: "leaninfra-log-errors.service",
  errorsTimer: "leaninfra-log-errors.timer",
  errorsServiceFile: "/etc/systemd/system/leaninfra-log-errors.service",
  errorsTimerFile: "/etc/systemd/system/leaninfra-log-errors.timer",
  errorsMetrics: `${LAYOUT.textfileDir}/leaninfra-log-errors.prom`,
});

/** What the app error-lines metric counts, in LogsQL over the journal VictoriaLogs holds. */
export const APP_ERROR_WINDOW = "5m";

/**
 * An app error line: a line of the app's serving containers (journal tag app-<release>, set by
 * leaninfra-deploy; the migrations' app-migrate-<release> lines are left to the failed-deploy alert) whose
 * message holds an error level as a word, in any case: error, fatal, critical or panic. That matches
 * "ERROR ..." (Python's logging, gunicorn's "[ERROR]"), "level=error" (logfmt) and "level":"error" (JSON).
 * Not the journal's priority: Docker's journald driver gives every stderr line priority 3 (err), and
 * Python's logging and gunicorn write all their lines, INFO included, to stderr.
 */
export const APP_ERROR_LINES_QUERY =
  `_time:${APP_ERROR_WINDOW} {SYSLOG_IDENTIFIER=~"app-.+"} -{SYSLOG_IDENTIFIER=~"app-migrate-.+"} ` +
  `(i(error) or i(fatal) or i(critical) or i(panic)) | stats count() lines`;

/** Server types whose CPUs are Arm: Hetzner's cax family; every other type is x86-64. */
export function victoriaLogsArch(serverType: string): "arm64" | "amd64" {
  return /^cax/.test(serverType) ? "arm64" : "amd64";
}

/** The release's archive for an architecture, and the checksums file published beside it. */
export function victoriaLogsFiles(arch: "arm64" | "amd64"): { archive: string; checksums: string } {
  const stem = `victoria-logs-linux-${arch}-${VICTORIALOGS_VERSION}`;
  return { archive: `${stem}.tar.gz`, checksums: `${stem}_checksums.txt` };
}

export interface VictoriaLogsFlags {
  logsRetentionDays: number;
  logsMemoryMb: number;
  /** The disk VictoriaLogs may fill before it drops its oldest days (derived from the volume's size). */
  diskLimitMb: number;
}

/**
 * The caches' share of the memory cap: VictoriaLogs sizes its caches to -memory.allowedBytes; the rest of
 * MemoryMax is for ingestion buffers and queries.
 */
export function victoriaLogsCacheMb(logsMemoryMb: number): number {
  return Math.floor(logsMemoryMb / 2);
}

/** Go's soft memory limit, under MemoryMax so the garbage collector works harder before the kernel kills. */
export function victoriaLogsGoMemLimitMb(logsMemoryMb: number): number {
  return Math.floor((logsMemoryMb * 85) / 100);
}

/**
 * At most a tenth of the data volume (at least 512 MB): PostgreSQL lives on the same volume, and a log
 * flood must drop old logs rather than fill the disk under the database.
 */
export function victoriaLogsDiskLimitMb(volumeSizeGb: number): number {
  return Math.max(512, Math.floor((volumeSizeGb * 1024) / 10));
}

/** VictoriaLogs' command-line flags, one per element (also what the validate step checks them with). */
export function victoriaLogsArgs(s: VictoriaLogsFlags): string[] {
  return [
    `-httpListenAddr=127.0.0.1:${VICTORIALOGS_PORT}`,
    `-storageDataPath=${LOGS_PATHS.dataDir}`,
    `-retentionPeriod=${s.logsRetentionDays}d`,
    `-retention.maxDiskSpaceUsageBytes=${s.diskLimitMb}MiB`,
    `-memory.allowedBytes=${victoriaLogsCacheMb(s.logsMemoryMb)}MiB`,
    // One stream per unit and per journal tag (each app release is one): what LogsQL's {...} filters select.
    "-journald.streamFields=_SYSTEMD_UNIT,SYSLOG_IDENTIFIER",
  ];
}

const HEADER = `# Managed by LeanInfra (role "logs"); edit components/logs/ in the repository, not this file.`;

/** The sandbox both services share: no privileges, a read-only system, loopback only. */
const SANDBOX = `NoNewPrivileges=yes
CapabilityBoundingSet=
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
IPAddressAllow=localhost
IPAddressDeny=any`;

export function renderVictoriaLogsUnit(s: VictoriaLogsFlags): string {
  return `${HEADER}
[Unit]
Description=VictoriaLogs ${VICTORIALOGS_VERSION}: the journal, searchable with LogsQL on 127.0.0.1:${VICTORIALOGS_PORT}
Documentation=https://docs.victoriametrics.com/victorialogs/
After=network.target
# The data directory is on the volume: never start against an empty mount point on the root disk.
RequiresMountsFor=${LOGS_PATHS.dataDir}

[Service]
Type=simple
User=${VICTORIALOGS_USER}
Group=${VICTORIALOGS_USER}
ExecStart=${LOGS_PATHS.binary} ${victoriaLogsArgs(s).join(" ")}
Environment=GOMEMLIMIT=${victoriaLogsGoMemLimitMb(s.logsMemoryMb)}MiB
# The cap (leaninfra:logsMemoryMb); the caches get half of it (-memory.allowedBytes), Go's GC works to stay under 85 %.
MemoryMax=${s.logsMemoryMb}M
MemorySwapMax=0
Restart=on-failure
RestartSec=5s
TimeoutStopSec=60s
LimitNOFILE=65536
UMask=0027
ReadWritePaths=${LOGS_PATHS.dataDir}
${SANDBOX}
# Beyond @system-service: VictoriaLogs asks mincore(2) whether a data file's pages are in memory before it
# reads them through mmap, and stops when that is refused (found under systemd in the booted-root test).
SystemCallFilter=mincore

[Install]
WantedBy=multi-user.target
`;
}

/**
 * Debian's systemd-journal-upload.service ships the whole journal (every entry it can read, from its
 * saved cursor on) to VictoriaLogs' journald endpoint. The URL is given as --url on the command line only:
 * a URL= in journal-upload.conf as well makes the two conflict.
 */
export function renderJournalUploadDropIn(): string {
  return `${HEADER}
[Unit]
After=${LOGS_PATHS.unit}
Wants=${LOGS_PATHS.unit}
# While VictoriaLogs restarts the upload fails and is restarted; never give up on it.
StartLimitIntervalSec=0

[Service]
# --save-state: after each entry VictoriaLogs accepted, its cursor goes to ${LOGS_PATHS.uploadState};
# a restart resumes after it (nothing sent twice, nothing skipped).
ExecStart=
ExecStart=/usr/lib/systemd/systemd-journal-upload --save-state --url=http://127.0.0.1:${VICTORIALOGS_PORT}/insert/journald
Restart=always
RestartSec=5s
IPAddressAllow=localhost
IPAddressDeny=any
`;
}

export function renderLogErrorsService(): string {
  return `${HEADER}
[Unit]
Description=LeanInfra: the app's error lines in the last ${APP_ERROR_WINDOW}, from VictoriaLogs, as node_exporter metrics
Documentation=file:${LOGS_PATHS.errorsBin}
After=${LOGS_PATHS.unit}

[Service]
Type=oneshot
ExecStart=${LOGS_PATHS.errorsBin}
Nice=10
# Root only to write into node_exporter's root-owned directory; no capabilities.
ReadWritePaths=${LAYOUT.textfileDir}
UMask=0022
${SANDBOX}
`;
}

export function renderLogErrorsTimer(): string {
  return `${HEADER}
[Unit]
Description=LeanInfra: the app's error lines as a metric, every minute

[Timer]
OnBootSec=1min
OnUnitActiveSec=1min
AccuracySec=10s
Unit=${LOGS_PATHS.errorsService}

[Install]
WantedBy=timers.target
`;
}
