// Answers to the provider look-ups that do not depend on the account, from dated snapshots kept in
// the repository: the offline plan's mocks and the engine tests' stand-in providers both use them.
import cloudflareIps from "./data/cloudflare-ips.json";
import permissionGroups from "./data/cloudflare-permission-groups.json";

export const SNAPSHOT_CALLS: Record<string, (args: Record<string, unknown>) => Record<string, unknown>> = {
  "cloudflare:index/getIpRanges:getIpRanges": () => ({
    ipv4Cidrs: cloudflareIps.ipv4Cidrs,
    ipv6Cidrs: cloudflareIps.ipv6Cidrs,
    jdcloudCidrs: [],
    etag: `snapshot-${cloudflareIps.recordedOn}`,
  }),
  "cloudflare:index/getAccountApiTokenPermissionGroupsList:getAccountApiTokenPermissionGroupsList": (args) => ({
    accountId: args.accountId,
    name: args.name,
    results: permissionGroups.results.filter((group) => args.name === undefined || group.name === args.name),
  }),
};
