// An Ed25519 key pair with the outputs @pulumi/tls's PrivateKey gives for algorithm ED25519
// (hashicorp/terraform-provider-tls internal/provider/resource_private_key.go, common_key.go): PEMs
// by Go's encoding/pem (64-character lines), the OpenSSH private key by x/crypto's ssh.MarshalPrivateKey
// (openssh-key-v1, no cipher, empty comment), the public key line by ssh.MarshalAuthorizedKey (with
// "\n"), fingerprints by ssh.FingerprintLegacyMD5 / FingerprintSHA256. Derived from a seed, so the
// canned cloud answers the same on every run; sshd and ssh-keygen read these keys (tests check it).
import { createHash, createPrivateKey, createPublicKey } from "node:crypto";

function sshString(data: Buffer | string): Buffer {
  const bytes = typeof data === "string" ? Buffer.from(data, "latin1") : data;
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bytes.length);
  return Buffer.concat([length, bytes]);
}

function uint32(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(value);
  return out;
}

function pem(type: string, der: Buffer): string {
  const lines = der.toString("base64").match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${type}-----\n${lines.join("\n")}\n-----END ${type}-----\n`;
}

export interface Ed25519KeyOutputs {
  algorithm: "ED25519";
  privateKeyPem: string;
  privateKeyPemPkcs8: string;
  privateKeyOpenssh: string;
  publicKeyPem: string;
  publicKeyOpenssh: string;
  publicKeyFingerprintMd5: string;
  publicKeyFingerprintSha256: string;
}

/** The key pair whose 32-byte seed is SHA-256 of `seed`. */
export function ed25519Key(seed: string): Ed25519KeyOutputs {
  const secret = createHash("sha256").update(seed).digest();
  // PKCS#8 for Ed25519 (RFC 8410): a fixed prefix and the 32-byte seed.
  const pkcs8 = Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), secret]);
  const privateKey = createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" });
  const spki = createPublicKey(privateKey).export({ format: "der", type: "spki" });
  const raw = spki.subarray(spki.length - 32);
  const blob = Buffer.concat([sshString("ssh-ed25519"), sshString(raw)]);
  // x/crypto picks the check value at random; a fixed one keeps the canned answer the same.
  const check = uint32(createHash("sha256").update(`check:${seed}`).digest().readUInt32BE(0));
  let section = Buffer.concat([check, check, sshString("ssh-ed25519"), sshString(raw), sshString(Buffer.concat([secret, raw])), sshString("")]);
  const padding = Array.from({ length: (8 - (section.length % 8)) % 8 }, (_, i) => i + 1);
  section = Buffer.concat([section, Buffer.from(padding)]);
  const openssh = Buffer.concat([Buffer.from("openssh-key-v1\0", "latin1"), sshString("none"), sshString("none"), sshString(""), uint32(1), sshString(blob), sshString(section)]);
  const md5 = createHash("md5").update(blob).digest("hex").match(/../g)!.join(":");
  return {
    algorithm: "ED25519",
    privateKeyPem: pem("PRIVATE KEY", pkcs8),
    privateKeyPemPkcs8: pem("PRIVATE KEY", pkcs8),
    privateKeyOpenssh: pem("OPENSSH PRIVATE KEY", openssh),
    publicKeyPem: pem("PUBLIC KEY", spki),
    publicKeyOpenssh: `ssh-ed25519 ${blob.toString("base64")}\n`,
    publicKeyFingerprintMd5: md5,
    publicKeyFingerprintSha256: `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`,
  };
}
