import assert from "node:assert/strict";
import test from "node:test";
import * as pulumi from "@pulumi/pulumi";
import { validateConfig } from "../../infra/config";
import { runWithMocks, settle } from "../../infra/mock-run";
import { buildStack } from "../../infra/stack";
import { CANNED_ZONES, MINIMAL_CONFIG, cannedZone, mockCloudOutputs } from "../lib/mock-cloud";

const ZONE = CANNED_ZONES[0].id;
const base = {
  ...MINIMAL_CONFIG,
  extraHostnames: ["status"],
  staticHostname: "static",
};


const zoneLookups: Record<string, unknown>[] = [];
const calls = {
  "cloudflare:index/getZone:getZone": (args: Record<string, unknown>) => {
    zoneLookups.push(args);
    return cannedZone(args);
  },
};

async function run(raw: Record<string, unknown>) {
  const cfg = validateConfig("prod", { ...base, ...raw });
  zoneLookups.length = 0;
  const result = await runWithMocks({ project: "leaninfra", stack: "prod", preview: false, config: {}, computed: mockCloudOutputs, calls, revealSecrets: true }, () => buildStack(cfg, { offline: true }));
  const byType = (suffix: string) => result.resources.filter((r) => r.type.endsWith(suffix));
  return { ...result, byType };
}

test("every name gets proxied A and AAAA records pointing at the Host's Primary IPs, in the configured zone", async () => {
  const { byType } = await run({});
  const records = byType(":DnsRecord");
  const names = [...new Set(records.map((r) => r.inputs.name))].sort();
  // grafana.example.com: the grafana role's name (grafana: true by default).
  assert.deepEqual(names, ["example.com", "grafana.example.com", "static.example.com", "status.example.com", "www.example.com"]);
  assert.equal(records.length, 10);
  for (const record of records) {
    assert.equal(record.inputs.proxied, true, `${record.name} proxied`);
    assert.equal(record.inputs.ttl, 1);
    assert.equal(record.inputs.zoneId, ZONE);
    assert.equal(record.inputs.content, record.inputs.type === "A" ? "198.51.100.10" : "2001:db8:42::1");
    assert.equal(record.parent, "leaninfra:edge:Edge::edge");
  }
  assert.deepEqual(zoneLookups, [{ filter: { name: "example.com", account: { id: MINIMAL_CONFIG.cloudflareAccountId } } }], "zone looked up by name in the main account");
});

test("zone settings: ssl strict, always HTTPS, TLS 1.2 minimum, HTTP/3", async () => {
  const { byType } = await run({});
  const settings = Object.fromEntries(byType(":ZoneSetting").map((r) => [r.inputs.settingId, r.inputs.value]));
  assert.deepEqual(settings, { ssl: "strict", always_use_https: "on", min_tls_version: "1.2", http3: "on" });
});

test("a cache rule caches the static prefixes and host with the configured edge TTL; www redirects to the apex", async () => {
  const { byType } = await run({ staticPathPrefixes: ["/build/"], staticEdgeTtlSeconds: 86400 });
  const rulesets = Object.fromEntries(byType(":Ruleset").map((r) => [r.inputs.phase, r.inputs]));
  const cache = (rulesets.http_request_cache_settings.rules as Array<Record<string, any>>)[0];
  assert.equal(cache.action, "set_cache_settings");
  assert.equal(cache.expression, '(http.host in {"example.com" "www.example.com"} and starts_with(http.request.uri.path, "/build/")) or (http.host eq "static.example.com")');
  assert.deepEqual(cache.actionParameters.edgeTtl, { mode: "override_origin", default: 86400 });
  assert.equal(cache.actionParameters.cache, true);
  const redirect = (rulesets.http_request_dynamic_redirect.rules as Array<Record<string, any>>)[0];
  assert.equal(redirect.expression, 'http.host eq "www.example.com"');
  assert.equal(redirect.actionParameters.fromValue.statusCode, 301);
  assert.equal(redirect.actionParameters.fromValue.targetUrl.expression, 'concat("https://example.com", http.request.uri.path)');
});

test("origin TLS: an Origin CA certificate for the apex and wildcard from a locally generated key; authenticated origin pulls on", async () => {
  const { byType, result } = await run({ originCertValidityDays: 365 });
  const [origin] = byType(":OriginCaCertificate");
  assert.deepEqual(origin.inputs.hostnames, ["example.com", "*.example.com"]);
  assert.equal(origin.inputs.requestType, "origin-ecc");
  assert.equal(origin.inputs.requestedValidity, 365);
  // The Host has a key of its own (the server's SSH host key).
  const keys = byType("tls:index/privateKey:PrivateKey").map((r) => r.name).filter((name) => name.startsWith("edge-")).sort();
  assert.deepEqual(keys, ["edge-origin-key", "edge-origin-pull-ca-key", "edge-origin-pull-client-key"]);
  const [settings] = byType(":AuthenticatedOriginPullsSettings");
  assert.equal(settings.inputs.enabled, true);
  assert.deepEqual(settings.options.dependsOn, ["cloudflare:index/authenticatedOriginPullsCertificate:AuthenticatedOriginPullsCertificate::edge-origin-pull-cert"]);
  const [upload] = byType(":AuthenticatedOriginPullsCertificate");
  assert.equal(upload.inputs.certificate, "-----BEGIN CERTIFICATE----- edge-origin-pull-client-cert");
  assert.ok(upload.secretInputs.includes("privateKey"), "the client key travels as a secret");
  const [client] = byType(":LocallySignedCert");
  assert.deepEqual(client.inputs.allowedUses, ["client_auth", "digital_signature"]);
  assert.equal(result.outputs.url, "https://example.com");
});

test("the origin private key handed to nginx is a secret output", async () => {
  const { result } = await run({});
  const key = result.edge.originTls!.privateKeyPem;
  assert.equal(await pulumi.isSecret(key), true);
  assert.equal(await settle(key), "-----BEGIN PRIVATE KEY----- edge-origin-key");
});

test("with the proxy off: plain DNS records, no origin certificate, no origin pulls, no edge rules", async () => {
  const { byType, result } = await run({ cdnProxy: false, acmeEmail: "owner@example.com" });
  const records = byType(":DnsRecord");
  assert.equal(records.length, 8);
  assert.ok(records.every((r) => r.inputs.proxied === false && r.inputs.ttl === 300));
  for (const type of [":OriginCaCertificate", ":AuthenticatedOriginPullsSettings", ":AuthenticatedOriginPullsCertificate", ":Ruleset", "tls:index/privateKey:PrivateKey"]) {
    assert.equal(byType(type).filter((r) => r.name.startsWith("edge-")).length, 0, type);
  }
  assert.equal(result.edge.originTls, undefined);
});

test("a zone given by id is used as is, without a lookup by name", async () => {
  const { byType } = await run({ cloudflareZone: ZONE });
  assert.deepEqual(zoneLookups, [{ zoneId: ZONE }]);
  assert.ok(byType(":DnsRecord").every((r) => r.inputs.zoneId === ZONE));
});
