import test from "node:test";
import assert from "node:assert/strict";
import { baseRole } from "../../components/base";
import { renderRoleBundle } from "../../components/host/bundle";
import { HostRole } from "../../components/host/role";
import { assertShellcheckClean, runShellcheck } from "../lib/shellcheck";

/** Every feature a bundle can have: packages, directories, files with handlers, validate, apply, health check. */
const everyFeature: HostRole = {
  name: "every-feature",
  description: "synthetic role that uses every part of the bundle",
  packages: ["jq", "rsync"],
  directories: [
    { path: "/etc/every-feature", mode: "0755" },
    { path: "/srv/data/every-feature", mode: "02770", owner: "root", group: "adm" },
  ],
  files: [
    { path: "/etc/every-feature/app.conf", mode: "0644", content: "listen 127.0.0.1:8080\n", onChange: "systemctl reload every-feature" },
    { path: "/etc/every-feature/secret.env", mode: "0600", content: "TOKEN=abc'def\"$HOME`x`\nEOF\nLEANINFRA_EOF", onChange: "systemctl reload every-feature" },
    { path: "/etc/every-feature/empty", mode: "0640", group: "adm", content: "" },
    { path: "/etc/every-feature/tool.sh", mode: "0755", content: "#!/bin/sh\necho hi\n", onChange: "echo tool changed >&2" },
  ],
  validate: "grep -q '^listen ' /etc/every-feature/app.conf\ntest -s /etc/every-feature/secret.env",
  apply: `if [ ! -e /var/lib/every-feature.done ]; then
  touch /var/lib/every-feature.done
  echo "created /var/lib/every-feature.done"
fi`,
  healthCheck: "test -x /etc/every-feature/tool.sh",
};

const shellcheck = (name: string, script: string) => assertShellcheckClean(`the ${name} bundle`, script);

test("shellcheck passes the base role's bundle", () => {
  shellcheck("base", renderRoleBundle(baseRole({ adminUser: "ops" })));
});

test("shellcheck passes a bundle that uses every feature", () => {
  const bundle = renderRoleBundle(everyFeature);
  for (const part of ["install_packages", "ensure_dir", "put_file", "role_validate", "handler_1", "role_apply", "role_health_check"]) {
    assert.ok(bundle.includes(part), `the synthetic role must exercise ${part}`);
  }
  shellcheck("every-feature", bundle);
});

test("shellcheck passes a bundle with nothing but a package", () => {
  shellcheck("tiny", renderRoleBundle({ name: "tiny", description: "one package", packages: ["jq"], directories: [], files: [] }));
});

test("shellcheck really reports problems (the check is not a no-op)", () => {
  const result = runShellcheck("#!/bin/bash\nrm -rf $1/*\n");
  assert.notEqual(result.status, 0);
  assert.match(result.output, /SC2086/);
});
