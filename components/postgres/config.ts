import { createHash, createHmac, pbkdf2Sync } from "node:crypto";
import { refuseProblems } from "../host/define";
import { LAYOUT } from "../host/layout";

/** Debian 13's PostgreSQL major version and the cluster its package creates at install. */
export const POSTGRES_VERSION = 17;
export const POSTGRES_CLUSTER = "main";
export const POSTGRES_DEFAULT_PORT = 5432;
/** The role the monitoring role's postgres_exporter logs in as (pg_monitor); pg_hba.conf lets it in on the socket only. */
export const POSTGRES_MONITOR_USER = "leaninfra_monitor";

/** Where PostgreSQL lives on the VM. The backups role reads dataDirectory and the port from here. */
export const POSTGRES_PATHS = Object.freeze({
  configDir: "/etc/postgresql/17/main",
  confD: "/etc/postgresql/17/main/conf.d",
  /** Settings read only at server start: a change restarts PostgreSQL. */
  serverConf: "/etc/postgresql/17/main/conf.d/10-leaninfra-server.conf",
  /** Settings a reload applies: a change reloads PostgreSQL. Later roles override with higher numbers. */
  tuningConf: "/etc/postgresql/17/main/conf.d/20-leaninfra-tuning.conf",
  /** Written by the role's apply once the cluster sits on the data volume (never by hand). */
  dataDirectoryConf: "/etc/postgresql/17/main/conf.d/00-leaninfra-data-directory.conf",
  hba: "/etc/postgresql/17/main/pg_hba.conf",
  /** Debian's own files, created by pg_createcluster (owner postgres); the role only narrows their mode. */
  postgresqlConf: "/etc/postgresql/17/main/postgresql.conf",
  ident: "/etc/postgresql/17/main/pg_ident.conf",
  /** On the Hetzner data volume, so the database survives a rebuilt server. */
  dataDirectory: `${LAYOUT.data}/postgresql/17/main`,
  /** Where Debian's package creates the cluster at install. */
  debianDataDirectory: "/var/lib/postgresql/17/main",
  bin: "/usr/lib/postgresql/17/bin",
  unit: "postgresql@17-main",
  systemdDropIn: "/etc/systemd/system/postgresql@17-main.service.d/leaninfra.conf",
  secretsDir: LAYOUT.secrets,
});

/**
 * The mode of every PostgreSQL config file the role writes or keeps (postgresql.conf, pg_hba.conf,
 * pg_ident.conf, its conf.d files): the server reads them as group postgres, other users read none of them.
 * Debian makes pg_hba.conf and pg_ident.conf 0640 but leaves postgresql.conf world-readable, so that any
 * user's psql can pick the cluster; a user outside the group now gives psql a host (-h localhost) or uses
 * sudo -u postgres psql.
 */
export const POSTGRES_CONFIG_MODE = "0640";

/** The pgpass file (root-only) holding the app role's password, used to check that it works. */
export function postgresPgpassPath(user: string): string {
  return `${LAYOUT.secrets}/postgres-${user}.pgpass`;
}

export interface PostgresMemorySettings {
  maxConnections: number;
  sharedBuffersMb: number;
  effectiveCacheSizeMb: number;
  workMemMb: number;
  maintenanceWorkMemMb: number;
  maxWorkerProcesses: number;
  maxParallelWorkers: number;
  maxParallelWorkersPerGather: number;
  maxParallelMaintenanceWorkers: number;
}

const clamp = (value: number, low: number, high: number) => Math.min(high, Math.max(low, value));

/**
 * PostgreSQL's memory and connection settings for a VM it shares with the app, Redis and monitoring.
 * With R = memoryMb:
 * - shared_buffers = R / 4: PostgreSQL's own cache; the OS page cache caches the same files again.
 * - effective_cache_size = 3R / 4: a planner hint (shared_buffers plus the page cache), allocates nothing.
 * - max_connections (when 0) = 25 per GB of RAM, at least 100 and at most 400: an app pool of 10-20 and a
 *   second release during a deploy use 20-40, so even 2 GB keeps 2-3x headroom for a launch day's extra
 *   workers; beyond 400 idle backends cost more than they help, and a pooler is the answer.
 * - work_mem = R / 4 / max_connections (2..256 MB): every allowed connection sorting at once stays
 *   within a quarter of RAM; most connections are idle, so a real query gets this much per sort.
 * - maintenance_work_mem = R / 32 (64 MB..1 GB): VACUUM and CREATE INDEX; up to 3 autovacuum workers
 *   can each use it, so together they stay under a tenth of RAM.
 * - parallel workers follow the vCPUs, at most half of them (and 4) for one query: the app shares them.
 * 2, 4, 8, 16, 32 GB give max_connections 100, 100, 200, 400, 400 and work_mem 5, 10, 10, 10, 20 MB.
 * Values outside those ranges are refused with a SettingsError naming the key.
 */
export function postgresMemorySettings(memoryMb: number, vcpus: number, maxConnections = 0): PostgresMemorySettings {
  const problems: string[] = [];
  if (!Number.isInteger(memoryMb) || memoryMb < 1024) {
    problems.push(`memoryMb ${memoryMb} must be a whole number of MB, at least 1024 (the server type's RAM)`);
  }
  if (!Number.isInteger(vcpus) || vcpus < 1) problems.push(`vcpus ${vcpus} must be a whole number, at least 1`);
  if (!Number.isInteger(maxConnections) || maxConnections < 0 || maxConnections > 5000) {
    problems.push(`postgresMaxConnections ${maxConnections} must be 0 (derive) or 1..5000`);
  }
  refuseProblems("postgres", problems);
  const connections = maxConnections > 0 ? maxConnections : clamp(Math.floor((memoryMb / 1024) * 25), 100, 400);
  const perQuery = clamp(Math.floor(vcpus / 2), 1, 4);
  return {
    maxConnections: connections,
    sharedBuffersMb: Math.floor(memoryMb / 4),
    effectiveCacheSizeMb: Math.floor((memoryMb * 3) / 4),
    workMemMb: clamp(Math.floor(memoryMb / 4 / connections), 2, 256),
    maintenanceWorkMemMb: clamp(Math.floor(memoryMb / 32), 64, 1024),
    maxWorkerProcesses: Math.max(8, vcpus),
    maxParallelWorkers: vcpus,
    maxParallelWorkersPerGather: perQuery,
    maxParallelMaintenanceWorkers: perQuery,
  };
}

const HEADER = `# Managed by LeanInfra (role "postgres"); edit the role in the repository, not this file.`;

/** Names set in the server (restart-only) file; the integration test checks PostgreSQL agrees they need a restart. */
export const SERVER_SETTING_NAMES = [
  "listen_addresses",
  "port",
  "max_connections",
  "shared_buffers",
  "shared_preload_libraries",
  "max_worker_processes",
  "wal_level",
  "archive_mode",
] as const;

/** Names set in the tuning (reloadable) file. */
export const TUNING_SETTING_NAMES = [
  "effective_cache_size",
  "work_mem",
  "maintenance_work_mem",
  "max_parallel_workers",
  "max_parallel_workers_per_gather",
  "max_parallel_maintenance_workers",
  "random_page_cost",
  "effective_io_concurrency",
  "password_encryption",
  "archive_command",
] as const;

/** conf.d file of the settings PostgreSQL reads only at start; the role restarts it when this changes. */
export function renderPostgresServerConf(memory: PostgresMemorySettings, port: number): string {
  return `${HEADER}
# Read only when PostgreSQL starts: the role restarts the cluster when this file changes.

# Loopback for the host's own tools, the Docker bridge for the app's container. When the bridge does not
# exist yet, PostgreSQL logs a warning and listens on the rest; the systemd drop-in starts it after Docker.
listen_addresses = 'localhost,${LAYOUT.dockerBridge.address}'
port = ${port}
max_connections = ${memory.maxConnections}
shared_buffers = ${memory.sharedBuffersMb}MB
shared_preload_libraries = 'pg_stat_statements'
max_worker_processes = ${memory.maxWorkerProcesses}

# WAL ready for archiving, so the backups role only has to set archive_command (no restart then).
wal_level = replica
archive_mode = on
`;
}

/** conf.d file of the settings a reload applies; the role reloads PostgreSQL when this changes. */
export function renderPostgresTuningConf(memory: PostgresMemorySettings): string {
  return `${HEADER}
# A reload applies these (no restart). See postgresMemorySettings in the repository for the formulas.

effective_cache_size = ${memory.effectiveCacheSizeMb}MB
work_mem = ${memory.workMemMb}MB
maintenance_work_mem = ${memory.maintenanceWorkMemMb}MB
max_parallel_workers = ${memory.maxParallelWorkers}
max_parallel_workers_per_gather = ${memory.maxParallelWorkersPerGather}
max_parallel_maintenance_workers = ${memory.maxParallelMaintenanceWorkers}

# Hetzner volumes and local disks are SSDs: random reads cost little more than sequential ones.
random_page_cost = 1.1
effective_io_concurrency = 200

password_encryption = 'scram-sha-256'

# Placeholder until the backups role sets pgBackRest's archive-push in a later conf.d file. Not empty on
# purpose: with archive_mode on and an empty archive_command PostgreSQL keeps every WAL segment waiting
# for an archiver and pg_wal grows until the disk is full; /bin/true lets it recycle WAL as usual.
archive_command = '/bin/true'
`;
}

/** pg_hba.conf: the superuser by peer on the socket; the app role by password from loopback and Docker only. */
export function renderPostgresHba(database: string, user: string): string {
  const rows = [
    ["local", "all", "postgres", "", "peer"],
    // postgres_exporter (monitoring role): its pg_monitor role, by password, on the socket only.
    ["local", "postgres", POSTGRES_MONITOR_USER, "", "scram-sha-256"],
    ["host", database, user, "127.0.0.1/32", "scram-sha-256"],
    ["host", database, user, "::1/128", "scram-sha-256"],
    ["host", database, user, LAYOUT.dockerBridge.subnet, "scram-sha-256"],
  ];
  const widths = [6, Math.max(8, database.length), Math.max(POSTGRES_MONITOR_USER.length, user.length), 16];
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => (i < widths.length ? cell.padEnd(widths[i]) : cell))
      .join("  ")
      .trimEnd();
  return `${HEADER}
# Who may connect, first match wins, and nothing else: the superuser "postgres" only through the local
# socket as the OS user postgres (sudo -u postgres psql); the app role "${user}" only to its database
# "${database}", with its password (SCRAM), from loopback and the Docker network. No other role, database
# or address gets in; the superuser never logs in over TCP. The monitoring role's ${POSTGRES_MONITOR_USER}
# (pg_monitor) reads statistics through the socket with its password.
${line(["# TYPE", "DATABASE", "USER", "ADDRESS", "METHOD"])}
${rows.map(line).join("\n")}
`;
}

/** One pgpass field: ':' and '\\' are escaped with a backslash. */
function pgpassField(value: string): string {
  return value.replace(/[\\:]/g, (c) => `\\${c}`);
}

/** The root-only pgpass file the role uses to check the app role's password over TCP. */
export function renderPostgresPgpass(database: string, user: string, password: string): string {
  return `*:*:${pgpassField(database)}:${pgpassField(user)}:${pgpassField(password)}\n`;
}

/**
 * PostgreSQL's SCRAM-SHA-256 verifier for a password (what pg_authid stores). The role sends this,
 * never the password, so the password cannot end up in the server log or pg_stat_statements.
 * The salt is derived from the password and the role name so the rendered bundle is the same on every
 * `pulumi up` (its hash is the trigger); the passwords are long random secrets, so no table helps.
 * Only printable ASCII is accepted (SASLprep leaves it unchanged).
 */
export function scramSha256Verifier(password: string, salt: Buffer, iterations = 4096): string {
  if (!/^[\x20-\x7e]+$/.test(password)) throw new Error("scramSha256Verifier: the password must be printable ASCII");
  const salted = pbkdf2Sync(Buffer.from(password, "utf8"), salt, iterations, 32, "sha256");
  const clientKey = createHmac("sha256", salted).update("Client Key").digest();
  const storedKey = createHash("sha256").update(clientKey).digest();
  const serverKey = createHmac("sha256", salted).update("Server Key").digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString("base64")}$${storedKey.toString("base64")}:${serverKey.toString("base64")}`;
}

/** The app role's verifier with its deterministic 16-byte salt. */
export function postgresPasswordVerifier(user: string, password: string): string {
  const salt = createHmac("sha256", password).update(`leaninfra postgres scram salt for ${user}`).digest().subarray(0, 16);
  return scramSha256Verifier(password, salt);
}

/** The systemd drop-in: after Docker (so the bridge address exists) and only with the data volume mounted. */
export function renderPostgresSystemdDropIn(): string {
  return `${HEADER}
[Unit]
# The Docker bridge (${LAYOUT.dockerBridge.address}) must exist before PostgreSQL binds its listen addresses.
After=docker.service
# The data directory is on the volume: never start against an empty mount point on the root disk.
RequiresMountsFor=${LAYOUT.data}/postgresql
`;
}
