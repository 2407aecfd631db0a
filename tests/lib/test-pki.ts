import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

/**
 * A throwaway PKI made with the host's openssl, in a temp directory: the site's CA and certificate
 * for `names`, the zone's origin-pull CA with its client certificate (what Cloudflare presents), and a
 * rogue client from another CA (what anyone else would present). Files: <name>.pem and <name>.key.
 */
export class TestPki {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-pki-"));

  constructor(names: string[]) {
    try {
      this.ca("site-ca");
      this.ca("origin-pull-ca");
      this.ca("rogue-ca");
      this.leaf("site", "site-ca", `/CN=${names[0]}`, `subjectAltName=${names.map((n) => `DNS:${n}`).join(",")}\nextendedKeyUsage=serverAuth\n`);
      this.leaf("client", "origin-pull-ca", "/CN=origin-pull.test", "extendedKeyUsage=clientAuth\n");
      this.leaf("rogue", "rogue-ca", "/CN=origin-pull.test", "extendedKeyUsage=clientAuth\n");
    } catch (error) {
      this.dispose();
      throw new Error(`openssl could not make the test PKI (apt-get install openssl): ${(error as Error).message}`);
    }
  }

  path(file: string): string {
    return path.join(this.dir, file);
  }

  read(file: string): string {
    return fs.readFileSync(this.path(file), "utf8");
  }

  dispose(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  private openssl(...args: string[]): void {
    execFileSync("openssl", args, { cwd: this.dir, stdio: ["ignore", "pipe", "pipe"] });
  }

  private static readonly EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

  private ca(name: string): void {
    this.openssl("req", "-x509", ...TestPki.EC, "-days", "2", "-subj", `/CN=LeanInfra test ${name}`, "-keyout", this.path(`${name}.key`), "-out", this.path(`${name}.pem`));
  }

  private leaf(name: string, caName: string, subject: string, ext: string): void {
    fs.writeFileSync(this.path(`${name}.ext`), ext);
    this.openssl("req", ...TestPki.EC, "-subj", subject, "-keyout", this.path(`${name}.key`), "-out", this.path(`${name}.csr`));
    this.openssl("x509", "-req", "-in", this.path(`${name}.csr`), "-CA", this.path(`${caName}.pem`), "-CAkey", this.path(`${caName}.key`), "-CAcreateserial", "-days", "2", "-extfile", this.path(`${name}.ext`), "-out", this.path(`${name}.pem`));
  }
}
