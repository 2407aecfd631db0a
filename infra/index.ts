// The Pulumi program: `pulumi preview` / `pulumi up` run this file.
import { buildStack, loadStackConfig } from "./stack";

const { outputs } = buildStack(loadStackConfig());

export const fqdn = outputs.fqdn;
export const ipv4 = outputs.ipv4;
export const ipv6 = outputs.ipv6;
export const serverId = outputs.serverId;
export const sshCommand = outputs.sshCommand;
export const url = outputs.url;
export const hostnames = outputs.hostnames;
export const backupBucket = outputs.backupBucket;
export const backupEndpoint = outputs.backupEndpoint;
export const backupPassphrase = outputs.backupPassphrase;
