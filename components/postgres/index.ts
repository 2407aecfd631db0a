import { LAYOUT } from "../host/layout";
import { HostRole, systemctlHandler } from "../host/role";
import {
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
  /** max_connections; 0 derives it from memoryMb (leaninfra:postgresMaxConnections). */
  maxConnections: number;
  /** The app's database (leaninfra:postgresDatabase), owned by `user`. */
  database: string;
  /** The app's login role (leaninfra:postgresUser). */
  user: string;
  /** The app role's password: a generated secret. Lands only in a root-only pgpass file; never printed. */
  password: string;
  /** TCP port; default 5432 (the tests use another one on the shared host network). */
  port?: number;
}

const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;
// Printable ASCII without spaces: SASLprep leaves it unchanged, and it needs no quoting in a pgpass line.
const PASSWORD = /^[\x21-\x7e]{16,1024}$/;

/** Problems with the settings, each naming the field; empty when the role can be rendered. */
export function postgresSettingsProblems(s: PostgresSettings): string[] {
  const problems: string[] = [];
  const add = (field: string, message: string) => problems.push(`${field} ${message}`);
  if (!Number.isInteger(s.memoryMb) || s.memoryMb < 1024) add("memoryMb", `${s.memoryMb} must be the server's RAM in MB, at least 1024`);
  if (!Number.isInteger(s.vcpus) || s.vcpus < 1) add("vcpus", `${s.vcpus} must be the server's vCPU count, at least 1`);
  if (!Number.isInteger(s.maxConnections) || s.maxConnections < 0 || s.maxConnections > 5000) {
    add("maxConnections", `${s.maxConnections} must be 0 (derive from RAM) or 1..5000`);
  }
  for (const key of ["database", "user"] as const) {
    if (typeof s[key] !== "string" || !IDENTIFIER.test(s[key])) {
      add(key, `${JSON.stringify(s[key])} is not a PostgreSQL identifier (a-z, 0-9 and '_', starting with a letter or '_')`);
    } else if (["postgres", "template0", "template1"].includes(s[key])) {
      add(key, `"${s[key]}" is PostgreSQL's own; choose another name (e.g. app)`);
    }
  }
  if (typeof s.password !== "string" || !PASSWORD.test(s.password)) {
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

function validateScript(): string {
  return `cd /
# PostgreSQL itself reads postgresql.conf and every conf.d file: an unknown name or a bad value fails here.
data=$(runuser -u postgres -- ${P.bin}/postgres -D ${P.configDir} -C data_directory)
# A running server checks the new pg_hba.conf too (it reads the file on disk for this view).
if pg_ctlcluster 17 main status >/dev/null 2>&1 && [ -f "$data/postmaster.pid" ]; then
  port=$(sed -n 4p "$data/postmaster.pid")
  errors=$(runuser -u postgres -- psql -X -A -t -q -p "$port" -d postgres \\
    -c "select 'line ' || line_number || ': ' || error from pg_hba_file_rules where error is not null")
  if [ -n "$errors" ]; then
    echo "${P.hba} has errors:" >&2
    echo "$errors" >&2
    exit 1
  fi
fi`;
}

/**
 * apply: start the cluster, put it on the data volume (moving only the fresh, empty cluster Debian
 * creates), then the app role, its database, pg_stat_statements and its password. Prints one line per change.
 */
function applyScript(s: Required<PostgresSettings>): string {
  const verifier = postgresPasswordVerifier(s.user, s.password);
  return `cd /
port=${s.port}
db=${s.database}
user=${s.user}
target=${P.dataDirectory}
pgpass=${postgresPgpassPath(s.user)}
export PGOPTIONS='-c client_min_messages=warning'

die() {
  echo "$*" >&2
  exit 1
}
is_running() { pg_ctlcluster 17 main status >/dev/null 2>&1; }
# pg_ctlcluster hands start/stop to systemctl when systemd runs; its own chatter goes to stderr.
start_cluster() { pg_ctlcluster 17 main start >&2; }
stop_cluster() { pg_ctlcluster -m fast 17 main stop >&2; }
restart_cluster() { pg_ctlcluster 17 main restart >&2; }
# psql as the superuser over the local socket (peer); SQL comes on stdin, never on the command line.
sql() { runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -p "$port" "$@"; }
configured_data_directory() { runuser -u postgres -- ${P.bin}/postgres -D ${P.configDir} -C data_directory; }

# Prints what makes the running cluster more than the fresh one initdb made; nothing when it is fresh.
cluster_contents() {
  sql -d postgres <<'SQL'
select 'databases ' || string_agg(datname, ', ' order by datname) from pg_database
  where datname not in ('postgres', 'template0', 'template1') having count(*) > 0;
select 'roles ' || string_agg(rolname, ', ' order by rolname) from pg_roles
  where rolname <> 'postgres' and rolname !~ '^pg_' having count(*) > 0;
select count(*) || ' tables, views or sequences in database postgres' from pg_class c
  join pg_namespace n on n.oid = c.relnamespace
  where n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_toast'
    and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f') having count(*) > 0;
SQL
}

refuse_unless_fresh() {
  local source=$1 contents
  if ! is_running; then start_cluster; fi
  contents=$(cluster_contents)
  if [ -n "$contents" ]; then
    die "PostgreSQL cluster 17/main at $source is not the fresh, empty cluster Debian creates: it holds $(echo "$contents" | paste -sd ';' | sed 's/;/; /g').
LeanInfra moves only that fresh cluster to the data volume and never moves or deletes data by itself.
To keep this data: stop the cluster (pg_ctlcluster 17 main stop), copy it with rsync -a to $target (owner postgres, mode 0700), then run the role again; it will use the copy on the volume."
  fi
}

write_data_directory_conf() {
  local tmp
  tmp=$(mktemp ${P.confD}/.00-leaninfra-data-directory.conf.XXXXXX)
  printf '%s\\n' '# Written by LeanInfra (role "postgres") when it put the cluster on the data volume; do not edit.' \\
    "data_directory = '$target'" >"$tmp"
  chmod 0644 "$tmp"
  mv -fT "$tmp" ${P.dataDirectoryConf}
}

# Keeps the cluster it no longer uses, renamed so nobody mistakes it for the live one.
set_aside() {
  local source=$1 kept
  kept="$source.unused-$(date -u +%Y%m%dT%H%M%SZ)"
  mv -T "$source" "$kept"
  echo "$kept"
}

place_cluster() {
  local source=$1 kept
  if [ -f "$target/PG_VERSION" ]; then
    # A cluster is already on the volume (e.g. the server was rebuilt and the volume re-attached).
    if [ "$(cat "$target/PG_VERSION")" != 17 ]; then
      die "$target holds a PostgreSQL $(cat "$target/PG_VERSION") cluster, not 17: upgrade it (pg_upgrade) before this role can use it"
    fi
    if [ -f "$source/PG_VERSION" ]; then refuse_unless_fresh "$source"; fi
    if is_running; then stop_cluster; fi
    if [ "$(stat -c %U "$target")" != postgres ]; then
      chown -R postgres:postgres "$target"
      echo "gave the cluster on the data volume to user postgres (its files had another owner, e.g. after a rebuild)"
    fi
    write_data_directory_conf
    kept=''
    if [ -d "$source" ]; then kept=$(set_aside "$source"); fi
    start_cluster
    echo "using the existing cluster on the data volume at $target\${kept:+ (the fresh cluster Debian created is kept as $kept)}"
    return 0
  fi
  if [ -e "$target" ] && [ -n "$(ls -A "$target")" ]; then
    die "$target is not empty but holds no PostgreSQL cluster (no PG_VERSION): look at it and move it away, then run the role again"
  fi
  if [ ! -f "$source/PG_VERSION" ]; then
    die "no PostgreSQL 17 cluster at $source (where ${P.configDir} points) nor at $target: create one with pg_createcluster 17 main, then run the role again"
  fi
  refuse_unless_fresh "$source"
  stop_cluster
  local partial
  partial="$(dirname "$target")/.main.leaninfra-partial"
  rm -rf -- "$partial"
  cp -a -- "$source" "$partial"
  if [ -d "$target" ]; then rmdir -- "$target"; fi
  mv -T -- "$partial" "$target"
  write_data_directory_conf
  kept=$(set_aside "$source")
  start_cluster
  echo "moved the fresh cluster 17/main from $source to $target (the original is kept as $kept)"
}

current=$(configured_data_directory)
if [ "$current" != "$target" ]; then
  place_cluster "$current"
fi
if ! is_running; then
  start_cluster
  echo "started PostgreSQL cluster 17/main"
fi

# Started before Docker made its bridge (e.g. Docker was installed later): listen there too.
if ip -4 -o addr show 2>/dev/null | grep -q ' ${LAYOUT.dockerBridge.address}/' &&
  ! ss -H -l -t -n "sport = :$port" | awk '{ print $4 }' | grep -qx "${LAYOUT.dockerBridge.address}:$port"; then
  restart_cluster
  echo "restarted PostgreSQL to listen on the Docker bridge ${LAYOUT.dockerBridge.address} (it started before the bridge existed)"
fi

state=$(sql -d postgres -v u="$user" <<'SQL'
select case when rolsuper or not rolcanlogin then 'wrong' else 'ok' end from pg_roles where rolname = :'u';
SQL
)
if [ -z "$state" ]; then
  sql -d postgres -v u="$user" <<'SQL'
create role :"u" login;
SQL
  echo "created role $user"
elif [ "$state" = wrong ]; then
  sql -d postgres -v u="$user" <<'SQL'
alter role :"u" login nosuperuser;
SQL
  echo "made role $user a plain login role (it was a superuser or could not log in)"
fi

owner=$(sql -d postgres -v d="$db" <<'SQL'
select pg_get_userbyid(datdba) from pg_database where datname = :'d';
SQL
)
if [ -z "$owner" ]; then
  sql -d postgres -v d="$db" -v u="$user" <<'SQL'
create database :"d" owner :"u";
SQL
  echo "created database $db owned by $user"
elif [ "$owner" != "$user" ]; then
  sql -d postgres -v d="$db" -v u="$user" <<'SQL'
alter database :"d" owner to :"u";
SQL
  echo "made $user the owner of database $db (was $owner)"
fi

if [ -z "$(echo "select 1 from pg_extension where extname = 'pg_stat_statements'" | sql -d "$db")" ]; then
  echo 'create extension pg_stat_statements' | sql -d "$db"
  echo "created extension pg_stat_statements in database $db"
fi

# The password is checked by logging in with it over TCP, as the app will; set only when that fails.
password_works() {
  PGPASSFILE=$pgpass PGCONNECT_TIMEOUT=5 psql -w -X -A -t -q \\
    "host=127.0.0.1 port=$port dbname=$db user=$user" -c 'select 1' >/dev/null 2>"$1"
}
login_error=$(mktemp)
trap 'rm -f "$login_error"' EXIT
if ! password_works "$login_error"; then
  # The SCRAM verifier, not the password: nothing secret reaches the server log or pg_stat_statements.
  sql -d postgres -v u="$user" <<'SQL'
alter role :"u" password '${verifier}';
SQL
  if ! password_works "$login_error"; then
    die "set the password of role $user, but logging in as $user to 127.0.0.1:$port still fails: $(cat "$login_error")"
  fi
  echo "set the password of role $user (logging in with it did not work)"
fi`;
}

function healthCheckScript(s: Required<PostgresSettings>): string {
  const names = [...SERVER_SETTING_NAMES, ...TUNING_SETTING_NAMES].filter((n) => n !== "archive_command");
  return `cd /
port=${s.port}
if ! pg_ctlcluster 17 main status >/dev/null 2>&1; then
  echo "PostgreSQL 17/main is not running: see pg_lsclusters and /var/log/postgresql/postgresql-17-main.log" >&2
  exit 1
fi
q() { runuser -u postgres -- psql -X -A -t -q -p "$port" -d postgres -c "$1"; }
data=$(q 'show data_directory')
if [ "$data" != ${P.dataDirectory} ]; then
  echo "PostgreSQL runs from $data, not from the data volume (${P.dataDirectory})" >&2
  exit 1
fi
overridden=$(q "select string_agg(name || ' (from ' || coalesce(sourcefile, source) || ')', ', ') from pg_settings
  where name in (${names.map((n) => `'${n}'`).join(", ")}) and coalesce(sourcefile, '') not like '${P.confD}/%'")
if [ -n "$overridden" ]; then
  echo "settings overridden outside ${P.confD} (ALTER SYSTEM? see postgresql.auto.conf): $overridden" >&2
  exit 1
fi
pending=$(q "select string_agg(name, ', ') from pg_settings where pending_restart")
if [ -n "$pending" ]; then
  echo "settings waiting for a restart: $pending (sudo systemctl restart ${P.unit})" >&2
  exit 1
fi
if ! PGPASSFILE=${postgresPgpassPath(s.user)} PGCONNECT_TIMEOUT=5 psql -w -X -A -t -q \\
  "host=127.0.0.1 port=$port dbname=${s.database} user=${s.user}" -c 'select 1' >/dev/null; then
  echo "the app role ${s.user} cannot log in to ${s.database} on 127.0.0.1:$port with its password" >&2
  exit 1
fi`;
}

/**
 * PostgreSQL 17 from Debian 13 as a host role: the cluster on the data volume, memory settings from the
 * server's RAM, listening on loopback and the Docker bridge, the app role owning its database,
 * pg_stat_statements, and WAL ready for the backups role.
 */
export function postgresRole(settings: PostgresSettings): HostRole {
  const problems = postgresSettingsProblems(settings);
  if (problems.length > 0) {
    throw new Error(`postgresRole: invalid settings:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
  const s: Required<PostgresSettings> = { ...settings, port: settings.port ?? POSTGRES_DEFAULT_PORT };
  const memory = postgresMemorySettings(s.memoryMb, s.vcpus, s.maxConnections);
  const restart = systemdOrPgCtl("restart");
  const reload = systemdOrPgCtl("reload");
  return {
    name: "postgres",
    description: `PostgreSQL 17 on the data volume, database ${s.database} owned by ${s.user}, loopback and Docker only`,
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
      { path: P.serverConf, mode: "0644", content: renderPostgresServerConf(memory, s.port), onChange: restart },
      { path: P.tuningConf, mode: "0644", content: renderPostgresTuningConf(memory), onChange: reload },
      { path: P.hba, mode: "0640", group: "postgres", content: renderPostgresHba(s.database, s.user), onChange: reload },
      { path: postgresPgpassPath(s.user), mode: "0600", content: renderPostgresPgpass(s.database, s.user, s.password) },
    ],
    validate: validateScript(),
    apply: applyScript(s),
    healthCheck: healthCheckScript(s),
  };
}
