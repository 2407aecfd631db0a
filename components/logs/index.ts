import * as path from "node:path";
import { z } from "zod";
import { defineRole, refuseProblems } from "../host/define";
import { LAYOUT } from "../host/layout";
import { HostRole, systemctlHandler } from "../host/role";
import { renderScript } from "../host/script";
import {
  APP_ERROR_LINES_QUERY,
  APP_ERROR_WINDOW,
  LOGS_PATHS as L,
  VICTORIALOGS_PORT,
  VICTORIALOGS_RELEASE_URL,
  VICTORIALOGS_USER,
  VICTORIALOGS_VERSION,
  renderJournalUploadDropIn,
  renderLogErrorsService,
  renderLogErrorsTimer,
  renderVictoriaLogsUnit,
  victoriaLogsArch,
  victoriaLogsArgs,
  victoriaLogsDiskLimitMb,
} from "./config";

export * from "./config";

export interface LogsSettings {
  /** The release archive's SHA-256 (64 hex); "" checks it against the release's own checksums file. */
  victoriaLogsSha256: string;
  /** Where the release's files are (a URL prefix); "" is the vendor's release on GitHub. */
  victoriaLogsUrl: string;
  logsRetentionDays: number;
  logsMemoryMb: number;
  /** The server type (cax* are Arm): which release archive to install. */
  serverType: string;
  /** RAM of the server in MB: the memory cap may take at most a quarter of it. */
  memoryMb: number;
  /** The data volume's size: VictoriaLogs may fill at most a tenth of it. */
  volumeSizeGb: number;
}

export const LOGS_RETENTION_DAYS = { min: 1, max: 3650 } as const;
export const LOGS_MEMORY_MB = { min: 128 } as const;

/** https anywhere; plain http only on this server (a local mirror), since without a pin the checksums come from the same place. */
const MIRROR_URL = /^(https:\/\/[A-Za-z0-9.-]+(:[0-9]{1,5})?|http:\/\/(127\.0\.0\.1|localhost)(:[0-9]{1,5})?)(\/[A-Za-z0-9._~%+@-]+)*$/;

/** Problems with the settings, each starting with its config key; empty when the role can be rendered. */
export function logsSettingsProblems(s: LogsSettings): string[] {
  const problems: string[] = [];
  const add = (key: string, message: string) => problems.push(`${key} ${message}`);
  if (typeof s.victoriaLogsSha256 !== "string" || !/^([0-9a-f]{64})?$/.test(s.victoriaLogsSha256)) {
    add(
      "victoriaLogsSha256",
      `${JSON.stringify(s.victoriaLogsSha256)} must be the release archive's SHA-256 as 64 lowercase hex digits (sha256sum prints it), ` +
        `or empty to check the archive against the release's own checksums file`,
    );
  }
  if (typeof s.victoriaLogsUrl !== "string" || (s.victoriaLogsUrl !== "" && !MIRROR_URL.test(s.victoriaLogsUrl))) {
    add(
      "victoriaLogsUrl",
      `${JSON.stringify(s.victoriaLogsUrl)} must be the URL of a directory holding the release's files, without a trailing "/" ` +
        `(https://host/path, or http://127.0.0.1:port/path for a mirror on the server), or empty for ${VICTORIALOGS_RELEASE_URL}`,
    );
  }
  if (!Number.isInteger(s.logsRetentionDays) || s.logsRetentionDays < LOGS_RETENTION_DAYS.min || s.logsRetentionDays > LOGS_RETENTION_DAYS.max) {
    add("logsRetentionDays", `${s.logsRetentionDays} must be a whole number of days, ${LOGS_RETENTION_DAYS.min} to ${LOGS_RETENTION_DAYS.max}`);
  }
  const quarter = Math.floor(s.memoryMb / 4);
  if (!Number.isInteger(s.logsMemoryMb) || s.logsMemoryMb < LOGS_MEMORY_MB.min || s.logsMemoryMb > quarter) {
    add(
      "logsMemoryMb",
      `${s.logsMemoryMb} must be ${LOGS_MEMORY_MB.min} to ${quarter} MB: VictoriaLogs needs about 124 MB after a burst of 20,000 lines, ` +
        `and more than a quarter of the server's ${s.memoryMb} MB leaves too little for PostgreSQL and the app`,
    );
  }
  return problems;
}

/** The role's scripts, each a snippet file with its settings block. */
const script = (name: string, settings: Parameters<typeof renderScript>[1]) => renderScript(path.join(__dirname, "files", name), settings);

/**
 * The handler of VictoriaLogs' files (its installer's settings and its unit): the pinned version installed
 * and the service restarted on it. Any failure (a refused archive, a service that does not come up) puts
 * the files back and runs this again with them: the previous version, which is still installed.
 */
const restartVictoriaLogs = `${L.installer} activate
${L.installer} pin-note
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl restart ${L.unit}
  for _ in $(seq 30); do
    if [ "$(curl --fail --silent --max-time 5 http://127.0.0.1:${VICTORIALOGS_PORT}/health)" = OK ]; then exit 0; fi
    sleep 1
  done
  echo "${L.unit} does not answer on http://127.0.0.1:${VICTORIALOGS_PORT}/health after a restart: journalctl -u ${L.unit}" >&2
  exit 1
else
  echo "systemd is not running here: skipped systemctl restart ${L.unit}"
fi`;

const restartUpload = `if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  if systemctl is-active --quiet ${L.uploadUnit}; then systemctl restart ${L.uploadUnit}; fi
else
  echo "systemd is not running here: skipped systemctl restart ${L.uploadUnit}"
fi`;

/**
 * VictoriaLogs (the vendor's release binary, checked by SHA-256) on 127.0.0.1, fed the whole journal by
 * systemd-journal-upload, and the app's error lines counted into node_exporter's textfile directory every
 * minute. Refuses bad settings with a SettingsError.
 */
export function logsRole(s: LogsSettings): HostRole {
  refuseProblems("logs", logsSettingsProblems(s));
  const arch = victoriaLogsArch(s.serverType);
  const flags = { logsRetentionDays: s.logsRetentionDays, logsMemoryMb: s.logsMemoryMb, diskLimitMb: victoriaLogsDiskLimitMb(s.volumeSizeGb) };
  const units = [L.unit, L.uploadUnit, L.errorsService, L.errorsTimer];
  const toolSettings = { unit: L.unit, upload_unit: L.uploadUnit, timer: L.errorsTimer };
  return {
    name: "logs",
    description: `VictoriaLogs ${VICTORIALOGS_VERSION} on 127.0.0.1:${VICTORIALOGS_PORT} with the whole journal, ${s.logsRetentionDays} days, ${s.logsMemoryMb} MB cap; app error lines as a metric`,
    // systemd-journal-remote: systemd-journal-upload; curl and jq: the installer and the error-lines query.
    packages: ["systemd-journal-remote", "curl", "jq", "ca-certificates"],
    directories: [
      { path: L.installDir, mode: "0755" },
      { path: LAYOUT.textfileDir, mode: "0755" },
      { path: L.uploadDropInDir, mode: "0755" },
    ],
    files: [
      {
        path: L.installer,
        mode: "0755",
        content: script("leaninfra-victorialogs-install.sh", {
          version: VICTORIALOGS_VERSION,
          arch,
          base_url: s.victoriaLogsUrl || VICTORIALOGS_RELEASE_URL,
          pinned_sha256: s.victoriaLogsSha256,
          install_dir: L.installDir,
          binary: L.binary,
          user: VICTORIALOGS_USER,
          data_dir: L.dataDir,
        }),
        onChange: restartVictoriaLogs,
      },
      { path: L.unitFile, mode: "0644", content: renderVictoriaLogsUnit(flags), onChange: restartVictoriaLogs },
      { path: L.uploadDropIn, mode: "0644", content: renderJournalUploadDropIn(), onChange: restartUpload },
      {
        path: L.errorsBin,
        mode: "0755",
        content: script("leaninfra-log-errors.sh", {
          url: `http://127.0.0.1:${VICTORIALOGS_PORT}/select/logsql/stats_query`,
          query: APP_ERROR_LINES_QUERY,
          window: APP_ERROR_WINDOW,
          metrics_file: L.errorsMetrics,
        }),
      },
      { path: L.errorsServiceFile, mode: "0644", content: renderLogErrorsService(), onChange: systemctlHandler("daemon-reload") },
      { path: L.errorsTimerFile, mode: "0644", content: renderLogErrorsTimer(), onChange: systemctlHandler("daemon-reload") },
    ],
    validate: script("logs-validate.sh", {
      installer: L.installer,
      binary: L.binary,
      staged: `${L.installDir}/${VICTORIALOGS_VERSION}/victoria-logs-prod`,
      args: victoriaLogsArgs(flags),
      units,
    }),
    apply: script("logs-apply.sh", { installer: L.installer, ...toolSettings }),
    healthCheck: script("logs-health-check.sh", { ...toolSettings, health_url: `http://127.0.0.1:${VICTORIALOGS_PORT}/health` }),
  };
}

/** The logs role: always on; VictoriaLogs' download, retention and memory cap from config. */
export const role = defineRole({
  name: "logs",
  after: ["base"],
  budget: {
    monthlyCost: { amount: 0, currency: "EUR", what: "Runs on the server: VictoriaLogs (about 30-50 MiB RAM, its data a share of the volume) and systemd-journal-upload." },
    secrets: [],
    alerts: ["AppErrorLinesUnknown", "TargetDown", "SystemdUnitFailed"],
    failurePoints: [
      "VictoriaLogs down: lines stay in the journal and upload resumes from its cursor; AppErrorLines cannot be counted (AppErrorLinesUnknown).",
      "Its disk share full: the oldest logs are dropped before the retention days.",
    ],
  },
  settings: z.object({
    victoriaLogsSha256: z
      .string()
      .default("")
      .describe(
        `SHA-256 of the VictoriaLogs ${VICTORIALOGS_VERSION} release archive for the server's architecture (victoria-logs-linux-<amd64|arm64>-${VICTORIALOGS_VERSION}.tar.gz). ` +
          "Empty: the archive is checked against the release's own checksums file and the first install prints the checksum to pin here.",
      ),
    victoriaLogsUrl: z
      .string()
      .default("")
      .describe(`Where the VictoriaLogs release's files are downloaded from (a mirror's directory URL); empty: ${VICTORIALOGS_RELEASE_URL}.`),
    logsRetentionDays: z.number().int().default(30).describe("Days VictoriaLogs keeps the journal's lines (older ones are deleted)."),
    logsMemoryMb: z
      .number()
      .int()
      .default(256)
      .describe("VictoriaLogs' memory cap in MB (systemd MemoryMax; its caches get half). At most a quarter of the server's memory."),
  }),
  render: (s) =>
    logsRole({
      victoriaLogsSha256: s.victoriaLogsSha256,
      victoriaLogsUrl: s.victoriaLogsUrl,
      logsRetentionDays: s.logsRetentionDays,
      logsMemoryMb: s.logsMemoryMb,
      serverType: s.serverType,
      memoryMb: s.memoryMb,
      volumeSizeGb: s.volumeSizeGb,
    }),
});
