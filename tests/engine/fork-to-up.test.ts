// The README's path through the real Pulumi engine, then what a user does next: a second preview,
// a deploy, a user-data edit, a key rotation, a location change, a destroy; secrets checked throughout.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import { s3CredentialsFromToken } from "../../components/backup-bucket/policy";
import { renderCloudInit } from "../../components/host/cloud-init";
import { PLACEHOLDER_HOST_KEY } from "../../components/host/host-key";
import { SSH_KEY } from "../lib/mock-cloud";
import { parse } from "yaml";
import { StackExport, changes, describeSteps, encryptedStrings, exportStack, isSecret, ok, previewSteps, revealed } from "./engine";
import { readmePathCommands, stepFor } from "./readme";
import { EngineWorkspace, PASSPHRASE, PulumiRun, standinSecret } from "./workspace";

let ws: EngineWorkspace;
/** Every output the user has seen, searched for secrets at the end. */
const seen: PulumiRun[] = [];
const secretsTyped = new Map<string, string>();
const record = (run: PulumiRun) => (seen.push(run), run);

before(() => {
  ws = new EngineWorkspace();
});
after(() => ws?.dispose());

test("the README's path, from fork to `pulumi up`, runs as written through the real CLI", () => {
  const commands = readmePathCommands();
  assert.ok(commands.includes("pulumi preview") && commands.includes("pulumi up"), `the README's path previews and applies:\n${commands.join("\n")}`);
  const secretValue = (key: string) => {
    const value = standinSecret(key, randomBytes(8).toString("hex"));
    secretsTyped.set(key, value);
    return value;
  };
  for (const command of commands) {
    const step = stepFor(command, secretValue);
    if (step.action === "instead") {
      console.log(`# README: "${command}" not run here: ${step.reason}`);
      continue;
    }
    const run = ws.shell(command, { stdin: "stdin" in step ? step.stdin : undefined });
    // `--show-secrets` prints a secret on purpose (the passphrase, for the password manager).
    if (!command.includes("--show-secrets")) record(run);
    ok(run, `README step "${command}"`);
    if (command === "pulumi up") assert.match(run.output, /Resources:\s+\+ \d+ created/, "the update created the stack's resources");
    if (command.startsWith("pulumi stack output sshCommand")) assert.equal(run.stdout.trim(), "ssh ops@198.51.100.10");
    if (command.includes("--show-secrets backupPassphrase")) assert.match(run.stdout.trim(), /^\S{32,}$/, "the passphrase, in clear, for the password manager");
  }
  // The project's own secrets are set without a namespace, as the README says: Pulumi gives them the project's name.
  assert.deepEqual([...secretsTyped.keys()].sort(), ["alertWebhookUrl", "backupApiToken", "cloudflare:apiToken", "hcloud:token", "heartbeatUrl"]);
  const resources = exportStack(ws).resources;
  assert.ok(resources.some((r) => r.type === "hcloud:index/server:Server"), "the server is in the state");
  assert.deepEqual(
    resources.filter((r) => r.type === "command:remote:Command").map((r) => r.urn.split("::").pop()),
    ["base", "docker", "postgres", "proxy", "app", "backups", "logs", "monitoring", "grafana"].map((role) => `host-role-${role}`),
    "one command per host role, in order (Redis is off in Pulumi.prod.yaml)",
  );
});

test("a second `pulumi preview` after `up` plans no change at all", () => {
  // --expect-no-changes: what a pipeline runs to fail on drift.
  const { steps, summary, run } = previewSteps(ws, ["--expect-no-changes"]);
  record(run);
  assert.ok(summary.same > 40, `the preview saw the whole stack: ${JSON.stringify(summary)}`);
  assert.deepEqual(changes(steps), [], `nothing may change or re-run:\n${describeSteps(changes(steps))}`);
});

test("a new appTag re-runs the app role's command, after the host key check, and changes nothing else", () => {
  ok(ws.pulumi(["config", "set", "leaninfra:appTag", "1.0.1"]), "config set appTag");
  try {
    const { steps, run } = previewSteps(ws);
    record(run);
    const changed = changes(steps);
    assert.deepEqual(
      changed.map((s) => `${s.op} ${s.key}`),
      ["replace command:local:Command::host-host-key-check", "replace command:remote:Command::host-role-app"],
      `only the host key check and the app role run again:\n${describeSteps(changed)}`,
    );
  } finally {
    ok(ws.pulumi(["config", "set", "leaninfra:appTag", "1.0.0"]), "config set appTag back");
  }
});

test("a user-data change (swap size) replaces nothing: cloud-init ran once", () => {
  const userData = (swapSizeMb: number) => renderCloudInit({ hostname: "app", fqdn: "app.example.com", adminUser: "ops", adminSshPublicKey: SSH_KEY, swapSizeMb, journalMaxUseMb: 1024, hostKey: PLACEHOLDER_HOST_KEY });
  assert.notEqual(userData(4096), userData(2048), "the swap size is part of the user data");
  ok(ws.pulumi(["config", "set", "leaninfra:swapSizeMb", "4096"]), "config set swapSizeMb");
  try {
    const { steps, run } = previewSteps(ws);
    record(run);
    const changed = changes(steps);
    assert.deepEqual(changed.filter((s) => s.key.startsWith("hcloud:")), [], `no Hetzner resource changes:\n${describeSteps(changed)}`);
  } finally {
    ok(ws.pulumi(["config", "set", "leaninfra:swapSizeMb", "2048"]), "config set swapSizeMb back");
  }
});

test("a new admin SSH key replaces Hetzner's key object, not the server", () => {
  const original = ok(ws.pulumi(["config", "get", "leaninfra:adminSshPublicKey"]), "config get").stdout.trim();
  const rotated = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK7fN0wZ1Gx4m9s2nWcQ2eY8yT5bV3kR6pLh0uJd4aXy owner@new-laptop";
  ok(ws.pulumi(["config", "set", "leaninfra:adminSshPublicKey", rotated]), "config set adminSshPublicKey");
  try {
    const { steps, run } = previewSteps(ws);
    record(run);
    const hetzner = changes(steps).filter((s) => s.key.startsWith("hcloud:"));
    assert.deepEqual(
      hetzner.map((s) => `${s.op} ${s.key}`),
      ["replace hcloud:index/sshKey:SshKey::host-admin-key"],
      `only the key object is replaced:\n${describeSteps(hetzner)}`,
    );
  } finally {
    ok(ws.pulumi(["config", "set", "leaninfra:adminSshPublicKey", original]), "config set adminSshPublicKey back");
  }
});

test("a new location on production is refused before anything changes: server, IPs and volume are location-bound and protected", () => {
  ok(ws.pulumi(["config", "set", "leaninfra:location", "hel1"]), "config set location");
  try {
    const run = record(ws.pulumi(["preview"]));
    assert.notEqual(run.code, 0, `a protected replacement must stop the preview:\n${run.output}`);
    assert.match(run.output, /protect/i);
    assert.match(run.output, /host-(server|ipv4|ipv6|data)/);
  } finally {
    ok(ws.pulumi(["config", "set", "leaninfra:location", "fsn1"]), "config set location back");
  }
});

test("`pulumi destroy` on production is refused by protection, and nothing is deleted", () => {
  const before = exportStack(ws).resources.length;
  const run = record(ws.pulumi(["destroy"]));
  assert.notEqual(run.code, 0, `destroy must fail on production:\n${run.output}`);
  assert.match(run.output, /protected/i);
  assert.equal(exportStack(ws).resources.length, before, "every resource is still in the state");
  assert.deepEqual(changes(previewSteps(ws).steps), [], "and the stack still matches the program");
});

test("the README's rebuild replaces only the server, keeps its addresses, volume and DNS, and runs every role again", () => {
  const idsIn = (state: StackExport) => (type: string) =>
    Object.fromEntries(state.resources.filter((r) => r.type === type).map((r) => [r.urn.split("::").pop(), (r as { id?: string }).id]));
  const kept = ["hcloud:index/primaryIp:PrimaryIp", "hcloud:index/volume:Volume", "cloudflare:index/dnsRecord:DnsRecord", "hcloud:index/rdns:Rdns"];
  const idsBefore = idsIn(exportStack(ws));
  const commands = readmePathCommands("### Rebuilding the server");
  assert.ok(commands.some((c) => c.includes("--replace")), `the section replaces the server:\n${commands.join("\n")}`);
  for (const command of commands) {
    const step = stepFor(command, () => "");
    assert.equal(step.action, "run", `"${command}" runs as written`);
    record(ok(ws.shell(command), `README rebuild step "${command}"`));
  }
  const after = exportStack(ws);
  const idsAfter = idsIn(after);
  for (const type of kept) assert.deepEqual(idsAfter(type), idsBefore(type), `${type}: the same ones, untouched`);
  assert.notEqual(idsAfter("hcloud:index/server:Server")["host-server"], idsBefore("hcloud:index/server:Server")["host-server"], "a new server");
  const roles = idsBefore("command:remote:Command");
  assert.equal(Object.keys(roles).length, 9);
  for (const [name, id] of Object.entries(roles)) assert.notEqual(idsAfter("command:remote:Command")[name], id, `${name} ran again on the new server`);
  assert.notEqual(idsAfter("command:local:Command")["host-host-key-check"], idsBefore("command:local:Command")["host-host-key-check"], "the host key was checked again first");
  assert.deepEqual(idsAfter("tls:index/privateKey:PrivateKey"), idsBefore("tls:index/privateKey:PrivateKey"), "the new server gets the same host key: the pin holds");
  const protectedTypes = after.resources.filter((r) => r.protect).map((r) => r.type);
  for (const type of ["hcloud:index/server:Server", "hcloud:index/volume:Volume", "hcloud:index/primaryIp:PrimaryIp"]) {
    assert.ok(protectedTypes.includes(type), `${type} is protected again`);
  }
  assert.deepEqual(changes(previewSteps(ws).steps), [], "and the stack matches the program");
});

test("unprotected, a new location plans to replace the server, both addresses and the volume: Hetzner binds them to a location", () => {
  ok(ws.shell("pulumi config set leaninfra:allowUnprotectedProduction true && pulumi config set leaninfra:deleteProtection false && pulumi up"), "lift protection");
  ok(ws.pulumi(["config", "set", "leaninfra:location", "hel1"]), "config set location");
  try {
    const { steps, run } = previewSteps(ws);
    record(run);
    const replaced = changes(steps).filter((s) => s.op === "replace").map((s) => s.key).sort();
    for (const key of ["hcloud:index/primaryIp:PrimaryIp::host-ipv4", "hcloud:index/primaryIp:PrimaryIp::host-ipv6", "hcloud:index/server:Server::host-server", "hcloud:index/volume:Volume::host-data"]) {
      assert.ok(replaced.includes(key), `${key} is replaced:\n${describeSteps(changes(steps))}`);
    }
  } finally {
    ok(ws.pulumi(["config", "set", "leaninfra:location", "fsn1"]), "config set location back");
    ok(ws.shell("pulumi config set leaninfra:deleteProtection true && pulumi config rm leaninfra:allowUnprotectedProduction && pulumi up"), "protection back");
  }
});

test("no secret appears in clear in `pulumi stack export` or in anything the CLI printed", () => {
  const plainExport = exportStack(ws);
  const shown = exportStack(ws, true);
  const outputsOf = (type: string) => shown.resources.filter((r) => r.type === type).map((r) => r.outputs ?? {});
  const token = outputsOf("cloudflare:index/accountToken:AccountToken")[0];
  const sensitive: Record<string, string> = {
    ...Object.fromEntries(secretsTyped),
    "R2 secret access key": s3CredentialsFromToken(String(token.id ?? "id"), String(revealed(token.value))).secretAccessKey,
    "R2 token value": String(revealed(token.value)),
    "the state passphrase": PASSPHRASE,
  };
  for (const [i, o] of outputsOf("random:index/randomPassword:RandomPassword").entries()) sensitive[`generated password ${i + 1}`] = String(revealed(o.result));
  for (const [i, o] of outputsOf("tls:index/privateKey:PrivateKey").entries()) sensitive[`private key ${i + 1}`] = String(revealed(o.privateKeyPem));
  const hostKey = shown.resources.find((r) => r.urn.endsWith("::host-ssh-host-key"))!.outputs!;
  sensitive["the server's private host key (OpenSSH)"] = String(revealed(hostKey.privateKeyOpenssh));
  // Typed: the three accounts' tokens, the alert route and the heartbeat; generated: PostgreSQL's app and
  // monitor passwords, the backup passphrase, Grafana's admin password and secret key.
  assert.equal(Object.keys(sensitive).length, 5 + 3 + 5 + 4 + 1, `the secrets looked for: ${Object.keys(sensitive).join(", ")}`);
  const encrypted = encryptedStrings(plainExport, shown);
  for (const [what, value] of Object.entries(sensitive)) {
    assert.ok(value.length >= 12, `${what} is a real value`);
    if (value === PASSPHRASE) continue;
    assert.ok(encrypted.has(value) || [...encrypted].some((s) => s.includes(value)), `${what} is kept encrypted in the state`);
  }
  const places = [{ name: "pulumi stack export", text: plainExport.text }, ...seen.map((run, i) => ({ name: `CLI output ${i + 1}`, text: run.output }))];
  for (const place of places) {
    for (const [what, value] of Object.entries(sensitive)) assert.ok(!place.text.includes(value), `${place.name} shows ${what} in clear`);
  }
});

test("the server's user data, which holds its private host key, is a secret in the state, as input and as output", () => {
  const plainExport = exportStack(ws);
  const shown = exportStack(ws, true);
  const server = plainExport.resources.find((r) => r.type === "hcloud:index/server:Server")!;
  assert.ok(isSecret(server.inputs?.userData), "the server's userData input is encrypted in the state");
  assert.ok(isSecret(server.outputs?.userData), "the server's userData output is encrypted in the state");
  const hostKey = shown.resources.find((r) => r.urn.endsWith("::host-ssh-host-key"))!;
  assert.deepEqual(hostKey.inputs, { algorithm: "ED25519" });
  const privateKey = String(revealed(hostKey.outputs!.privateKeyOpenssh));
  assert.match(privateKey, /^-----BEGIN OPENSSH PRIVATE KEY-----\n/);
  const userData = String(revealed(shown.resources.find((r) => r.type === "hcloud:index/server:Server")!.inputs!.userData));
  assert.equal(parse(userData).ssh_keys.ed25519_private, privateKey, "the user data installs the generated key");
  // The connection pins its public half; the check before the roles expects it.
  const publicKey = String(revealed(hostKey.outputs!.publicKeyOpenssh)).trim();
  for (const command of shown.resources.filter((r) => r.type === "command:remote:Command")) {
    assert.equal((revealed(command.inputs!.connection) as { hostKey?: string }).hostKey, publicKey, `${command.urn} pins the server's host key`);
  }
  const check = shown.resources.find((r) => r.type === "command:local:Command")!;
  assert.ok(String(check.inputs!.stdin).includes(`readonly expected_key='${publicKey}'`));
});
