import * as cloudflare from "@pulumi/cloudflare";
import * as pulumi from "@pulumi/pulumi";
import { baseRole } from "../components/base";
import { renderRoleBundle } from "../components/host/bundle";
import { Host } from "../components/host";
import { ConfigError, PROJECT, StackConfig, validateConfig } from "./config";

/** Project config as Pulumi hands it to the program: keys without the `leaninfra:` prefix. */
export function projectConfig(all: Record<string, string> = pulumi.runtime.allConfig()): Record<string, string> {
  const prefix = `${PROJECT}:`;
  return Object.fromEntries(
    Object.entries(all)
      .filter(([key]) => key.startsWith(prefix))
      .map(([key, value]) => [key.slice(prefix.length), value]),
  );
}

/** Validates the stack's config; invalid config stops the program before any resource exists. */
export function loadStackConfig(): StackConfig {
  try {
    return validateConfig(pulumi.getStack(), projectConfig());
  } catch (error) {
    // RunError is shown to the user without a stack trace, and `pulumi up` exits non-zero.
    if (error instanceof ConfigError) throw new pulumi.RunError(error.message);
    throw error;
  }
}

export interface StackOutputs {
  fqdn: string;
  ipv4: pulumi.Output<string>;
  ipv6: pulumi.Output<string>;
  serverId: pulumi.Output<string>;
  sshCommand: pulumi.Output<string>;
}

export interface BuiltStack {
  outputs: StackOutputs;
  /** Every file rendered for the host, by path under out/<stack>/ (user data, role bundles). */
  rendered: Record<string, string>;
}

/** Composes the components for one stack from its validated config. */
export function buildStack(cfg: StackConfig): BuiltStack {
  const cdnRanges: pulumi.Output<{ ipv4Cidrs: string[]; ipv6Cidrs: string[] }> = cfg.cdnProxy
    ? cloudflare.getIpRangesOutput({}).apply((r) => ({ ipv4Cidrs: r.ipv4Cidrs, ipv6Cidrs: r.ipv6Cidrs }))
    : pulumi.output({ ipv4Cidrs: [], ipv6Cidrs: [] });
  const roles = [{ name: "base", bundle: renderRoleBundle(baseRole({ adminUser: cfg.adminUser })) }];

  const host = new Host("host", {
    location: cfg.location,
    serverType: cfg.serverType,
    image: cfg.image,
    hostname: cfg.hostname,
    fqdn: cfg.fqdn,
    adminUser: cfg.adminUser,
    adminSshPublicKey: cfg.adminSshPublicKey,
    sshAllowFrom: cfg.sshAllowFrom,
    cdnProxy: cfg.cdnProxy,
    cdnRanges,
    protect: cfg.deleteProtection,
    hetznerBackups: cfg.hetznerBackups,
    volumeSizeGb: cfg.volumeSizeGb,
    swapSizeMb: cfg.swapSizeMb,
    journalMaxUseMb: cfg.journalMaxUseMb,
    labels: { project: PROJECT, stack: cfg.stack, environment: cfg.environment },
    roles,
  });

  const rendered: Record<string, string> = { "cloud-init/user-data.yaml": host.userData };
  for (const role of roles) rendered[`bundles/${role.name}.sh`] = role.bundle;

  return {
    outputs: {
      fqdn: cfg.fqdn,
      ipv4: host.ipv4,
      ipv6: host.ipv6,
      serverId: host.serverId,
      sshCommand: pulumi.interpolate`ssh ${cfg.adminUser}@${host.ipv4}`,
    },
    rendered,
  };
}
