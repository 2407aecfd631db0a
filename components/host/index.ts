import * as command from "@pulumi/command";
import * as hcloud from "@pulumi/hcloud";
import * as pulumi from "@pulumi/pulumi";
import ipaddr from "ipaddr.js";
import { bundleDigest } from "./bundle";
import { BOOTSTRAP_MARKER, CloudInitSettings, renderCloudInit } from "./cloud-init";
import { firewallRules } from "./firewall";

/** A rendered host role: the bundle is a secret output when any of its inputs is secret. */
export interface RoleBundle {
  name: string;
  bundle: pulumi.Input<string>;
  /** Resources that must exist before the role runs (e.g. DNS records before certbot). */
  dependsOn?: pulumi.Resource[];
}

export interface HostArgs {
  /** Hetzner location, e.g. fsn1. */
  location: string;
  serverType: string;
  image: string;
  hostname: string;
  fqdn: string;
  adminUser: string;
  adminSshPublicKey: string;
  sshAllowFrom: readonly string[];
  cdnProxy: boolean;
  /** Cloudflare's published ranges: a dated snapshot offline, the live list on `pulumi up`. */
  cdnRanges: pulumi.Input<{ ipv4Cidrs: string[]; ipv6Cidrs: string[] }>;
  /** Hetzner delete and rebuild protection on the server, IPs and volume. */
  deleteProtection: boolean;
  hetznerBackups: boolean;
  volumeSizeGb: number;
  swapSizeMb: number;
  journalMaxUseMb: number;
  labels: Record<string, string>;
}

/**
 * The server's IPv6 address in its Primary IP's /64: Hetzner configures `<prefix>::1`. Derived from
 * the Primary IP, it stays the same when the server is replaced, so DNS and rDNS never churn.
 */
export function serverIpv6(prefixAddress: string): string {
  const bytes = ipaddr.IPv6.parse(prefixAddress.split("/")[0]).toByteArray();
  bytes[15] = 1;
  return ipaddr.fromByteArray(bytes).toString();
}

/**
 * The shell command each role runs over SSH: wait for cloud-init, refuse to go on without the
 * bootstrap marker, then run the bundle from stdin as root.
 */
export function roleRunCommand(roleName: string): string {
  return [
    "set -eu",
    "if command -v cloud-init >/dev/null; then sudo cloud-init status --wait >/dev/null 2>&1 || true; fi",
    `if ! test -f ${BOOTSTRAP_MARKER}; then echo "[${roleName}] the LeanInfra bootstrap has not finished: see /var/log/cloud-init-output.log on the server" >&2; exit 1; fi`,
    "sudo bash -s",
  ].join("\n");
}

/**
 * The one VM and everything around it: SSH key, stable IPv4/IPv6 addresses, firewall, server,
 * data volume, reverse DNS, and the host roles applied over SSH.
 */
export class Host extends pulumi.ComponentResource {
  public readonly ipv4: pulumi.Output<string>;
  public readonly ipv6: pulumi.Output<string>;
  public readonly serverId: pulumi.Output<string>;
  public readonly volumeId: pulumi.Output<string>;
  public readonly userData: string;
  public readonly roleCommands: command.remote.Command[] = [];
  private readonly hostName: string;
  private readonly connection: command.types.input.remote.ConnectionArgs;
  private readonly attachment: hcloud.VolumeAttachment;

  constructor(name: string, args: HostArgs, opts?: pulumi.ComponentResourceOptions) {
    super("leaninfra:host:Host", name, {}, opts);
    this.hostName = name;
    const child = { parent: this };
    // What holds the data and the addresses is protected twice on production: by Hetzner, and by
    // Pulumi, so `pulumi destroy` or a replacing change stops before anything is deleted.
    const kept = { parent: this, protect: args.deleteProtection };
    const labels = { ...args.labels, "leaninfra-host": name };

    const sshKey = new hcloud.SshKey(`${name}-admin-key`, { publicKey: args.adminSshPublicKey, labels }, child);

    // Primary IPs outlive the server, so a rebuilt or replaced server keeps its addresses and DNS.
    const primaryIp = (family: "ipv4" | "ipv6") =>
      new hcloud.PrimaryIp(
        `${name}-${family}`,
        {
          type: family,
          location: args.location,
          assigneeType: "server",
          autoDelete: false,
          deleteProtection: args.deleteProtection,
          labels,
        },
        kept,
      );
    const ipv4 = primaryIp("ipv4");
    const ipv6 = primaryIp("ipv6");

    const firewall = new hcloud.Firewall(
      `${name}-firewall`,
      {
        labels,
        rules: pulumi.output(args.cdnRanges).apply((ranges) =>
          firewallRules({ sshAllowFrom: args.sshAllowFrom, cdnProxy: args.cdnProxy, cdnRanges: ranges }),
        ),
      },
      child,
    );

    const volume = new hcloud.Volume(
      `${name}-data`,
      {
        location: args.location,
        size: args.volumeSizeGb,
        format: "ext4",
        deleteProtection: args.deleteProtection,
        labels,
      },
      kept,
    );

    const cloudInit: CloudInitSettings = {
      hostname: args.hostname,
      fqdn: args.fqdn,
      adminUser: args.adminUser,
      adminSshPublicKey: args.adminSshPublicKey,
      swapSizeMb: args.swapSizeMb,
      journalMaxUseMb: args.journalMaxUseMb,
    };
    this.userData = renderCloudInit(cloudInit);

    // hcloud ids are strings in Pulumi and numbers in hcloud inputs: converted here, once.
    const toNumber = (id: pulumi.Output<string>) => id.apply((value) => Number(value));

    const server = new hcloud.Server(
      `${name}-server`,
      {
        name: args.hostname,
        serverType: args.serverType,
        image: args.image,
        location: args.location,
        sshKeys: [sshKey.id],
        publicNets: [{ ipv4Enabled: true, ipv4: toNumber(ipv4.id), ipv6Enabled: true, ipv6: toNumber(ipv6.id) }],
        firewallIds: [toNumber(firewall.id)],
        userData: this.userData,
        backups: args.hetznerBackups,
        deleteProtection: args.deleteProtection,
        rebuildProtection: args.deleteProtection,
        shutdownBeforeDeletion: true,
        labels,
      },
      // cloud-init and Hetzner's SSH keys act once, at creation; changing them later must not replace
      // the server (README: "Rebuilding the server"). A replacement must free the Primary IPs and the
      // volume before the new server can take them.
      { ...kept, ignoreChanges: ["userData", "sshKeys"], deleteBeforeReplace: true },
    );

    const attachment = new hcloud.VolumeAttachment(
      `${name}-data-attachment`,
      { serverId: toNumber(server.id), volumeId: toNumber(volume.id), automount: false },
      child,
    );

    const serverIpv6Address = ipv6.ipAddress.apply(serverIpv6);
    new hcloud.Rdns(`${name}-rdns-ipv4`, { primaryIpId: toNumber(ipv4.id), ipAddress: ipv4.ipAddress, dnsPtr: args.fqdn }, child);
    new hcloud.Rdns(`${name}-rdns-ipv6`, { primaryIpId: toNumber(ipv6.id), ipAddress: serverIpv6Address, dnsPtr: args.fqdn }, child);

    this.connection = {
      host: ipv4.ipAddress,
      user: args.adminUser,
      // The owner's key comes from ssh-agent (SSH_AUTH_SOCK); a fresh server takes a while to accept SSH.
      dialErrorLimit: 60,
      perDialTimeout: 10,
    };
    this.attachment = attachment;

    this.ipv4 = ipv4.ipAddress;
    this.ipv6 = serverIpv6Address;
    this.serverId = server.id;
    this.volumeId = volume.id;
    this.registerOutputs({ ipv4: this.ipv4, ipv6: this.ipv6, serverId: this.serverId, volumeId: this.volumeId });
  }

  /**
   * Applies host roles in order over SSH once cloud-init has finished and the volume is attached;
   * base first. Called after the components whose outputs the roles carry (certificates, DNS).
   */
  applyRoles(roles: RoleBundle[]): command.remote.Command[] {
    const name = this.hostName;
    for (const role of roles) {
      const previous = this.roleCommands[this.roleCommands.length - 1];
      this.roleCommands.push(
        new command.remote.Command(
          `${name}-role-${role.name}`,
          {
            connection: this.connection,
            create: roleRunCommand(role.name),
            stdin: role.bundle,
            // An unchanged bundle on the same server costs nothing on `pulumi up`; a changed bundle, or
            // a new server (rebuild), runs the role again. The digest is shown in previews: every secret
            // bundle holds a generated secret, so it reveals nothing.
            triggers: [pulumi.unsecret(pulumi.output(role.bundle).apply(bundleDigest)), this.serverId],
            logging: "stdoutAndStderr",
          },
          {
            parent: this,
            dependsOn: [this.attachment, ...(previous ? [previous] : []), ...(role.dependsOn ?? [])],
            customTimeouts: { create: "30m", update: "30m" },
            // What a role printed (paths, a deploy's steps) is kept encrypted in the state, like its bundle.
            additionalSecretOutputs: ["stdout", "stderr"],
          },
        ),
      );
    }
    return this.roleCommands;
  }
}
