import * as command from "@pulumi/command";
import * as hcloud from "@pulumi/hcloud";
import * as pulumi from "@pulumi/pulumi";
import * as tls from "@pulumi/tls";
import ipaddr from "ipaddr.js";
import { bundleDigest } from "./bundle";
import { BOOTSTRAP_MARKER, CloudInitSettings, renderCloudInit } from "./cloud-init";
import { firewallRules } from "./firewall";
import { PLACEHOLDER_HOST_KEY, hostKeyLine, renderHostKeyCheck } from "./host-key";

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
  /**
   * The public host key of a server created before LeanInfra pinned host keys, learnt once and
   * checked out of band; "" pins the key generated for the server (README: "SSH host key").
   */
  sshHostKey: string;
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

/** SSH port of the server, as the firewall opens it and the roles connect. */
const SSH_PORT = 22;
/** How long a new server may take to boot and answer SSH: the roles' connection retries as long (60 x 10 s). */
const SSH_WAIT_SECONDS = 600;

/**
 * The one VM and everything around it: SSH key, stable IPv4/IPv6 addresses, firewall, server,
 * data volume, reverse DNS, the server's SSH host key, and the host roles applied over SSH.
 */
export class Host extends pulumi.ComponentResource {
  public readonly ipv4: pulumi.Output<string>;
  public readonly ipv6: pulumi.Output<string>;
  public readonly serverId: pulumi.Output<string>;
  public readonly volumeId: pulumi.Output<string>;
  /** The user data given to Hetzner: secret, since it holds the server's private host key. */
  public readonly userData: pulumi.Output<string>;
  /** The same user data with a placeholder for the host key, for `npm run plan`'s out/ directory. */
  public readonly userDataPreview: string;
  /** The host key the roles' connection pins, as "ssh-ed25519 AAAA...". */
  public readonly sshHostKey: pulumi.Output<string>;
  public readonly roleCommands: command.remote.Command[] = [];
  /** Runs before any role command: a changed host key stops `pulumi up` with what to do. */
  public hostKeyCheck?: command.local.Command;
  private readonly hostName: string;
  private readonly fqdn: string;
  private readonly connection: command.types.input.remote.ConnectionArgs;
  private readonly generatedHostKey: pulumi.Output<string>;
  private readonly pinnedInConfig: boolean;
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

    // The server's SSH host key, made here and installed by cloud-init, so the roles' connection can
    // pin it from the first connection on. The private half lives in Pulumi's state (encrypted) and in
    // the server's user data, which is therefore secret (README: "SSH host key").
    const hostKey = new tls.PrivateKey(`${name}-ssh-host-key`, { algorithm: "ED25519" }, child);
    const cloudInit: Omit<CloudInitSettings, "hostKey"> = {
      hostname: args.hostname,
      fqdn: args.fqdn,
      adminUser: args.adminUser,
      adminSshPublicKey: args.adminSshPublicKey,
      swapSizeMb: args.swapSizeMb,
      journalMaxUseMb: args.journalMaxUseMb,
    };
    this.userData = pulumi.secret(
      pulumi
        .all([hostKey.privateKeyOpenssh, hostKey.publicKeyOpenssh])
        .apply(([privateKeyOpenssh, publicKeyOpenssh]) => renderCloudInit({ ...cloudInit, hostKey: { privateKeyOpenssh, publicKeyOpenssh } })),
    );
    this.userDataPreview = renderCloudInit({ ...cloudInit, hostKey: PLACEHOLDER_HOST_KEY });
    this.generatedHostKey = hostKey.publicKeyOpenssh.apply(hostKeyLine);
    // A server created before host keys were pinned keeps its own key: the owner's pin wins.
    this.pinnedInConfig = args.sshHostKey !== "";
    this.sshHostKey = this.pinnedInConfig ? pulumi.output(hostKeyLine(args.sshHostKey)) : this.generatedHostKey;

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
      port: SSH_PORT,
      user: args.adminUser,
      // Any other key is refused (@pulumi/command: x/crypto's FixedHostKey, offering only this key's type).
      hostKey: this.sshHostKey,
      // The owner's key comes from ssh-agent (SSH_AUTH_SOCK); a fresh server takes a while to accept SSH.
      dialErrorLimit: SSH_WAIT_SECONDS / 10,
      perDialTimeout: 10,
    };
    this.attachment = attachment;
    this.fqdn = args.fqdn;

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
    const digests = roles.map((role) => pulumi.unsecret(pulumi.output(role.bundle).apply(bundleDigest)));
    // Runs whenever a role would (a changed bundle, a new server) and before it: @pulumi/command's
    // own refusal of another key only says "ssh: host key mismatch", after every dial attempt.
    this.hostKeyCheck = new command.local.Command(
      `${name}-host-key-check`,
      {
        create: "bash -s",
        stdin: pulumi
          .all([this.connection.host, this.sshHostKey, this.generatedHostKey])
          .apply(([address, expectedKey, generatedKey]) =>
            renderHostKeyCheck({
              fqdn: this.fqdn,
              address,
              port: SSH_PORT,
              expectedKey,
              expectedFrom: this.pinnedInConfig ? "config" : "generated",
              generatedKey,
              waitSeconds: SSH_WAIT_SECONDS,
            }),
          ),
        triggers: [this.serverId, this.sshHostKey, ...digests],
        logging: "stdoutAndStderr",
      },
      { parent: this, dependsOn: [this.attachment], customTimeouts: { create: "15m", update: "15m" } },
    );
    for (const [index, role] of roles.entries()) {
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
            triggers: [digests[index], this.serverId],
            logging: "stdoutAndStderr",
          },
          {
            parent: this,
            dependsOn: [this.attachment, this.hostKeyCheck, ...(previous ? [previous] : []), ...(role.dependsOn ?? [])],
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
