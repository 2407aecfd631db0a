import * as fs from "node:fs";
import * as path from "node:path";
import { z } from "zod";
import { MOUNT_DATA_SCRIPT } from "../host/cloud-init";
import { defineRole, refuseProblems } from "../host/define";
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
  { path: "/etc/systemd/system/prometheus-node-exporter.service.d", mode: "0755" },
];

const NODE_EXPORTER_DEFAULTS = "/etc/default/prometheus-node-exporter";
const FILES_DIR = path.join(__dirname, "files");

/** The files of the base role beyond the layout: where they land on the host. */
export const BASE_FILES = Object.freeze({
  /** sshd's algorithms, host key and limits (files/sshd-hardening.conf); sorts before cloud-init's 10-leaninfra.conf. */
  sshdDropIn: "/etc/ssh/sshd_config.d/05-leaninfra-hardening.conf",
  /** The sandbox of Debian's prometheus-node-exporter.service. */
  nodeExporterDropIn: "/etc/systemd/system/prometheus-node-exporter.service.d/leaninfra-hardening.conf",
  /** needrestart's unattended policy. */
  needrestartConf: "/etc/needrestart/conf.d/leaninfra.conf",
});

// A restart needs systemd; the test roots run without it, and say so instead of failing. The unit's
// drop-in may have changed with the defaults: systemd reads it again first.
const restartNodeExporter = `if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl restart prometheus-node-exporter
else
  echo "systemd is not running here: skipped systemctl restart prometheus-node-exporter"
fi`;

// A reload keeps every open session (this bundle's own included); sshd re-reads its config. With
// socket activation there is no running ssh.service, and each connection reads the new file anyway.
const reloadSsh = systemctlHandler("try-reload-or-restart ssh");

/**
 * The new files as their programs read them: sshd -t loads the whole sshd config, host key included;
 * perl parses needrestart's file. A failure puts the previous files back.
 */
const validate = `# sshd -t wants its privilege separation directory, which ssh.service creates when it starts.
mkdir -p /run/sshd
sshd -t
perl -c ${BASE_FILES.needrestartConf}`;

function file(name: string): string {
  return fs.readFileSync(path.join(FILES_DIR, name), "utf8");
}

/** The host's README (files/README.txt): its one marker, {{adminUser}}, becomes the admin user. */
function readme(adminUser: string): string {
  return fs.readFileSync(path.join(FILES_DIR, "README.txt"), "utf8").replaceAll("{{adminUser}}", adminUser);
}

/** Problems with the base role's settings, each starting with the config key; empty when it can be rendered. */
export function baseSettingsProblems(settings: BaseSettings): string[] {
  if (/^[a-z_][a-z0-9_-]{0,31}$/.test(settings.adminUser)) return [];
  return [`adminUser ${JSON.stringify(settings.adminUser)} is not a Linux user name (accepted: a-z, 0-9, '_' and '-', starting with a letter or '_')`];
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

/**
 * The role every other role stands on: common packages, the LeanInfra layout, the data volume.
 * Throws SettingsError when adminUser is not a Linux user name.
 */
export function baseRole(settings: BaseSettings): HostRole {
  refuseProblems("base", baseSettingsProblems(settings));
  return {
    name: "base",
    description: "common packages, the LeanInfra directory layout, sshd hardened, node_exporter on loopback and sandboxed, needrestart, the data volume mounted",
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
      // Restarts what still runs an upgraded library after unattended-upgrades (files/needrestart.conf).
      "needrestart",
      // On Debian's image already; listed so sshd -t is there to check the drop-in.
      "openssh-server",
      "prometheus-node-exporter",
      // node_exporter's systemd collector asks systemd over the system bus.
      "dbus",
    ],
    directories: [...BASE_DIRECTORIES],
    files: [
      { path: "/etc/leaninfra/README", mode: "0644", content: readme(settings.adminUser) },
      // Only nginx listens beyond localhost; Prometheus scrapes node_exporter on loopback.
      { path: NODE_EXPORTER_DEFAULTS, mode: "0644", content: file("prometheus-node-exporter"), onChange: restartNodeExporter },
      { path: BASE_FILES.nodeExporterDropIn, mode: "0644", content: file("prometheus-node-exporter.service.conf"), onChange: restartNodeExporter },
      { path: BASE_FILES.sshdDropIn, mode: "0644", content: file("sshd-hardening.conf"), onChange: reloadSsh },
      { path: BASE_FILES.needrestartConf, mode: "0644", content: file("needrestart.conf") },
    ],
    validate,
    apply: mountDataVolume,
    healthCheck: layoutHealthCheck(BASE_DIRECTORIES),
  };
}

export const role = defineRole({
  name: "base",
  after: [],
  budget: {
    monthlyCost: { amount: 0, currency: "EUR", what: "Runs on the server: sshd, unattended upgrades with needrestart, journald, swap and node_exporter (about 20 MiB RAM); the Hetzner firewall in front is free." },
    secrets: [],
    alerts: ["DiskFullIn24h", "MemoryPressure", "OomKill", "SystemdUnitFailed", "TargetDown"],
    failurePoints: [
      "A full disk or data volume stops PostgreSQL's writes and the journal: DiskFullIn24h pages a day ahead.",
      "Memory exhausted: the kernel kills a process (OomKill), usually the app or PostgreSQL.",
      "A wrong sshd setting would lock the admin out: sshd -t checks it before the reload, and a refused one is put back.",
    ],
  },
  settings: z.object({}),
  render: (s) => baseRole({ adminUser: s.adminUser }),
});
