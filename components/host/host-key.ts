import { createHash } from "node:crypto";
import * as path from "node:path";
import { renderScript } from "./script";

/**
 * The one host key type the server presents: the key the roles' SSH connection pins. The base role's
 * sshd config serves /etc/ssh/ssh_host_ed25519_key only, and @pulumi/command offers only the pinned
 * key's type (HostKeyAlgorithms), so an older server that still has other keys is checked the same way.
 */
export const HOST_KEY_TYPE = "ssh-ed25519";
export const HOST_KEY_FILE = "/etc/ssh/ssh_host_ed25519_key";

/** What cloud-init installs as the server's host key (`ssh_keys`): the private half is a secret. */
export interface HostKeyPair {
  /** OpenSSH private key format (-----BEGIN OPENSSH PRIVATE KEY-----). */
  privateKeyOpenssh: string;
  /** One authorized_keys line: "ssh-ed25519 AAAA...". */
  publicKeyOpenssh: string;
}

/**
 * What `npm run plan` writes into the user data in place of the generated key: the real one exists
 * only on `pulumi up`, in Pulumi's state (encrypted) and in the server's user data.
 */
export const PLACEHOLDER_HOST_KEY: HostKeyPair = Object.freeze({
  privateKeyOpenssh: "-----BEGIN OPENSSH PRIVATE KEY-----\n(secret: generated on pulumi up, kept in Pulumi state)\n-----END OPENSSH PRIVATE KEY-----\n",
  publicKeyOpenssh: `${HOST_KEY_TYPE} (generated on pulumi up)`,
});

/** The wire form of an SSH string: a 32-bit length, then the bytes. */
function readSshString(blob: Buffer, offset: number): { value: Buffer; next: number } | undefined {
  if (offset + 4 > blob.length) return undefined;
  const length = blob.readUInt32BE(offset);
  if (offset + 4 + length > blob.length) return undefined;
  return { value: blob.subarray(offset + 4, offset + 4 + length), next: offset + 4 + length };
}

/**
 * Why `line` is not one ssh-ed25519 public key line ("ssh-ed25519 AAAA... [comment]"), or undefined
 * when it is one: the base64 must decode to the key type and a 32-byte Ed25519 key (RFC 8709), as
 * @pulumi/command's parser (x/crypto ssh.ParseAuthorizedKey) will read it.
 */
export function hostKeyProblem(line: string): string | undefined {
  const accepted = `accepted: the server's ${HOST_KEY_TYPE} public key as one line, "${HOST_KEY_TYPE} AAAAC3NzaC1lZDI1NTE5AAAA...", from ${HOST_KEY_FILE}.pub`;
  const words = line.trim().split(/ +/);
  if (words[0] !== HOST_KEY_TYPE) {
    return /^(ssh-rsa|ecdsa-sha2-\S+|ssh-dss|sk-\S+)$/.test(words[0] ?? "")
      ? `is a ${words[0]} key (${accepted}; the server presents its ${HOST_KEY_TYPE} key only)`
      : `is not an OpenSSH host public key (${accepted})`;
  }
  if (words.length < 2 || !/^[A-Za-z0-9+/]+={0,2}$/.test(words[1]) || words[1].length % 4 !== 0) return `has no base64 key after ${HOST_KEY_TYPE} (${accepted})`;
  const blob = Buffer.from(words[1], "base64");
  const type = readSshString(blob, 0);
  const key = type && readSshString(blob, type.next);
  if (!type || type.value.toString("latin1") !== HOST_KEY_TYPE || !key || key.value.length !== 32 || key.next !== blob.length) {
    return `is not a valid ${HOST_KEY_TYPE} key: its base64 does not hold one 32-byte Ed25519 key (${accepted}; copy the whole line)`;
  }
  return undefined;
}

/** The key without its comment or line end: "ssh-ed25519 AAAA...", as pinned and compared. */
export function hostKeyLine(line: string): string {
  const problem = hostKeyProblem(line);
  if (problem) throw new Error(`host key ${JSON.stringify(line.slice(0, 80))} ${problem}`);
  return line.trim().split(/ +/).slice(0, 2).join(" ");
}

/** The key's fingerprint as `ssh-keygen -l` and `ssh` print it: "SHA256:" and unpadded base64. */
export function hostKeyFingerprint(line: string): string {
  const blob = Buffer.from(hostKeyLine(line).split(" ")[1], "base64");
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

export const HOST_KEY_CHECK_SCRIPT = path.join(__dirname, "files", "host-key-check.sh");

/** What the host key check compares, and where it tells the owner the expectation comes from. */
export interface HostKeyCheckSettings {
  /** The server's name, for the message. */
  fqdn: string;
  /** The address the roles connect to. */
  address: string;
  port: number;
  /** The pinned key line. */
  expectedKey: string;
  /** "leaninfra:sshHostKey" or "generated". */
  expectedFrom: "config" | "generated";
  /** The generated key's line: a server rebuilt after a config pin presents it. */
  generatedKey: string;
  /** How long a new server may take to answer on SSH. */
  waitSeconds: number;
}

/**
 * The check the Host runs on the owner's machine (a local command, bash and OpenSSH's ssh-keyscan)
 * before any role command connects: @pulumi/command's own refusal of a changed key is "ssh: host key
 * mismatch" after every dial attempt, without the host, the keys or what to do.
 */
export function renderHostKeyCheck(s: HostKeyCheckSettings): string {
  return renderScript(HOST_KEY_CHECK_SCRIPT, {
    server_name: s.fqdn,
    address: s.address,
    port: s.port,
    expected_key: hostKeyLine(s.expectedKey),
    expected_fingerprint: hostKeyFingerprint(s.expectedKey),
    expected_from: s.expectedFrom,
    generated_key: hostKeyLine(s.generatedKey),
    wait_seconds: s.waitSeconds,
    host_key_file: HOST_KEY_FILE,
  });
}
