import test from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import cloudflareIps from "../../infra/data/cloudflare-ips.json";
import { NGINX_FILES, ProxySettings, SYSTEMD_DROP_INS, proxyRole, renderCertbotDeployHook, renderNginxHttpConf, renderNginxSiteConf } from "../../components/proxy";
import { renderRoleBundle } from "../../components/host/bundle";
import { LAYOUT } from "../../components/host/layout";
import { show, withDebianRoot } from "../lib/debian-root";
import { runShellcheck } from "../lib/shellcheck";


/** A self-signed certificate for the names, made with the host's openssl; it also stands in for the origin-pull CA. */
function selfSigned(names: string[]): { cert: string; key: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-nginx-tls-"));
  try {
    execFileSync("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
      "-subj", `/CN=${names[0]}`, "-addext", `subjectAltName=${names.map((n) => `DNS:${n}`).join(",")}`,
      "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem"),
    ], { stdio: ["ignore", "pipe", "pipe"] });
    return { cert: fs.readFileSync(path.join(dir, "cert.pem"), "utf8"), key: fs.readFileSync(path.join(dir, "key.pem"), "utf8") };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const tlsFiles = selfSigned(["example.com", "www.example.com", "static.example.com", "grafana.example.com"]);
const cloudflare: ProxySettings = {
  domain: "example.com",
  canonicalHost: "apex",
  staticHostname: "static",
  staticPathPrefixes: ["/assets/", "/static/"],
  extraHostnames: ["grafana"],
  cdnProxy: true,
  cloudflareRanges: { ipv4Cidrs: [...cloudflareIps.ipv4Cidrs], ipv6Cidrs: [...cloudflareIps.ipv6Cidrs] },
  tls: { mode: "cloudflare", certificatePem: tlsFiles.cert, privateKeyPem: tlsFiles.key, originPullCaPem: tlsFiles.cert },
  authPaths: ["/login", "/api/auth/"],
  authRateLimitPerMinute: 30,
  clientMaxBodyMb: 25,
};
const letsencrypt: ProxySettings = { ...cloudflare, cdnProxy: false, tls: { mode: "letsencrypt", acmeEmail: "owner@example.com" } };

/** Every shape the rendered config can take. */
const VARIANTS: Record<string, ProxySettings> = {
  "cloudflare": cloudflare,
  "cloudflare-www-bare": { ...cloudflare, canonicalHost: "www", staticHostname: "", extraHostnames: [], authPaths: [] },
  "letsencrypt": letsencrypt,
  "letsencrypt-proxied": { ...letsencrypt, cdnProxy: true },
  "slo-route-groups": { ...cloudflare, sloRouteGroups: ["api=/api/", "admin=/api/admin/", "docs=/docs.v2/", "health=/healthz"] },
  "one-auth-path-many-extras": { ...cloudflare, authPaths: ["/session/"], extraHostnames: ["grafana", "status", "alerts"], authRateLimitPerMinute: 6000, clientMaxBodyMb: 1024 },
};

/** Each check: a shell edit of the applied config, and what nginx -t must say about it. */
const BROKEN: Array<{ name: string; edit: string; expect: RegExp }> = [
  {
    name: "unknown directive",
    edit: `echo 'leaninfra_not_a_directive on;' >>${NGINX_FILES.siteConf}`,
    expect: /unknown directive "leaninfra_not_a_directive" in \/etc\/nginx\/conf\.d\/leaninfra\.conf:\d+/,
  },
  { name: "missing upstream line", edit: `rm ${LAYOUT.nginx.upstream}`, expect: /open\(\) "\/etc\/leaninfra\/nginx\/upstream\.conf" failed/ },
  { name: "undefined rate-limit zone", edit: `sed -i 's/zone=leaninfra_auth burst/zone=missing_zone burst/' ${NGINX_FILES.siteConf}`, expect: /zero size shared memory zone "missing_zone"/ },
  { name: "missing origin-pull CA", edit: `rm ${LAYOUT.tls.originPullCa}`, expect: /origin-pull-ca\.pem/ },
  { name: "key of another certificate", edit: `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ${LAYOUT.tls.privateKey} 2>/dev/null`, expect: /key values mismatch/ },
];

test("Debian 13's nginx -t accepts every shape of the rendered config without a warning, and refuses broken ones", { timeout: 20 * 60_000 }, async () => {
  await withDebianRoot((root) => {
    const started = Date.now();
    const applied = root.run("bash -s", { stdin: renderRoleBundle(proxyRole(cloudflare)) });
    assert.equal(applied.code, 0, show(applied));
    console.log(`# proxy bundle applied (nginx installed) in ${Date.now() - started} ms`);

    for (const [name, settings] of Object.entries(VARIANTS)) {
      fs.mkdirSync(root.hostPath(`/root/variants/${name}`), { recursive: true });
      fs.writeFileSync(root.hostPath(`/root/variants/${name}/nginx.conf`), renderNginxHttpConf(settings));
      fs.writeFileSync(root.hostPath(`/root/variants/${name}/leaninfra.conf`), renderNginxSiteConf(settings));
    }
    const checkAll = root.run(`nginx -v 2>&1
cp -a /etc/nginx /root/nginx.applied
for dir in /root/variants/*/; do
  cp "$dir/nginx.conf" ${NGINX_FILES.httpConf}
  cp "$dir/leaninfra.conf" ${NGINX_FILES.siteConf}
  nginx -t >"$dir/out" 2>&1; echo $? >"$dir/code"
done
rm -rf /etc/nginx && cp -a /root/nginx.applied /etc/nginx`);
    assert.equal(checkAll.code, 0, show(checkAll));
    console.log(`# checked with ${checkAll.stdout.trim()}`);
    assert.match(checkAll.stdout, /^nginx version: nginx\/1\.26\./);
    for (const name of Object.keys(VARIANTS)) {
      const out = fs.readFileSync(root.hostPath(`/root/variants/${name}/out`), "utf8");
      assert.equal(fs.readFileSync(root.hostPath(`/root/variants/${name}/code`), "utf8").trim(), "0", `${name}:\n${out}`);
      assert.match(out, /syntax is ok/);
      assert.match(out, /test is successful/);
      assert.doesNotMatch(out, /\[(warn|emerg|alert|crit)\]/, `${name}: nginx warns:\n${out}`);
    }

    // The check bites: each breakage on a copy of the applied config, restored after.
    for (const broken of BROKEN) {
      const result = root.run(`cp -a /etc/nginx /root/nginx.before && cp -a /etc/leaninfra /root/leaninfra.before
${broken.edit}
nginx -t; code=$?
rm -rf /etc/nginx /etc/leaninfra && mv /root/nginx.before /etc/nginx && mv /root/leaninfra.before /etc/leaninfra
exit $code`);
      assert.notEqual(result.code, 0, `${broken.name}: nginx -t should fail\n${show(result)}`);
      assert.match(result.stderr, broken.expect, `${broken.name}:\n${show(result)}`);
      assert.match(result.stderr, /configuration file \/etc\/nginx\/nginx\.conf test failed/);
    }
    const restored = root.run("nginx -t");
    assert.equal(restored.code, 0, show(restored));
  });
});

const shellcheck = (_name: string, script: string) => {
  const { status, output } = runShellcheck(script);
  return { status, stdout: output };
};

test("shellcheck passes both proxy bundles and certbot's deploy hook, and catches a broken hook", () => {
  for (const [name, settings] of Object.entries(VARIANTS)) {
    const bundle = renderRoleBundle(proxyRole(settings));
    const result = shellcheck(`proxy bundle (${name})`, bundle);
    assert.equal(result.status, 0, `shellcheck found problems in the proxy bundle (${name}):\n${result.stdout}`);
  }
  const hook = renderCertbotDeployHook();
  const ok = shellcheck("deploy hook", hook);
  assert.equal(ok.status, 0, `shellcheck found problems in the deploy hook:\n${ok.stdout}`);
  const broken = shellcheck("broken hook", hook.replace('"$lineage/privkey.pem"', "$lineage/privkey.pem"));
  assert.notEqual(broken.status, 0, "an unquoted path must be reported");
  assert.match(broken.stdout, /SC2086/);
});

test("Let's Encrypt mode in Debian 13: systemd-analyze verify reads nginx's and certbot's sandboxes; certbot takes an option-like value joined to its option as the value", { timeout: 20 * 60_000 }, async () => {
  await withDebianRoot((root) => {
    const applied = root.run("bash -s", { stdin: renderRoleBundle(proxyRole(letsencrypt)) });
    assert.equal(applied.code, 0, show(applied));

    // systemd's own parser of the units with their drop-ins: a misspelt key or bad value is named here.
    const verify = root.run(`systemd-analyze verify --man=no nginx.service certbot.service 2>&1; systemd-analyze cat-config ${SYSTEMD_DROP_INS.nginx} ${SYSTEMD_DROP_INS.certbot} >/dev/null`);
    console.log(`# systemd-analyze verify: ${verify.stdout.trim() || "no findings"}`);
    assert.doesNotMatch(verify.stdout, /leaninfra-hardening|Unknown key|Failed to parse|Invalid/, verify.stdout);
    const misspelt = root.run(`cp ${SYSTEMD_DROP_INS.nginx} /root/drop-in && echo 'ProtectSystm=strict' >>${SYSTEMD_DROP_INS.nginx}
systemd-analyze verify --man=no nginx.service 2>&1; cp /root/drop-in ${SYSTEMD_DROP_INS.nginx}`);
    assert.match(misspelt.stdout, /leaninfra-hardening\.conf:\d+: Unknown key/, "the check bites");

    // certbot's parser is argparse: a value given as its own word is read as an option when it starts
    // with "-"; joined to its option it stays the value. Port 9 of loopback stands in for the ACME server.
    const certbot = (emailArgument: string) =>
      root.run(`mkdir -p /tmp/le-www && certbot certonly --non-interactive --agree-tos --no-eff-email ${emailArgument} --webroot --webroot-path=/tmp/le-www \\
  --config-dir=/tmp/le/etc --work-dir=/tmp/le/work --logs-dir=/tmp/le/logs --server=http://127.0.0.1:9/directory --domains=example.com 2>&1`);
    const separate = certbot("--email --help");
    const help = /certbot \[SUBCOMMAND\] \[options\]/;
    assert.match(separate.stdout, help, `as its own word, "--help" is certbot's option:\n${separate.stdout}`);
    const joined = certbot("'--email=--help'");
    console.log(`# certbot --email=--help: exit ${joined.code}: ${joined.stdout.trim().split("\n").slice(-2).join(" | ")}`);
    assert.notEqual(joined.code, 0);
    assert.match(joined.stdout, /Requesting 127\.0\.0\.1\/directory: Connection refused/, "parsed, certbot went on to the ACME server");
    assert.doesNotMatch(joined.stdout, help, `joined, "--help" is the address:\n${joined.stdout}`);
  });
});
