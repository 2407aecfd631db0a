// The engine tier's stand-in providers cover what the program uses, and speak Pulumi's wire format.
import assert from "node:assert/strict";
import test from "node:test";
import * as pulumi from "@pulumi/pulumi";
import { validateConfig } from "../../infra/config";
import { runWithMocks } from "../../infra/mock-run";
import { buildStack } from "../../infra/stack";
import { CATALOG, OUTPUT_SIG, PACKAGES, SECRET_SIG, SIG, UNKNOWN, computedKeys, problems } from "../engine/standins/catalog";
import { MINIMAL_CONFIG, mockCloudOutputs } from "../lib/mock-cloud";

test("the stand-ins' wire constants are the SDK's", () => {
  assert.equal(UNKNOWN, pulumi.runtime.unknownValue);
  assert.equal(SIG, pulumi.runtime.specialSigKey);
  assert.equal(SECRET_SIG, pulumi.runtime.specialSecretSig);
  assert.equal(OUTPUT_SIG, (pulumi.runtime as unknown as { specialOutputValueSig: string }).specialOutputValueSig);
});

test("every resource type and look-up of the program, in every mode, has a stand-in", async () => {
  const known = new Set(PACKAGES.flatMap((pkg) => Object.keys(CATALOG[pkg].resources)));
  const functions = new Set(PACKAGES.flatMap((pkg) => Object.keys(CATALOG[pkg].functions)));
  const calls: string[] = [];
  for (const raw of [{}, { cdnProxy: false, acmeEmail: "owner@example.com" }, { redisJob: "cache", appImage: "ghcr.io/acme/shop" }]) {
    const cfg = validateConfig("prod", { ...MINIMAL_CONFIG, ...raw });
    const tracked: Record<string, (args: Record<string, unknown>) => Record<string, unknown>> = {};
    const run = await runWithMocks({ project: "leaninfra", stack: "prod", preview: false, config: {}, computed: mockCloudOutputs, calls: new Proxy(tracked, {
      get: (_t, token: string) => (args: Record<string, unknown>) => {
        calls.push(token);
        const pkg = token.split(":")[0] as (typeof PACKAGES)[number];
        return CATALOG[pkg].functions[token](args);
      },
    }) }, () => buildStack(cfg, { offline: true }));
    for (const r of run.resources.filter((r) => r.custom && !r.type.startsWith("pulumi:providers:"))) {
      assert.ok(known.has(r.type), `${r.type} has no stand-in in tests/engine/standins/catalog.ts`);
    }
  }
  assert.ok(calls.length > 0);
  for (const token of calls) assert.ok(functions.has(token), `${token} has no stand-in answer`);
});

test("the stand-ins check inputs as the real providers would, and leave unknowns until they are known", () => {
  const server = CATALOG.hcloud.resources["hcloud:index/server:Server"];
  assert.deepEqual(problems(server, { serverType: "cx32", firewallIds: [UNKNOWN], userData: "#cloud-config\n" }), []);
  assert.deepEqual(
    problems(server, { serverType: "cx32", firewallIds: ["123"], userData: "x".repeat(33 * 1024) }).map((p) => p.property),
    ["firewallIds.0", "userData"],
    "hcloud ids are numbers, user data is capped at 32 KiB",
  );
  const record = CATALOG.cloudflare.resources["cloudflare:index/dnsRecord:DnsRecord"];
  const zoneId = "aaaabbbbccccddddeeeeffff00001111";
  assert.deepEqual(problems(record, { zoneId, name: "example.com", type: "AAAA", ttl: 1, content: "2001:db8::1" }), []);
  assert.deepEqual(problems(record, { zoneId, name: "example.com", type: "AAAA", ttl: 1, content: "2001:db8::/64" }).map((p) => p.property), ["content"]);
  assert.deepEqual(problems(record, { zoneId, name: "example.com", type: "A", ttl: 1, content: { [SIG]: SECRET_SIG, value: UNKNOWN } }), []);
  assert.deepEqual(problems(CATALOG.hcloud.resources["hcloud:index/sshKey:SshKey"], { publicKey: "k", labels: { stack: "-bad" } }).map((p) => p.property), ["labels.stack"]);
  assert.ok(computedKeys("hcloud:index/primaryIp:PrimaryIp").has("ipAddress"));
  // The SSH host key pin is read as an authorized_keys line by @pulumi/command.
  const remote = CATALOG.command.resources["command:remote:Command"];
  const pinned = (hostKey: string) => problems(remote, { connection: { host: "198.51.100.10", user: "ops", port: 22, dialErrorLimit: 60, perDialTimeout: 10, hostKey } }).map((p) => p.property);
  assert.deepEqual(pinned("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDZFtXeHDMzYzGDJpHxDESyApurJ2k6frH+LdSDosmhw"), []);
  assert.deepEqual(pinned("SHA256:sooAv8LPUCo7GncTIhL48gzjnouhexO5oyqim6AK3P8"), ["connection.hostKey"]);
  assert.deepEqual(pinned("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIDZFtXeHDMzYzGDJpHxDESyApurJ2k6frH+LdSDosmhw"), ["connection.hostKey"], "the type names the key in the blob");
  // The tls key's outputs are the same set whatever the algorithm, so a diff never mistakes one for an input.
  assert.ok(["privateKeyOpenssh", "publicKeyOpenssh", "publicKeyFingerprintSha256"].every((key) => computedKeys("tls:index/privateKey:PrivateKey").has(key)));
});
