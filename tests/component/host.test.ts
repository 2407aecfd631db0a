import assert from "node:assert/strict";
import test from "node:test";
import * as pulumi from "@pulumi/pulumi";
import { bundleDigest } from "../../components/host/bundle";
import { parse } from "yaml";
import { BOOTSTRAP_MARKER } from "../../components/host/cloud-init";
import { PLACEHOLDER_HOST_KEY, hostKeyLine } from "../../components/host/host-key";
import { validateConfig } from "../../infra/config";
import cloudflareIps from "../../infra/data/cloudflare-ips.json";
import { runWithMocks } from "../../infra/mock-run";
import { ROLES } from "../../infra/roles";
import { buildStack, loadStackConfig } from "../../infra/stack";
import { ed25519Key } from "../lib/ed25519-key";
import { MINIMAL_CONFIG, SSH_KEY, mockCloudOutputs } from "../lib/mock-cloud";

const base = MINIMAL_CONFIG;
const KEY = SSH_KEY;


async function plan(stack: string, raw: Record<string, unknown>) {
  const cfg = validateConfig(stack, raw);
  const run = await runWithMocks({ project: "leaninfra", stack, preview: false, config: {}, computed: mockCloudOutputs, revealSecrets: true }, () => buildStack(cfg, { offline: true }));
  const byType = (type: string) => run.resources.filter((r) => r.type === type);
  const one = (type: string) => {
    const found = byType(type);
    assert.equal(found.length, 1, `expected one ${type}, found ${found.length}`);
    return found[0];
  };
  return { ...run, byType, one, cfg };
}

type Rule = { direction: string; protocol: string; port?: string; sourceIps: string[] };

test("the Host registers the server, its IPs, firewall, volume, rDNS and its role commands", async () => {
  const { resources, byType, cfg } = await plan("prod", base);
  const count = (type: string) => byType(type).length;
  assert.equal(count("leaninfra:host:Host"), 1);
  assert.equal(count("hcloud:index/server:Server"), 1);
  assert.equal(count("hcloud:index/firewall:Firewall"), 1);
  assert.equal(count("hcloud:index/primaryIp:PrimaryIp"), 2);
  assert.equal(count("hcloud:index/volume:Volume"), 1);
  assert.equal(count("hcloud:index/volumeAttachment:VolumeAttachment"), 1);
  assert.equal(count("hcloud:index/sshKey:SshKey"), 1);
  assert.equal(count("hcloud:index/rdns:Rdns"), 2);
  const enabled = ROLES.filter((role) => !role.enabled || role.enabled(cfg as never)).map((role) => `host-role-${role.name}`);
  assert.deepEqual(
    enabled,
    ["host-role-base", "host-role-docker", "host-role-postgres", "host-role-proxy", "host-role-backups", "host-role-logs", "host-role-monitoring", "host-role-grafana"],
    "no Redis and no app by default",
  );
  assert.deepEqual(byType("command:remote:Command").map((r) => r.name), enabled, "in the order of infra/roles.ts");
  for (const r of resources.filter((r) => r.type.startsWith("hcloud:") || r.type.startsWith("command:"))) {
    assert.equal(r.parent, "leaninfra:host:Host::host", `${r.type} ${r.name} is a child of the Host`);
  }
});

test("the firewall opens only 22, 80, 443 and ICMP; SSH only from sshAllowFrom; web only from Cloudflare", async () => {
  const { one } = await plan("prod", base);
  const rules = one("hcloud:index/firewall:Firewall").inputs.rules as Rule[];
  assert.ok(rules.every((r) => r.direction === "in"));
  const opened = rules.map((r) => `${r.protocol}/${r.port ?? "-"}`).sort();
  assert.deepEqual(opened, ["icmp/-", "tcp/22", "tcp/443", "tcp/80"]);
  const ssh = rules.find((r) => r.port === "22")!;
  assert.deepEqual(ssh.sourceIps, base.sshAllowFrom);
  assert.ok(!ssh.sourceIps.includes("0.0.0.0/0") && !ssh.sourceIps.includes("::/0"));
  for (const port of ["80", "443"]) {
    const web = rules.find((r) => r.port === port)!;
    assert.deepEqual(web.sourceIps, [...cloudflareIps.ipv4Cidrs, ...cloudflareIps.ipv6Cidrs]);
  }
});

test("with the CDN proxy off, 80/443 are open to everyone and SSH still is not", async () => {
  const { one } = await plan("prod", { ...base, cdnProxy: false, acmeEmail: "owner@example.com" });
  const rules = one("hcloud:index/firewall:Firewall").inputs.rules as Rule[];
  assert.deepEqual(rules.find((r) => r.port === "443")!.sourceIps, ["0.0.0.0/0", "::/0"]);
  assert.deepEqual(rules.find((r) => r.port === "22")!.sourceIps, base.sshAllowFrom);
});

test("SSH from anywhere appears only when configured", async () => {
  const { one } = await plan("prod", { ...base, sshAllowFrom: ["0.0.0.0/0"], sshAllowAnywhere: true });
  const rules = one("hcloud:index/firewall:Firewall").inputs.rules as Rule[];
  assert.deepEqual(rules.find((r) => r.port === "22")!.sourceIps, ["0.0.0.0/0"]);
});

test("production is protected by Hetzner and by Pulumi: server, IPs and volume", async () => {
  const { one, byType } = await plan("prod", base);
  const server = one("hcloud:index/server:Server");
  assert.equal(server.inputs.deleteProtection, true);
  assert.equal(server.inputs.rebuildProtection, true);
  assert.equal(server.options.protect, true);
  const volume = one("hcloud:index/volume:Volume");
  assert.equal(volume.inputs.deleteProtection, true);
  assert.equal(volume.options.protect, true);
  for (const ip of byType("hcloud:index/primaryIp:PrimaryIp")) {
    assert.equal(ip.inputs.deleteProtection, true);
    assert.equal(ip.options.protect, true);
    assert.equal(ip.inputs.autoDelete, false, "the address survives the server");
  }
  assert.equal(one("hcloud:index/firewall:Firewall").options.protect, false, "what is rebuilt in seconds stays unprotected");
});

test("a development stack without protection is unprotected, as configured", async () => {
  const { one } = await plan("dev", { ...base, environment: "development", deleteProtection: false });
  for (const type of ["hcloud:index/server:Server", "hcloud:index/volume:Volume"]) {
    assert.equal(one(type).inputs.deleteProtection, false);
    assert.equal(one(type).options.protect, false);
  }
});

test("server wiring: its IPs, firewall, key, image, type, location and labels", async () => {
  const { one, byType } = await plan("prod", { ...base, serverType: "cpx31", location: "hel1", hetznerBackups: true });
  const server = one("hcloud:index/server:Server");
  const ips = byType("hcloud:index/primaryIp:PrimaryIp");
  const v4 = ips.find((r) => r.inputs.type === "ipv4")!;
  const v6 = ips.find((r) => r.inputs.type === "ipv6")!;
  assert.deepEqual(server.inputs.publicNets, [{ ipv4Enabled: true, ipv4: Number(v4.id), ipv6Enabled: true, ipv6: Number(v6.id) }]);
  assert.deepEqual(server.inputs.firewallIds, [Number(one("hcloud:index/firewall:Firewall").id)]);
  assert.deepEqual(server.inputs.sshKeys, [one("hcloud:index/sshKey:SshKey").id]);
  assert.equal(server.inputs.image, "debian-13");
  assert.equal(server.inputs.serverType, "cpx31");
  assert.equal(server.inputs.location, "hel1");
  assert.equal(server.inputs.backups, true);
  assert.equal(v4.inputs.location, "hel1");
  assert.deepEqual(server.inputs.labels, { project: "leaninfra", stack: "prod", environment: "production", "leaninfra-host": "host" });
  assert.match(String(server.inputs.userData), /^#cloud-config\n/);
  // cloud-init and Hetzner's keys act once: later edits must not replace the server; a replacement frees IPs and volume first.
  assert.deepEqual(server.options.ignoreChanges, ["userData", "sshKeys"]);
  assert.equal(server.options.deleteBeforeReplace, true);
  assert.ok(server.secretInputs.includes("userData"), "the user data holds the server's private host key: secret");
});

const GENERATED = ed25519Key("host-ssh-host-key");

test("the server's SSH host key is generated (ED25519) and reaches the server only through its secret user data; the plan's copy has a placeholder", async () => {
  const { one, byType, result } = await plan("prod", base);
  const key = byType("tls:index/privateKey:PrivateKey").find((r) => r.name === "host-ssh-host-key")!;
  assert.deepEqual(key.inputs, { algorithm: "ED25519" });
  assert.equal(key.parent, "leaninfra:host:Host::host");
  const server = one("hcloud:index/server:Server");
  assert.ok(server.secretInputs.includes("userData"));
  assert.deepEqual(parse(String(server.inputs.userData)).ssh_keys, { ed25519_private: GENERATED.privateKeyOpenssh, ed25519_public: GENERATED.publicKeyOpenssh.trim() });
  assert.equal(await pulumi.isSecret(result.host.userData), true, "the Host's userData output is secret");
  const preview = result.rendered["cloud-init/user-data.yaml"];
  assert.equal(preview, result.host.userDataPreview);
  assert.equal(parse(preview).ssh_keys.ed25519_private, PLACEHOLDER_HOST_KEY.privateKeyOpenssh);
  assert.ok(!preview.includes(GENERATED.privateKeyOpenssh.split("\n")[2]), "no line of the private key in the plan's files");
  // Everything else in the user data is what the plan shows.
  const withoutKeys = (text: string) => ({ ...parse(text), ssh_keys: undefined });
  assert.deepEqual(withoutKeys(String(server.inputs.userData)), withoutKeys(preview));
});

test("the roles' connection pins the generated host key; a check on this machine runs before every role whenever any role would run", async () => {
  const { byType, one } = await plan("prod", base);
  const commands = byType("command:remote:Command");
  const check = one("command:local:Command");
  assert.equal(check.name, "host-host-key-check");
  assert.equal(check.parent, "leaninfra:host:Host::host");
  assert.equal(check.inputs.create, "bash -s");
  const script = String(check.inputs.stdin);
  assert.match(script, new RegExp(`^readonly expected_key='${hostKeyLine(GENERATED.publicKeyOpenssh).replace(/[+/]/g, "\\$&")}'$`, "m"));
  assert.ok(script.includes(`readonly expected_fingerprint='${GENERATED.publicKeyFingerprintSha256}'`));
  assert.ok(script.includes("readonly expected_from='generated'"));
  assert.ok(script.includes("readonly address='198.51.100.10'"));
  assert.deepEqual(check.inputs.triggers, [one("hcloud:index/server:Server").id, hostKeyLine(GENERATED.publicKeyOpenssh), ...commands.map((c) => (c.inputs.triggers as string[])[0])]);
  assert.ok(check.options.dependsOn.includes("hcloud:index/volumeAttachment:VolumeAttachment::host-data-attachment"));
  for (const command of commands) {
    const connection = command.inputs.connection as Record<string, unknown>;
    assert.equal(connection.hostKey, hostKeyLine(GENERATED.publicKeyOpenssh), `${command.name} pins the host key`);
    assert.equal(connection.port, 22);
    assert.ok(command.options.dependsOn.includes("command:local:Command::host-host-key-check"), `${command.name} runs after the host key check`);
  }
});

test("leaninfra:sshHostKey pins an existing server's own key instead; its user data still carries the generated one for a rebuild", async () => {
  const own = ed25519Key("a server created before pinning");
  const { byType, one } = await plan("prod", { ...base, sshHostKey: `${own.publicKeyOpenssh.trim()} root@app` });
  for (const command of byType("command:remote:Command")) {
    assert.equal((command.inputs.connection as Record<string, unknown>).hostKey, hostKeyLine(own.publicKeyOpenssh));
  }
  const script = String(one("command:local:Command").inputs.stdin);
  assert.ok(script.includes(`readonly expected_fingerprint='${own.publicKeyFingerprintSha256}'`));
  assert.ok(script.includes("readonly expected_from='config'"));
  assert.ok(script.includes(`readonly generated_key='${hostKeyLine(GENERATED.publicKeyOpenssh)}'`));
  assert.equal(parse(String(one("hcloud:index/server:Server").inputs.userData)).ssh_keys.ed25519_public, GENERATED.publicKeyOpenssh.trim());
});

test("the data volume is attached to the server, formatted ext4, sized from config", async () => {
  const { one } = await plan("prod", { ...base, volumeSizeGb: 50 });
  const volume = one("hcloud:index/volume:Volume");
  const attachment = one("hcloud:index/volumeAttachment:VolumeAttachment");
  assert.equal(volume.inputs.size, 50);
  assert.equal(volume.inputs.format, "ext4");
  assert.equal(attachment.inputs.serverId, Number(one("hcloud:index/server:Server").id));
  assert.equal(attachment.inputs.volumeId, Number(volume.id));
});

test("reverse DNS names both addresses after the server", async () => {
  const { byType } = await plan("prod", base);
  const rdns = byType("hcloud:index/rdns:Rdns").map((r) => [r.inputs.ipAddress, r.inputs.dnsPtr]).sort();
  assert.deepEqual(rdns, [
    ["198.51.100.10", "app.example.com"],
    ["2001:db8:42::1", "app.example.com"],
  ]);
});

test("the base role runs over SSH after cloud-init, triggered by its bundle's SHA-256 and the server it runs on", async () => {
  const { byType, result, one } = await plan("prod", base);
  const cmd = byType("command:remote:Command").find((r) => r.name === "host-role-base")!;
  const bundle = result.rendered["bundles/base.sh"];
  assert.equal(cmd.inputs.stdin, bundle);
  assert.deepEqual(cmd.inputs.triggers, [bundleDigest(bundle), one("hcloud:index/server:Server").id]);
  assert.match(bundleDigest(bundle), /^[0-9a-f]{64}$/);
  const connection = cmd.inputs.connection as Record<string, unknown>;
  assert.equal(connection.host, "198.51.100.10");
  assert.equal(connection.user, "ops");
  assert.ok(!("privateKey" in connection), "the key comes from ssh-agent, never from state");
  assert.equal(connection.hostKey, hostKeyLine(GENERATED.publicKeyOpenssh), "the server's identity is pinned");
  assert.ok(cmd.secretInputs.includes("connection"));
  assert.ok(cmd.options.dependsOn.includes("hcloud:index/volumeAttachment:VolumeAttachment::host-data-attachment"), "roles run once the volume is attached");
  const create = String(cmd.inputs.create);
  assert.ok(create.indexOf("cloud-init status --wait") < create.indexOf("sudo bash -s"));
  assert.ok(create.includes(BOOTSTRAP_MARKER));
});

test("invalid config registers nothing and fails with a RunError listing every bad key", async () => {
  const config = {
    "leaninfra:domain": "not a domain",
    "leaninfra:adminSshPublicKey": KEY,
    "leaninfra:sshAllowFrom": '["10.0.0.0/33"]',
    "leaninfra:volumeSizeGb": "2",
  };
  let thrown: unknown;
  const { resources } = await runWithMocks({ project: "leaninfra", stack: "prod", preview: true, config }, () => {
    try {
      return buildStack(loadStackConfig());
    } catch (error) {
      thrown = error;
      return undefined;
    }
  });
  assert.ok(thrown instanceof pulumi.RunError, `expected RunError, got ${String(thrown)}`);
  const message = (thrown as Error).message;
  for (const key of ["leaninfra:domain", "leaninfra:sshAllowFrom[0]", "leaninfra:volumeSizeGb"]) assert.ok(message.includes(key), key);
  assert.equal(resources.length, 0);
});

test("roles run one after another; the proxy bundle carries the origin key and is secret", async () => {
  const { byType } = await plan("prod", base);
  const proxy = byType("command:remote:Command").find((r) => r.name === "host-role-proxy")!;
  assert.ok(proxy.options.dependsOn.includes("command:remote:Command::host-role-postgres"));
  for (const command of byType("command:remote:Command")) {
    for (const output of ["stdout", "stderr"]) assert.ok(command.options.additionalSecretOutputs.includes(output), `${command.name}'s ${output} is secret in the state`);
  }
  assert.ok(proxy.secretInputs.includes("stdin"), "the proxy bundle holds the origin private key: secret");
  assert.match(String(proxy.inputs.stdin), /-----BEGIN PRIVATE KEY----- edge-origin-key/);
});

test("without the CDN proxy, the proxy role waits for the DNS records (Let's Encrypt must reach the server)", async () => {
  const { byType } = await plan("prod", { ...base, cdnProxy: false, acmeEmail: "owner@example.com" });
  const proxy = byType("command:remote:Command").find((r) => r.name === "host-role-proxy")!;
  assert.ok(proxy.options.dependsOn.includes("cloudflare:index/dnsRecord:DnsRecord::edge-apex-a"));
  assert.match(String(proxy.inputs.stdin), /certbot/);
});

test("PostgreSQL gets a generated password through a secret bundle; Redis only when enabled with a job", async () => {
  const { byType, resources } = await plan("prod", base);
  const postgres = byType("command:remote:Command").find((r) => r.name === "host-role-postgres")!;
  assert.ok(postgres.secretInputs.includes("stdin"));
  assert.ok(String(postgres.inputs.stdin).includes("postgresapppassword0123456789abcdefABCDEF"), "the generated password reaches the role");
  const generated = resources.find((r) => r.type === "random:index/randomPassword:RandomPassword" && r.name === "postgres-app-password")!;
  assert.equal(generated.inputs.length, 40);
  assert.equal(byType("command:remote:Command").some((r) => r.name === "host-role-redis"), false, "no Redis by default");
  const withRedis = await plan("prod", { ...base, redisJob: "cache" });
  const order = withRedis.byType("command:remote:Command").map((r) => [r.name, r.options.dependsOn.filter((d) => d.startsWith("command:remote:"))]);
  assert.deepEqual(Object.fromEntries(order), {
    "host-role-base": [],
    "host-role-docker": ["command:remote:Command::host-role-base"],
    "host-role-postgres": ["command:remote:Command::host-role-docker"],
    "host-role-redis": ["command:remote:Command::host-role-postgres"],
    "host-role-proxy": ["command:remote:Command::host-role-redis"],
    "host-role-backups": ["command:remote:Command::host-role-proxy"],
    "host-role-logs": ["command:remote:Command::host-role-backups"],
    "host-role-monitoring": ["command:remote:Command::host-role-logs"],
    "host-role-grafana": ["command:remote:Command::host-role-monitoring"],
  });
  const redis = withRedis.byType("command:remote:Command").find((r) => r.name === "host-role-redis")!;
  assert.match(String(redis.inputs.stdin), /maxmemory-policy allkeys-lru/);
});

test("the app role comes last, with DATABASE_URL and REDIS_URL built from the generated passwords, all secret", async () => {
  const { byType } = await plan("prod", {
    ...base,
    redisJob: "sessions",
    appImage: "ghcr.io/acme/shop",
    appTag: "1.8.4",
    appEnv: ["LOG_LEVEL=info"],
    appMigrationCommand: ["./manage", "migrate"],
  });
  const commands = byType("command:remote:Command");
  assert.deepEqual(commands.map((r) => r.name), ROLES.map((role) => `host-role-${role.name}`), "every role, in the order of infra/roles.ts");
  const app = commands.find((r) => r.name === "host-role-app")!;
  assert.ok(app.options.dependsOn.includes("command:remote:Command::host-role-proxy"));
  assert.ok(app.secretInputs.includes("stdin"));
  const bundle = String(app.inputs.stdin);
  assert.match(bundle, /DATABASE_URL=postgresql:\/\/app:postgresapppassword0123456789abcdefABCDEF@host\.docker\.internal:5432\/app/);
  assert.match(bundle, /REDIS_URL=redis:\/\/default:redisapppassword0123456789abcdefABCDEF@host\.docker\.internal:6379\/0/);
  assert.match(bundle, /ghcr\.io\/acme\/shop/);
  assert.match(bundle, /1\.8\.4/);
  const withoutApp = await plan("prod", base);
  assert.equal(withoutApp.byType("command:remote:Command").some((r) => r.name === "host-role-app"), false, "no app role until appImage is set");
});

test("the backups role gets the bucket's S3 credentials and a generated passphrase, and ships the drill and restore commands", async () => {
  const { byType, resources, result } = await plan("prod", base);
  const backups = byType("command:remote:Command").find((r) => r.name === "host-role-backups")!;
  assert.ok(backups.secretInputs.includes("stdin"));
  const bundle = String(backups.inputs.stdin);
  const token = resources.find((r) => r.type === "cloudflare:index/accountToken:AccountToken")!;
  assert.ok(bundle.includes(`repo1-s3-key=${token.id}`), "the bucket token's id is the S3 access key");
  assert.match(bundle, /repo1-s3-endpoint=fedcba9876543210fedcba9876543210\.r2\.cloudflarestorage\.com/);
  assert.match(bundle, /repo1-cipher-pass=backupcipherpassphrase0123456789abcdefABCDEF/);
  for (const command of ["/usr/local/sbin/leaninfra-backup", "/usr/local/sbin/leaninfra-drill", "/usr/local/sbin/leaninfra-restore"]) {
    assert.ok(bundle.includes(command), command);
  }
  assert.equal(await pulumi.isSecret(result.outputs.backupPassphrase), true, "the passphrase is a secret stack output");
});
