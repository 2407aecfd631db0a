# shellcheck shell=bash
# The postgres role's apply step (components/postgres/index.ts): runs as root inside the role's bundle on
# every run. It starts the cluster, puts it on the data volume (moving only the fresh, empty cluster Debian
# creates), then the app role, its database, pg_stat_statements and its password; one line per change.
cd /
# The verifier first: its '$' signs are literal (this directive covers that one line).
# shellcheck disable=SC2016
# @settings-begin
readonly verifier='SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy'
readonly port=5432
readonly db='app'
readonly user='app'
readonly target='/srv/data/postgresql/17/main'
readonly pgpass='/etc/leaninfra/secrets/postgres-app.pgpass'
readonly pg_bin='/usr/lib/postgresql/17/bin'
readonly config_dir='/etc/postgresql/17/main'
readonly data_directory_conf='/etc/postgresql/17/main/conf.d/00-leaninfra-data-directory.conf'
readonly docker_bridge='172.17.0.1'
readonly config_mode='0640'
readonly -a kept_config_files=('/etc/postgresql/17/main/postgresql.conf' '/etc/postgresql/17/main/pg_ident.conf')
# @settings-end
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
configured_data_directory() { runuser -u postgres -- "$pg_bin/postgres" -D "$config_dir" -C data_directory; }

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
  tmp=$(mktemp "${data_directory_conf%/*}/.${data_directory_conf##*/}.XXXXXX")
  printf '%s\n' '# Written by LeanInfra (role "postgres") when it put the cluster on the data volume; do not edit.' \
    "data_directory = '$target'" >"$tmp"
  chgrp postgres "$tmp"
  chmod "$config_mode" "$tmp"
  mv -fT "$tmp" "$data_directory_conf"
}

# PostgreSQL reads its config files as group postgres; nobody else reads them. Debian's own keep their owner.
restrict_config_files() {
  local file mode=${config_mode#0}
  for file in "${kept_config_files[@]}"; do
    if [ ! -e "$file" ]; then continue; fi
    if [ "$(stat -c %G "$file")" != postgres ]; then
      chgrp postgres "$file"
      echo "gave $file to group postgres"
    fi
    if [ "$(stat -c %a "$file")" != "$mode" ]; then
      chmod "$config_mode" "$file"
      echo "made $file readable only by its owner and group postgres (mode $mode)"
    fi
  done
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
    echo "using the existing cluster on the data volume at $target${kept:+ (the fresh cluster Debian created is kept as $kept)}"
    return 0
  fi
  if [ -e "$target" ] && [ -n "$(ls -A "$target")" ]; then
    die "$target is not empty but holds no PostgreSQL cluster (no PG_VERSION): look at it and move it away, then run the role again"
  fi
  if [ ! -f "$source/PG_VERSION" ]; then
    die "no PostgreSQL 17 cluster at $source (where $config_dir points) nor at $target: create one with pg_createcluster 17 main, then run the role again"
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

restrict_config_files
current=$(configured_data_directory)
if [ "$current" != "$target" ]; then
  place_cluster "$current"
fi
if ! is_running; then
  start_cluster
  echo "started PostgreSQL cluster 17/main"
fi

# Started before Docker made its bridge (e.g. Docker was installed later): listen there too.
if ip -4 -o addr show 2>/dev/null | grep -q " $docker_bridge/" &&
  ! ss -H -l -t -n "sport = :$port" | awk '{ print $4 }' | grep -qx "$docker_bridge:$port"; then
  restart_cluster
  echo "restarted PostgreSQL to listen on the Docker bridge $docker_bridge (it started before the bridge existed)"
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
  PGPASSFILE=$pgpass PGCONNECT_TIMEOUT=5 psql -w -X -A -t -q \
    "host=127.0.0.1 port=$port dbname=$db user=$user" -c 'select 1' >/dev/null 2>"$1"
}
login_error=$(mktemp)
trap 'rm -f "$login_error"' EXIT
if ! password_works "$login_error"; then
  # The SCRAM verifier, not the password: nothing secret reaches the server log or pg_stat_statements.
  # An unquoted heredoc: the verifier goes in on stdin (never on psql's command line); it holds no quote.
  sql -d postgres -v u="$user" <<SQL
alter role :"u" password '$verifier';
SQL
  if ! password_works "$login_error"; then
    die "set the password of role $user, but logging in as $user to 127.0.0.1:$port still fails: $(cat "$login_error")"
  fi
  echo "set the password of role $user (logging in with it did not work)"
fi
