import * as path from "node:path";
import { z } from "zod";
import { defineRole, refuseProblems } from "../host/define";
import { LAYOUT } from "../host/layout";
import { GENERATED_SECRET, SQL_IDENTIFIER } from "../host/names";
import { HostRole, systemctlHandler } from "../host/role";
import { renderScript } from "../host/script";
import {
  POSTGRES_CONFIG_MODE,
  POSTGRES_DEFAULT_PORT,
  POSTGRES_PATHS as P,
  SERVER_SETTING_NAMES,
  TUNING_SETTING_NAMES,
  postgresMemorySettings,
  postgresPasswordVerifier,
  postgresPgpassPath,
  renderPostgresHba,
  renderPostgresPgpass,
  renderPostgresServerConf,
  renderPostgresSystemdDropIn,
  renderPostgresTuningConf,
} from "./config";

export * from "./config";

export interface PostgresSettings {
  /** RAM of the server type in MB (prices.json memoryGb * 1024). */
  memoryMb: number;
  /** vCPUs of the server type. */
  vcpus: number;
  /** max_connections; 0 derives it from memoryMb. */
  postgresMaxConnections: number;
  /** The app's database, owned by `postgresUser`. */
  postgresDatabase: string;
  /** The app's login role. */
  postgresUser: string;
  /** The app role's password: a generated secret. Lands only in a root-only pgpass file; never printed. */
  password: string;
  /** TCP port; default 5432 (the tests use another one on the shared host network). */
  port?: number;
}

/** Names PostgreSQL keeps for itself: neither the app's database nor its role may take one. */
const RESERVED_NAMES = ["postgres", "template0", "template1"];

/** Problems with the settings, each starting with its config key; empty when the role can be rendered. */
export function postgresSettingsProblems(s: PostgresSettings): string[] {
  const problems: string[] = [];
  const add = (key: string, message: string) => problems.push(`${key} ${message}`);
  if (!Number.isInteger(s.memoryMb) || s.memoryMb < 1024) add("memoryMb", `${s.memoryMb} must be the server's RAM in MB, at least 1024`);
  if (!Number.isInteger(s.vcpus) || s.vcpus < 1) add("vcpus", `${s.vcpus} must be the server's vCPU count, at least 1`);
  if (!Number.isInteger(s.postgresMaxConnections) || s.postgresMaxConnections < 0 || s.postgresMaxConnections > 5000) {
    add("postgresMaxConnections", `${s.postgresMaxConnections} must be 0 (derive from RAM) or 1..5000`);
  }
  for (const key of ["postgresDatabase", "postgresUser"] as const) {
    if (typeof s[key] !== "string" || !SQL_IDENTIFIER.test(s[key])) {
      add(key, `${JSON.stringify(s[key])} is not a PostgreSQL identifier (accepted: a-z, 0-9 and '_', starting with a letter or '_')`);
    } else if (RESERVED_NAMES.includes(s[key])) {
      add(key, `"${s[key]}" is PostgreSQL's own (accepted: another identifier, e.g. app)`);
    }
  }
  // Printable ASCII without spaces: SASLprep leaves it unchanged, and it needs no quoting in a pgpass line.
  if (typeof s.password !== "string" || !GENERATED_SECRET.test(s.password)) {
    add("password", "must be 16 or more printable ASCII characters without spaces (generate it with @pulumi/random RandomPassword)");
  }
  const port = s.port ?? POSTGRES_DEFAULT_PORT;
  if (!Number.isInteger(port) || port < 1024 || port > 65535) add("port", `${port} must be 1024..65535`);
  return problems;
}

// Handlers and apply run with systemd on the VM; the test roots have no systemd, and pg_ctlcluster
// runs pg_ctl itself there.
const systemdOrPgCtl = (action: "restart" | "reload") => `if [ -d /run/systemd/system ]; then
  systemctl ${action === "reload" ? "try-reload-or-restart" : "restart"} ${P.unit}
elif pg_ctlcluster 17 main status >/dev/null 2>&1; then
  pg_ctlcluster 17 main ${action}
else
  echo "systemd is not running here and cluster 17/main is stopped: skipped the ${action} (apply starts it)"
fi`;

const daemonReload = systemctlHandler("daemon-reload");

/** The role's scripts: validate, apply and health-check, each a snippet file with its settings block. */
const script = (name: string, settings: Parameters<typeof renderScript>[1]) => renderScript(path.join(__dirname, "files", name), settings);

/**
 * PostgreSQL 17 from Debian 13 as a host role: the cluster on the data volume, memory settings from the
 * server's RAM, listening on loopback and the Docker bridge, the app role owning its database,
 * pg_stat_statements, and WAL ready for the backups role. Refuses bad settings with a SettingsError.
 */
export function postgresRole(settings: PostgresSettings): HostRole {
  refuseProblems("postgres", postgresSettingsProblems(settings));
  const s: Required<PostgresSettings> = { ...settings, port: settings.port ?? POSTGRES_DEFAULT_PORT };
  const memory = postgresMemorySettings(s.memoryMb, s.vcpus, s.postgresMaxConnections);
  const pgpass = postgresPgpassPath(s.postgresUser);
  const restart = systemdOrPgCtl("restart");
  const reload = systemdOrPgCtl("reload");
  return {
    name: "postgres",
    description: `PostgreSQL 17 on the data volume, database ${s.postgresDatabase} owned by ${s.postgresUser}, loopback and Docker only`,
    // iproute2: ip and ss, to notice a Docker bridge that appeared after PostgreSQL started.
    packages: ["postgresql-17", "iproute2"],
    directories: [
      { path: LAYOUT.secrets, mode: "0700" },
      { path: `${LAYOUT.data}/postgresql`, mode: "0755", owner: "postgres" },
      { path: `${LAYOUT.data}/postgresql/17`, mode: "0755", owner: "postgres" },
      { path: "/etc/systemd/system/postgresql@17-main.service.d", mode: "0755" },
    ],
    files: [
      { path: P.systemdDropIn, mode: "0644", content: renderPostgresSystemdDropIn(), onChange: daemonReload },
      { path: P.serverConf, mode: POSTGRES_CONFIG_MODE, group: "postgres", content: renderPostgresServerConf(memory, s.port), onChange: restart },
      { path: P.tuningConf, mode: POSTGRES_CONFIG_MODE, group: "postgres", content: renderPostgresTuningConf(memory), onChange: reload },
      { path: P.hba, mode: POSTGRES_CONFIG_MODE, group: "postgres", content: renderPostgresHba(s.postgresDatabase, s.postgresUser), onChange: reload },
      { path: pgpass, mode: "0600", content: renderPostgresPgpass(s.postgresDatabase, s.postgresUser, s.password) },
    ],
    validate: script("validate.sh", { pg_bin: P.bin, config_dir: P.configDir, hba: P.hba }),
    apply: script("apply.sh", {
      verifier: postgresPasswordVerifier(s.postgresUser, s.password),
      port: s.port,
      db: s.postgresDatabase,
      user: s.postgresUser,
      target: P.dataDirectory,
      pgpass,
      pg_bin: P.bin,
      config_dir: P.configDir,
      data_directory_conf: P.dataDirectoryConf,
      docker_bridge: LAYOUT.dockerBridge.address,
      config_mode: POSTGRES_CONFIG_MODE,
      // Files the role does not write as role files but keeps at config_mode: Debian's, and apply's own.
      kept_config_files: [P.postgresqlConf, P.ident, P.dataDirectoryConf],
    }),
    healthCheck: script("health-check.sh", {
      port: s.port,
      db: s.postgresDatabase,
      user: s.postgresUser,
      pgpass,
      data_directory: P.dataDirectory,
      conf_d: P.confD,
      unit: P.unit,
      // archive_command is the backups role's to override.
      managed_settings: [...SERVER_SETTING_NAMES, ...TUNING_SETTING_NAMES].filter((n) => n !== "archive_command"),
    }),
  };
}

const identifier = () =>
  z.string().regex(SQL_IDENTIFIER, { message: "is not a PostgreSQL identifier (accepted: a-z, 0-9 and '_', starting with a letter or '_')" });

/** The postgres role: its config keys, its generated password, and the connection details it offers the app. */
export const role = defineRole({
  name: "postgres",
  after: ["base", "docker"],
  budget: {
    monthlyCost: { amount: 0, currency: "EUR", what: "Runs on the server; its data on the Hetzner volume (priced with the server). About 160 MiB RAM idle, shared_buffers a quarter of RAM at most." },
    secrets: [{ name: "postgres-app-password", livesIn: "Pulumi state (RandomPassword); on the server in the app's root-only env file and PostgreSQL's SCRAM verifier" }],
    alerts: ["PostgreSQLDown", "PostgreSQLTooManyConnections", "DiskFullIn24h", "HighErrorRate", "TargetDown"],
    failurePoints: [
      "PostgreSQL down: every request that needs the database fails, and WAL archiving stops.",
      "The data volume full: writes stop (DiskFullIn24h pages before).",
      "Connections exhausted: new requests wait or fail (PostgreSQLTooManyConnections at 80 %).",
    ],
  },
  settings: z.object({
    postgresDatabase: identifier().default("app").describe("Name of the app's database, owned by the app role postgresUser."),
    postgresUser: identifier()
      .refine((v) => v !== "postgres", { message: "cannot be postgres, the superuser (accepted: e.g. app)" })
      .default("app")
      .describe("The app's database role; its password is generated and kept secret by Pulumi."),
    postgresMaxConnections: z
      .number()
      .int()
      .min(0)
      .max(5000)
      .default(0)
      .describe("PostgreSQL max_connections; 0 derives it from the server's memory with headroom for a launch day."),
  }),
  inputs: { password: { from: "password", resource: "postgres-app-password" } },
  offers: (s, { password }: { password: string }) => ({
    databaseUrl: `postgresql://${s.postgresUser}:${password}@${LAYOUT.dockerHostName}:${POSTGRES_DEFAULT_PORT}/${s.postgresDatabase}`,
    postgresDatabase: s.postgresDatabase,
    postgresUser: s.postgresUser,
    postgresPort: String(POSTGRES_DEFAULT_PORT),
  }),
  render: (s, { password }: { password: string }) =>
    postgresRole({
      memoryMb: s.memoryMb,
      vcpus: s.vcpus,
      postgresMaxConnections: s.postgresMaxConnections,
      postgresDatabase: s.postgresDatabase,
      postgresUser: s.postgresUser,
      password,
    }),
});
