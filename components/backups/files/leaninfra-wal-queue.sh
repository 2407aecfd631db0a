#!/usr/bin/env bash
# leaninfra-wal-queue: how much WAL waits for the bucket, as node_exporter textfile metrics. Run every
# minute by leaninfra-wal-queue.timer; read-only otherwise.
# Managed by LeanInfra (role "backups"): change components/backups/files/leaninfra-wal-queue.sh in the repository, not this file.
#
# PostgreSQL marks every WAL segment it wants archived with pg_wal/archive_status/<segment>.ready and
# removes the mark once archive_command succeeded. pgBackRest's archive-push-queue-max caps the marked
# WAL: beyond it, pgBackRest drops the waiting segments (reports them archived) and logs
# "dropped WAL file '<segment>' because archive queue exceeded ..." in its logs; from then on point-in-time recovery has a gap until the
# next full or differential backup.
# shellcheck source=components/host/files/leaninfra-lib.sh
source "${BASH_SOURCE[0]%/*}/../../host/files/leaninfra-lib.sh" # @lib

# @settings-begin
readonly data_dir='/srv/data/postgresql/17/main'
readonly queue_max_bytes=4294967296
readonly -a archive_push_logs=('/var/log/pgbackrest/main-archive-push.log' '/var/log/pgbackrest/main-archive-push-async.log')
readonly metrics_file='/var/lib/prometheus/node-exporter/leaninfra_wal_archive.prom'
# @settings-end

status_dir=$data_dir/pg_wal/archive_status
if [[ ! -d $status_dir ]]; then
  echo "leaninfra-wal-queue: $status_dir does not exist: is PostgreSQL's data directory on the mounted data volume?" >&2
  exit 1
fi

segments=0
bytes=0
for mark in "$status_dir"/*.ready; do
  [[ -e $mark ]] || continue
  wal=${mark##*/}
  wal=$data_dir/pg_wal/${wal%.ready}
  # A segment can be archived and recycled between the listing and this stat: not waiting any more.
  if size=$(stat -c %s -- "$wal" 2>/dev/null); then
    segments=$((segments + 1))
    bytes=$((bytes + size))
  fi
done

# The time of pgBackRest's last "dropped WAL" warning (its log is in the server's time zone, UTC on
# LeanInfra's servers); 0 when it never dropped any, or its log was rotated away.
last_drop=0
for log in "${archive_push_logs[@]}"; do
  if [[ ! -r $log ]]; then continue; fi
  line=$(grep -a 'dropped WAL file' -- "$log" | tail -n 1 || true)
  if [[ $line =~ ^([0-9]{4}-[0-9]{2}-[0-9]{2}\ [0-9]{2}:[0-9]{2}:[0-9]{2}) ]]; then
    at=$(date -d "${BASH_REMATCH[1]}" +%s)
    if ((at > last_drop)); then last_drop=$at; fi
  fi
done

{
  metric leaninfra_wal_archive_queue_bytes 'Bytes of WAL waiting to be archived to the bucket (PostgreSQL .ready segments).' "$bytes"
  metric leaninfra_wal_archive_queue_segments 'WAL segments waiting to be archived to the bucket.' "$segments"
  metric leaninfra_wal_archive_queue_max_bytes "pgBackRest's archive-push-queue-max: beyond it the waiting WAL is dropped." "$queue_max_bytes"
  metric leaninfra_wal_archive_last_drop_timestamp_seconds 'When pgBackRest last dropped waiting WAL (Unix time, 0 = never): PITR has a gap until the next full or diff backup after it.' "$last_drop"
} | write_textfile "$metrics_file"
