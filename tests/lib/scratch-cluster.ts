import { POSTGRES_PATHS } from "../../components/postgres";

export interface ScratchCluster {
  /** The restored data directory (pgBackRest's --pg1-path). */
  dir: string;
  port: number;
  /** e.g. "32MB" for tests, "256MB" for the benchmark. */
  sharedBuffers: string;
  /** pg_ctl's -t: how long a start (with the WAL replay it includes) may take. */
  startTimeoutSeconds: number;
}

/**
 * Bash that starts a restored data directory as a throwaway cluster: its own port, socket only, peer
 * login for postgres, no archiving (a restored copy must never push WAL into production's repository).
 * The restore's own postgresql.auto.conf (restore_command, recovery target) is kept.
 */
export function startScratchCluster(c: ScratchCluster): string {
  return `cat >${c.dir}/postgresql.conf <<'CONF'
port = ${c.port}
listen_addresses = ''
unix_socket_directories = '/var/run/postgresql'
hba_file = '${c.dir}/pg_hba.conf'
ident_file = '${c.dir}/pg_ident.conf'
archive_mode = off
shared_buffers = ${c.sharedBuffers}
CONF
echo 'local all postgres peer' >${c.dir}/pg_hba.conf
: >${c.dir}/pg_ident.conf
chown postgres:postgres ${c.dir}/postgresql.conf ${c.dir}/pg_hba.conf ${c.dir}/pg_ident.conf
runuser -u postgres -- ${POSTGRES_PATHS.bin}/pg_ctl -D ${c.dir} -l /tmp/scratch.log -w -t ${c.startTimeoutSeconds} start >/dev/null`;
}
