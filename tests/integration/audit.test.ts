import test from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import cloudflareIps from "../../infra/data/cloudflare-ips.json";
import { BASE_FILES, baseRole } from "../../components/base";
import { bootFiles } from "../../components/host/cloud-init";
import { postgresRole } from "../../components/postgres";
import { SYSTEMD_DROP_INS, proxyRole } from "../../components/proxy";
import { redisRole } from "../../components/redis";
import { show } from "../lib/debian-root";
import { BootedRoot, must, withBootedRoot } from "../lib/booted-root";
import { REDIS_PORT_LOCK, withLock } from "../lib/host-lock";
import { freePort } from "../lib/s3-server";
import { TestPki } from "../lib/test-pki";
import { applyRole } from "../fixtures/test-app/scenario";

const NAMES = ["example.com", "www.example.com"];
const ADMIN = "ops";
const CLOUD_INIT_SSHD = "/etc/ssh/sshd_config.d/10-leaninfra.conf";
/** testssl.sh severities, lowest first; WARN is about the scan itself, not the server. */
const ABOVE_LOW = new Set(["MEDIUM", "HIGH", "CRITICAL"]);

/**
 * The site's certificate as Cloudflare's Origin CA issues it, from the test PKI's site CA: an ECDSA
 * P-256 leaf for the names, with a CRL and an OCSP address (testssl.sh grades a certificate without
 * either HIGH), valid for 90 days (it grades one that expires within 60 days). Returns cert and key paths.
 */
function originLikeCertificate(pki: TestPki): { cert: string; key: string } {
  const ext = pki.path("audit-site.ext");
  fs.writeFileSync(
    ext,
    [
      `subjectAltName=${NAMES.map((n) => `DNS:${n}`).join(",")}`,
      "extendedKeyUsage=serverAuth",
      "keyUsage=critical,digitalSignature",
      "basicConstraints=critical,CA:FALSE",
      "crlDistributionPoints=URI:http://crl.example.net/origin_ca.crl",
      "authorityInfoAccess=OCSP;URI:http://ocsp.example.net/origin_ca",
      "",
    ].join("\n"),
  );
  const run = (...args: string[]) => execFileSync("openssl", args, { cwd: pki.dir, stdio: ["ignore", "pipe", "pipe"] });
  run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", `/CN=${NAMES[0]}`, "-keyout", pki.path("audit-site.key"), "-out", pki.path("audit-site.csr"));
  run("x509", "-req", "-in", pki.path("audit-site.csr"), "-CA", pki.path("site-ca.pem"), "-CAkey", pki.path("site-ca.key"), "-CAcreateserial", "-days", "90", "-extfile", ext, "-out", pki.path("audit-site.pem"));
  return { cert: pki.path("audit-site.pem"), key: pki.path("audit-site.key") };
}

/**
 * An SSH client as Pulumi's command provider (pulumi-command, provider/pkg/provider/remote/connection.go)
 * builds it: Go's golang.org/x/crypto/ssh offering every key of the agent (SSH_AUTH_SOCK) in the
 * agent's order, then running one command. Built with the Go toolchain the engine tests use; the
 * optional third argument restricts its key exchanges.
 */
const PULUMI_LIKE_SSH = `package main

import (
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

func main() {
	conn, err := net.Dial("unix", os.Getenv("SSH_AUTH_SOCK"))
	if err != nil {
		fmt.Println("agent:", err)
		os.Exit(2)
	}
	config := &ssh.ClientConfig{
		User:            os.Args[2],
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Auth:            []ssh.AuthMethod{ssh.PublicKeysCallback(agent.NewClient(conn).Signers)},
	}
	if len(os.Args) > 3 {
		config.KeyExchanges = strings.Split(os.Args[3], ",")
	}
	client, err := ssh.Dial("tcp", os.Args[1], config)
	if err != nil {
		fmt.Println("x/crypto:", err)
		os.Exit(1)
	}
	session, err := client.NewSession()
	if err != nil {
		fmt.Println("x/crypto session:", err)
		os.Exit(1)
	}
	out, err := session.CombinedOutput("id -un")
	if err != nil {
		fmt.Println("x/crypto run:", err)
		os.Exit(1)
	}
	fmt.Printf("logged in as %s over %s\\n", strings.TrimSpace(string(out)), client.ServerVersion())
}
`;

function buildPulumiLikeSsh(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-pulumi-like-ssh-"));
  fs.writeFileSync(path.join(dir, "main.go"), PULUMI_LIKE_SSH);
  fs.writeFileSync(path.join(dir, "go.mod"), "module leaninfra.test/pulumilikessh\n\ngo 1.24\n\nrequire golang.org/x/crypto v0.55.0\n");
  const env = { ...process.env, PATH: `${process.env.PATH}:/usr/local/go/bin`, GOFLAGS: "-mod=mod", CGO_ENABLED: "0" };
  execFileSync("go", ["build", "-trimpath", "-o", "pulumi-like-ssh", "."], { cwd: dir, env, stdio: ["ignore", "pipe", "pipe"], timeout: 10 * 60_000 });
  return path.join(dir, "pulumi-like-ssh");
}

/** Installs Debian 13's packages inside the root (the test's tools, not a role's). */
async function aptInstall(root: BootedRoot, packages: string[]): Promise<void> {
  const result = await root.runAsync(`set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; apt-get install -y -qq --no-install-recommends ${packages.join(" ")} >/dev/null`, { timeoutMs: 15 * 60_000 });
  assert.equal(result.code, 0, show(result));
  console.log(`installed in the root: ${must(root, `dpkg-query -W -f '\${Package} \${Version}\\n' ${packages.join(" ")}`).trim().replace(/\n/g, ", ")}`);
}

/** A page of the app: HTML with a form token, as BREACH needs it. */
const APP = String.raw`import http.server, sys
page = ("<!doctype html><html><head><title>Shop</title></head><body><form method=post>"
        "<input type=hidden name=csrf value=0123456789abcdef0123456789abcdef>"
        + "<p>Welcome to the shop.</p>" * 40 + "</form></body></html>").encode()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
`;

interface TestsslFinding {
  id: string;
  severity: string;
  finding: string;
}

/**
 * What a person sees from outside, graded by the standard tools, in a Debian 13 root booted with systemd
 * and the base, proxy, postgres and redis roles applied: ssh-audit (Debian 13's) against sshd,
 * testssl.sh against nginx's 443, and the listening sockets. Also sshd's MaxAuthTries against an
 * agent holding many keys, as Pulumi's command provider offers every key of the agent.
 */
test("audit: ssh-audit has no [fail], testssl.sh nothing above LOW, only 22/80/443 listen off loopback; an agent with 10 keys gets in", { timeout: 45 * 60_000 }, async (t) => {
  const pki = new TestPki(NAMES);
  const site = originLikeCertificate(pki);
  const pgPort = await freePort();
  const pulumiLikeSsh = buildPulumiLikeSsh();
  // The sshd drop-in cloud-init writes at first boot, as on the VM: the base role's must agree with it.
  const cloudInitSshd = bootFiles({ hostname: "web", fqdn: "web.example.com", adminUser: ADMIN, adminSshPublicKey: "", swapSizeMb: 0, journalMaxUseMb: 200, hostKey: { privateKeyOpenssh: "", publicKeyOpenssh: "" } } as unknown as Parameters<typeof bootFiles>[0]).find(
    (f) => f.path === CLOUD_INIT_SSHD,
  );
  assert.ok(cloudInitSshd, `cloud-init writes ${CLOUD_INIT_SSHD}`);

  try {
    await withLock(REDIS_PORT_LOCK, 30 * 60_000, () =>
      withBootedRoot({ files: [{ path: CLOUD_INIT_SSHD, content: cloudInitSshd.content }] }, async (root) => {
        // --- the roles, as pulumi up applies them
        const roles = [
          baseRole({ adminUser: ADMIN }),
          proxyRole({
            domain: "example.com",
            canonicalHost: "apex",
            staticHostname: "",
            staticPathPrefixes: ["/assets/", "/static/"],
            extraHostnames: [],
            cdnProxy: true,
            cloudflareRanges: { ipv4Cidrs: [...cloudflareIps.ipv4Cidrs, "127.0.0.1/32"], ipv6Cidrs: [...cloudflareIps.ipv6Cidrs] },
            tls: { mode: "cloudflare", certificatePem: fs.readFileSync(site.cert, "utf8"), privateKeyPem: fs.readFileSync(site.key, "utf8"), originPullCaPem: pki.read("origin-pull-ca.pem") },
            authPaths: ["/login"],
            authRateLimitPerMinute: 30,
            clientMaxBodyMb: 25,
          }),
          postgresRole({ memoryMb: 2048, vcpus: 2, postgresMaxConnections: 0, postgresDatabase: "shop", postgresUser: "shop_app", password: `Pg${randomBytes(12).toString("hex")}`, port: pgPort }),
          redisRole({ redisJob: "sessions", memoryMb: 2048, redisMaxMemoryMb: 0, password: `Rd${randomBytes(12).toString("hex")}`, adminPassword: `Ad${randomBytes(12).toString("hex")}` }),
        ];
        must(root, `useradd --create-home --shell /bin/bash ${ADMIN}`);
        for (const role of roles) {
          const applied = await applyRole(root, role);
          assert.equal(applied.code, 0, show(applied));
        }
        assert.equal(must(root, "systemctl is-active ssh nginx prometheus-node-exporter").trim(), "active\nactive\nactive");

        // --- sshd: both drop-ins read, the base role's values win, and cloud-init's other settings still hold.
        const effective = must(root, `sshd -T -C user=${ADMIN},addr=203.0.113.7,host=client,laddr=127.0.0.1,lport=22`);
        const value = (key: string) => new RegExp(`^${key.toLowerCase()} (.*)$`, "m").exec(effective)?.[1];
        console.log(`sshd -T: maxauthtries ${value("MaxAuthTries")}, kexalgorithms ${value("KexAlgorithms")}, hostkeyalgorithms ${value("HostKeyAlgorithms")}, ciphers ${value("Ciphers")}, macs ${value("MACs")}`);
        assert.equal(value("MaxAuthTries"), "10");
        assert.equal(value("PermitRootLogin"), "no", "cloud-init's setting still holds");
        assert.equal(value("PasswordAuthentication"), "no");
        assert.equal(value("AllowUsers"), ADMIN);
        assert.equal(value("HostKey"), "/etc/ssh/ssh_host_ed25519_key");
        assert.equal(value("Compression"), "no");
        assert.equal(value("AllowAgentForwarding"), "no");
        assert.equal(value("LogLevel"), "VERBOSE");

        // --- MaxAuthTries against an agent: each key the server does not know is one failed try.
        const agentProbe = (keys: number, authorized: number) => `set -u
rm -rf /root/agent && mkdir -p /root/agent
for i in $(seq ${keys}); do ssh-keygen -q -t ed25519 -N '' -C "key$i" -f /root/agent/k$i; done
install -d -m 0700 -o ${ADMIN} -g ${ADMIN} /home/${ADMIN}/.ssh
install -m 0600 -o ${ADMIN} -g ${ADMIN} /root/agent/k${authorized}.pub /home/${ADMIN}/.ssh/authorized_keys
eval "$(ssh-agent -s)" >/dev/null
for i in $(seq ${keys}); do ssh-add -q /root/agent/k$i 2>/dev/null; done
ssh-add -l | wc -l
ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o IdentitiesOnly=no ${ADMIN}@127.0.0.1 'echo logged in as $(id -un)' 2>&1
openssh=$?
# Go's x/crypto/ssh as Pulumi's command provider uses it; once more with X25519 only, as an x/crypto
# without ML-KEM negotiates.
/root/pulumi-like-ssh 127.0.0.1:22 ${ADMIN} 2>&1
xcrypto=$?
/root/pulumi-like-ssh 127.0.0.1:22 ${ADMIN} curve25519-sha256 2>&1
x25519=$?
ssh-agent -k >/dev/null
echo "exits: $openssh $xcrypto $x25519"`;
        /** Whether OpenSSH's client, x/crypto, and x/crypto with X25519 only got in ("0 0 0": all three). */
        const viaAgent = (keys: number, authorized: number) => {
          const r = root.run(agentProbe(keys, authorized));
          assert.equal(r.code, 0, show(r));
          console.log(`${keys} agent keys, the authorized one at position ${authorized}: ${r.stdout.trim().replace(/\n/g, " | ")}`);
          return { stdout: r.stdout, exits: /^exits: (.*)$/m.exec(r.stdout)?.[1] };
        };
        fs.copyFileSync(pulumiLikeSsh, root.hostPath("/root/pulumi-like-ssh"));
        fs.chmodSync(root.hostPath("/root/pulumi-like-ssh"), 0o755);
        const eight = viaAgent(8, 8);
        assert.equal(eight.exits, "0 0 0", eight.stdout);
        assert.match(eight.stdout, new RegExp(`^8\\nlogged in as ${ADMIN}\\nlogged in as ${ADMIN} over SSH-2\\.0-OpenSSH_10[^\\n]*\\nlogged in as ${ADMIN} over SSH-2\\.0-OpenSSH_10`, "m"));
        assert.equal(viaAgent(10, 10).exits, "0 0 0");
        const eleven = viaAgent(11, 11);
        assert.match(eleven.exits ?? "", /^255 1 1$/, "the 11th key is one try too many, for every client");
        assert.match(eleven.stdout, /Too many authentication failures/);
        // Why the value matters from first boot: with MaxAuthTries 3 (sshd's default is 6), an agent's 4th key is never tried.
        must(root, `printf 'MaxAuthTries 3\\n' >/etc/ssh/sshd_config.d/01-audit-test.conf && sshd -t && systemctl reload ssh`);
        const three = viaAgent(8, 8);
        const threeOfThree = viaAgent(3, 3);
        must(root, "rm /etc/ssh/sshd_config.d/01-audit-test.conf && systemctl reload ssh");
        assert.match(three.exits ?? "", /^255 1 1$/, "MaxAuthTries 3 refuses an agent whose 4th or later key is the one");
        assert.equal(threeOfThree.exits, "0 0 0");

        // The app's stand-in behind nginx (the deploy's first upstream, 127.0.0.1:8001): a page as the
        // app serves it, 200 and large enough for nginx to compress, so testssl sees real answers.
        fs.writeFileSync(root.hostPath("/root/app.py"), APP);
        must(root, "systemd-run --quiet --unit=audit-app python3 /root/app.py 8001 && for i in $(seq 50); do curl -fs -o /dev/null http://127.0.0.1:8001/ && exit 0; sleep 0.2; done; exit 1");

        // --- listening sockets: only the root's own processes (the root shares the host's network
        // namespace, so the host's listeners are in the table too, without a process of the root).
        const sockets = must(root, "ss -Hltnup").trim().split("\n");
        const own = sockets.filter((l) => l.includes("users:(("));
        const port = (l: string) => Number(/:(\d+)$/.exec(l.split(/\s+/)[4])?.[1]);
        const address = (l: string) => l.split(/\s+/)[4].replace(/:\d+$/, "").replace(/%\S+$/, "");
        const loopback = (a: string) => /^127\./.test(a) || a === "[::1]";
        console.log(`listening sockets of the root (${own.length}; ${sockets.length - own.length} of the host left out):\n${own.join("\n")}`);
        for (const expected of [22, 80, 443]) assert.ok(own.some((l) => port(l) === expected), `something listens on ${expected}`);
        assert.deepEqual(
          own.filter((l) => !loopback(address(l)) && ![22, 80, 443].includes(port(l))),
          [],
          "only 22, 80 and 443 listen off loopback",
        );
        assert.ok(own.some((l) => port(l) === pgPort && loopback(address(l))), "PostgreSQL listens on loopback");

        // --- the sandboxes as systemd sees them (with and without the drop-ins); the services survived them (active above).
        const exposure = (unit: string) => /exposure level for \S+: ([\d.]+ \S+)/.exec(must(root, `systemd-analyze security --no-pager ${unit}.service | tail -n 1`))?.[1];
        const waitForExporter = "for i in $(seq 50); do curl -fs -o /dev/null http://127.0.0.1:9100/metrics && exit 0; sleep 0.2; done; exit 1";
        const filesystems = () =>
          [...new Set([...must(root, "curl -fsS http://127.0.0.1:9100/metrics").matchAll(/^node_filesystem_avail_bytes\{[^}]*mountpoint="([^"]*)"/gm)].map((m) => m[1]))].sort();
        for (const dropIn of [SYSTEMD_DROP_INS.nginx, BASE_FILES.nodeExporterDropIn]) assert.ok(fs.existsSync(root.hostPath(dropIn)), dropIn);
        const sandboxed = { nginx: exposure("nginx"), exporter: exposure("prometheus-node-exporter"), filesystems: filesystems() };
        must(root, `mkdir -p /root/off && mv ${SYSTEMD_DROP_INS.nginx} /root/off/nginx.conf && mv ${BASE_FILES.nodeExporterDropIn} /root/off/exporter.conf && systemctl daemon-reload && systemctl restart prometheus-node-exporter && ${waitForExporter}`);
        const plain = { nginx: exposure("nginx"), exporter: exposure("prometheus-node-exporter"), filesystems: filesystems() };
        must(root, `mv /root/off/nginx.conf ${SYSTEMD_DROP_INS.nginx} && mv /root/off/exporter.conf ${BASE_FILES.nodeExporterDropIn} && systemctl daemon-reload && systemctl restart prometheus-node-exporter && ${waitForExporter}`);
        console.log(
          `systemd-analyze security, sandboxed (Debian's unit alone): nginx ${sandboxed.nginx} (${plain.nginx}), prometheus-node-exporter ${sandboxed.exporter} (${plain.exporter}); filesystems node_exporter measures: ${sandboxed.filesystems.join(" ") || "none"}`,
        );
        assert.ok(Number.parseFloat(sandboxed.nginx ?? "10") < Number.parseFloat(plain.nginx ?? "0"), "nginx's exposure is lower with the drop-in");
        assert.ok(Number.parseFloat(sandboxed.exporter ?? "10") < Number.parseFloat(plain.exporter ?? "0"));
        assert.deepEqual(sandboxed.filesystems, plain.filesystems, "the sandbox hides no filesystem from node_exporter");
        const verify = root.run("systemd-analyze verify --man=no nginx.service prometheus-node-exporter.service 2>&1");
        assert.doesNotMatch(verify.stdout, /leaninfra-hardening/, `systemd-analyze verify has no word on the drop-ins:\n${verify.stdout}`);
        // nginx still reloads (the deploy's and certbot's way) and answers.
        must(root, "systemctl reload nginx && sleep 1 && systemctl is-active nginx && curl -fsS -o /dev/null http://127.0.0.1:8080/stub_status");
        // node_exporter still reads the textfile directory the backup jobs write to.
        must(root, "printf 'leaninfra_audit_probe 42\\n' >/var/lib/prometheus/node-exporter/audit.prom");
        const metrics = must(root, "curl -fsS http://127.0.0.1:9100/metrics");
        assert.match(metrics, /^leaninfra_audit_probe 42$/m, "the textfile collector read the directory");
        assert.match(metrics, /^node_textfile_scrape_error 0$/m);
        // ...and systemd's units over D-Bus from inside its sandbox (the SystemdUnitFailed ticket).
        assert.match(metrics, /^node_systemd_unit_state\{name="nginx\.service",state="active",type="[a-z]+"\} 1$/m, "the systemd collector reads the units");
        assert.doesNotMatch(metrics, /^node_systemd_unit_state\{name="[^"]+\.(socket|mount|slice)"/m, "services and timers only");

        // --- the audit tools, Debian 13's own, inside the root.
        await aptInstall(root, ["ssh-audit", "testssl.sh", "bsdextrautils"]);
        const sshAudit = root.run("ssh-audit --no-colors --port=22 127.0.0.1");
        const graded = sshAudit.stdout.split("\n").filter((l) => /-- \[(fail|warn|info)\]/.test(l) || /^\(\w+\) /.test(l));
        const count = (grade: string) => graded.filter((l) => l.includes(`[${grade}]`)).length;
        console.log(`ssh-audit (exit ${sshAudit.code}): ${count("fail")} [fail], ${count("warn")} [warn], ${count("info")} [info]\n${graded.join("\n")}`);
        assert.ok(graded.some((l) => /^\(kex\) mlkem768x25519-sha256 /.test(l)), `ssh-audit graded the key exchange:\n${sshAudit.stdout}`);
        assert.deepEqual(graded.filter((l) => l.includes("[fail]")), [], sshAudit.stdout);

        // testssl.sh as a client of the site: the names resolve to the root, the test CA is trusted
        // (Cloudflare trusts its Origin CA), and it presents the zone's origin-pull client certificate.
        must(root, `printf '127.0.0.1 ${NAMES.join(" ")}\\n' >>/etc/hosts`);
        root.run("mkdir -p /root/tls");
        fs.writeFileSync(root.hostPath("/root/tls/site-ca.pem"), pki.read("site-ca.pem"));
        fs.writeFileSync(root.hostPath("/root/tls/client.pem"), pki.read("client.pem") + pki.read("client.key"));
        const testssl = await root.runAsync(
          `testssl --quiet --color 0 --warnings off --add-ca /root/tls/site-ca.pem --mtls /root/tls/client.pem --jsonfile /root/testssl.json https://${NAMES[0]}/ >/root/testssl.txt 2>&1; echo $?`,
          { timeoutMs: 20 * 60_000 },
        );
        const testsslText = () => (fs.existsSync(root.hostPath("/root/testssl.txt")) ? fs.readFileSync(root.hostPath("/root/testssl.txt"), "utf8") : "");
        assert.ok(fs.existsSync(root.hostPath("/root/testssl.json")), `testssl wrote no JSON (exit ${testssl.stdout.trim()}):\n${testsslText()}`);
        const findings = JSON.parse(fs.readFileSync(root.hostPath("/root/testssl.json"), "utf8")) as TestsslFinding[];
        const bySeverity = new Map<string, number>();
        for (const f of findings) bySeverity.set(f.severity, (bySeverity.get(f.severity) ?? 0) + 1);
        const notable = findings.filter((f) => !["INFO", "OK", "DEBUG"].includes(f.severity));
        console.log(
          `testssl.sh (exit ${testssl.stdout.trim()}): ${findings.length} findings, ${[...bySeverity].map(([s, n]) => `${n} ${s}`).join(", ")}\n` +
            notable.map((f) => `  ${f.severity} ${f.id}: ${f.finding}`).join("\n"),
        );
        assert.ok(findings.some((f) => f.id === "TLS1_3" && /offered/.test(f.finding)), `testssl reached the TLS server:\n${testsslText()}`);
        // testssl's HTTP header checks (headers, BREACH) give no finding through nginx's mandatory client
        // certificate (testssl 3.2.1): then say so; tests/integration/proxy-role.test.ts checks the
        // headers and that the app's answers are never compressed.
        const service = findings.find((f) => f.id === "service");
        console.log(`testssl service detection: ${service ? `${service.severity} ${service.finding}` : "no finding"}`);
        if (findings.some((f) => f.id === "HSTS")) {
          assert.ok(findings.some((f) => f.id === "BREACH"), "testssl checked compression (BREACH) on the app's page");
        } else {
          t.diagnostic("not tested by testssl here: its HTTP header checks (security headers, BREACH) gave no finding through the mandatory client certificate; proxy-role.test.ts covers both");
        }
        assert.deepEqual(
          findings.filter((f) => ABOVE_LOW.has(f.severity)).map((f) => `${f.severity} ${f.id}: ${f.finding}`),
          [],
          testsslText(),
        );
      }),
    );
  } finally {
    pki.dispose();
    fs.rmSync(path.dirname(pulumiLikeSsh), { recursive: true, force: true });
  }
});
