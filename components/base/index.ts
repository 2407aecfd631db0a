import { MOUNT_DATA_SCRIPT } from "../host/cloud-init";
import { HostRole, RoleDirectory, systemctlHandler } from "../host/role";

export interface BaseSettings {
  /** The admin user cloud-init creates; named in the README a person sees after SSHing in. */
  adminUser: string;
}

/** The LeanInfra layout on the VM; every other role writes inside it. */
export const BASE_DIRECTORIES: readonly RoleDirectory[] = [
  { path: "/etc/leaninfra", mode: "0755" },
  { path: "/etc/leaninfra/secrets", mode: "0700" },
  { path: "/var/lib/leaninfra", mode: "0755" },
  { path: "/var/lib/leaninfra/roles", mode: "0755" },
  { path: "/var/lib/leaninfra/backups", mode: "0700" },
  { path: "/var/log/leaninfra", mode: "0750", group: "adm" },
  { path: "/srv/data", mode: "0755" },
  // Debian's node_exporter reads *.prom files here (its built-in --collector.textfile.directory).
  { path: "/var/lib/prometheus/node-exporter", mode: "0755" },
];

const NODE_EXPORTER_DEFAULTS = "/etc/default/prometheus-node-exporter";

// Only nginx listens beyond localhost; Prometheus scrapes node_exporter on loopback.
const nodeExporterDefaults = `# Managed by LeanInfra (role "base"); edit the role in the repository, not this file.
# Arguments for prometheus-node-exporter. It listens on loopback only: Prometheus on this host scrapes
# it there, and nothing outside the VM needs it. The textfile directory is Debian's default,
# /var/lib/prometheus/node-exporter, where LeanInfra's jobs (backups, restore drills) leave *.prom files.
ARGS="--web.listen-address=127.0.0.1:9100"
`;

// A restart needs systemd; the test roots run without it, and say so instead of failing.
const restartNodeExporter = systemctlHandler("restart prometheus-node-exporter");

function readme(adminUser: string): string {
  return `LeanInfra: how this server is laid out
=====================================

This VM is managed by LeanInfra (a Pulumi program). Log in as ${adminUser} and use sudo.
Files marked "Managed by LeanInfra" are rewritten on the next \`pulumi up\`: change the roles in the
repository instead of editing them here.

/etc/leaninfra/            LeanInfra's settings for this host (this README).
/etc/leaninfra/secrets/    root-only (0700); secrets land here as 0600 files, never in cloud-init.
/var/lib/leaninfra/roles/  <role>.sha256: digest of the last role version applied successfully.
/var/lib/leaninfra/backups/<role>/  root-only: the previous version of each file a role replaced.
/var/lib/leaninfra/bootstrap-done   written by cloud-init when the base OS was ready.
/var/log/leaninfra/        logs of LeanInfra's own jobs (readable by group adm).
/srv/data/                 the Hetzner data volume (LABEL=leaninfra-data, see /etc/fstab):
                           databases and backups live here, not on the root disk.
/var/lib/prometheus/node-exporter/  *.prom files read by node_exporter (e.g. last backup time).

Each role is applied by one bash script run as \`sudo bash -s\` over SSH. It changes only what
differs, prints one line per change and ends with "[<role>] no changes" or "[<role>] N change(s)".
When a role's validation fails (e.g. nginx -t), the files it changed are put back as they were.

Check the host:   sudo cloud-init status --long; systemctl --failed; findmnt /srv/data
`;
}

function layoutHealthCheck(directories: readonly RoleDirectory[]): string {
  const expected = directories
    .map((d) => `${d.path} directory ${parseInt(d.mode, 8).toString(8)} ${d.owner ?? "root"}:${d.group ?? d.owner ?? "root"}`)
    .join("\n");
  return `bad=0
while read -r path want; do
  have=$(stat -c '%F %a %U:%G' -- "$path" 2>/dev/null || echo missing)
  if [ "$have" != "$want" ]; then
    echo "$path is $have; expected $want" >&2
    bad=1
  fi
done <<'LAYOUT'
${expected}
LAYOUT
if [ ! -s /etc/leaninfra/README ]; then
  echo "/etc/leaninfra/README is missing" >&2
  bad=1
fi
if [ -d /run/systemd/system ] && ! systemctl is-active --quiet prometheus-node-exporter; then
  echo "prometheus-node-exporter is not running (systemctl status prometheus-node-exporter)" >&2
  bad=1
fi
exit "$bad"`;
}

// cloud-init writes the fstab line and mounts the volume at boot; this catches a volume that was
// attached later or failed to mount, before PostgreSQL starts writing to the root disk instead.
const mountDataVolume = `if [ -x ${MOUNT_DATA_SCRIPT} ]; then
  # Written by cloud-init: labels the volume, writes its fstab line and mounts it; prints only changes.
  ${MOUNT_DATA_SCRIPT} 60
elif [ -f /etc/fstab ] && awk '$1 !~ /^#/ && $2 == "/srv/data" { found = 1 } END { exit !found }' /etc/fstab; then
  if ! mountpoint -q /srv/data; then
    # With nofail, mount exits 0 when the device is missing: only mountpoint tells.
    if ! mount /srv/data || ! mountpoint -q /srv/data; then
      echo "/etc/fstab mounts /srv/data but 'mount /srv/data' did not mount it: is the Hetzner volume attached? (lsblk, journalctl -b)" >&2
      exit 1
    fi
    echo "mounted /srv/data (the data volume, from /etc/fstab)"
  fi
fi`;

/** The role every other role stands on: common packages, the LeanInfra layout, the data volume. */
export function baseRole(settings: BaseSettings): HostRole {
  if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(settings.adminUser)) {
    throw new Error(`baseRole: adminUser ${JSON.stringify(settings.adminUser)} is not a Linux user name ([a-z_][a-z0-9_-]*)`);
  }
  return {
    name: "base",
    description: "common packages, the LeanInfra directory layout, node_exporter on loopback, the data volume mounted",
    packages: [
      "ca-certificates",
      "curl",
      // apt in Debian 13 reads armored keys directly; gpg alone checks a repository key's fingerprint.
      "gpg",
      "jq",
      "rsync",
      // fsck.ext4 for the data volume's fstab entry (pass 2).
      "e2fsprogs",
      "unattended-upgrades",
      "prometheus-node-exporter",
    ],
    directories: [...BASE_DIRECTORIES],
    files: [
      { path: "/etc/leaninfra/README", mode: "0644", content: readme(settings.adminUser) },
      { path: NODE_EXPORTER_DEFAULTS, mode: "0644", content: nodeExporterDefaults, onChange: restartNodeExporter },
    ],
    apply: mountDataVolume,
    healthCheck: layoutHealthCheck(BASE_DIRECTORIES),
  };
}
