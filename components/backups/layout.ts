import { BACKUP_LAYOUT } from "../backup-bucket/policy";
import { LAYOUT } from "../host/layout";

/**
 * Where the backups role, its timers, the restore drill and the emergency restore meet on the VM.
 * The bucket side (repo path, stanza, prefixes) comes from the BackupBucket's BACKUP_LAYOUT.
 */
export const BACKUPS = Object.freeze({
  stanza: BACKUP_LAYOUT.stanza,
  repoPath: BACKUP_LAYOUT.repoPath,
  dumpsPrefix: BACKUP_LAYOUT.dumpsPrefix,
  pgbackrestConf: "/etc/pgbackrest/pgbackrest.conf",
  /** Root-only: the S3 key, secret and the repository passphrase, as `KEY=value` lines. */
  secretsFile: `${LAYOUT.secrets}/backups.env`,
  /** The drill's scratch cluster lives on the data volume, never inside production's data directory. */
  scratchDir: `${LAYOUT.data}/leaninfra-drill`,
  scratchPort: 5499,
  /**
   * The drill's app container runs on this internal Docker network (docker network create --internal):
   * no route out of it, so a copy of production cannot send mail, take payments or call webhooks. The
   * host's address on it (the gateway) is where the scratch cluster listens, and all the container can
   * reach. Outside Docker's default pools (172.17-31.0.0/16, 192.168.0.0/16), so no network of Docker's takes it.
   */
  drillNetwork: { name: "leaninfra-drill", bridge: "leaninfra-drill", subnet: "172.16.99.0/24", gateway: "172.16.99.1" },
  bin: {
    backup: "/usr/local/sbin/leaninfra-backup",
    drill: "/usr/local/sbin/leaninfra-drill",
    restore: "/usr/local/sbin/leaninfra-restore",
    walQueue: "/usr/local/sbin/leaninfra-wal-queue",
  },
  logs: {
    backup: `${LAYOUT.logs}/backup.log`,
    drill: `${LAYOUT.logs}/drill.log`,
  },
  /** node_exporter textfile metrics, one file per job, written atomically. */
  metrics: {
    backup: `${LAYOUT.textfileDir}/leaninfra_backup.prom`,
    dump: `${LAYOUT.textfileDir}/leaninfra_dump.prom`,
    drill: `${LAYOUT.textfileDir}/leaninfra_drill.prom`,
    walArchive: `${LAYOUT.textfileDir}/leaninfra_wal_archive.prom`,
  },
  /** pgBackRest's logs of archive_command and of its background pushes (log-level-file=info): where it says it dropped WAL. */
  archivePushLogs: [
    `/var/log/pgbackrest/${BACKUP_LAYOUT.stanza}-archive-push.log`,
    `/var/log/pgbackrest/${BACKUP_LAYOUT.stanza}-archive-push-async.log`,
  ],
});

/** The pgBackRest settings every backups script renders (files/pgbackrest-lib.sh reads them from the script that includes it). */
export const PGBACKREST_SCRIPT_SETTINGS = Object.freeze({
  stanza: BACKUPS.stanza,
  pgbackrest_conf: BACKUPS.pgbackrestConf,
  secrets_file: BACKUPS.secretsFile,
});
