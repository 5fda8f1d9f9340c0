/**
 * The metrics endpoint's serving certificate: a pair from --metrics-cert-dir (tls.crt + tls.key, the
 * names of a kubernetes.io/tls Secret and of cert-manager), or a self-signed one made at start.
 *
 * Node's crypto makes keys but not X.509 certificates, and the runtime image has no openssl binary,
 * so the certificate is assembled and signed with node-forge (pure JS, no dependencies); the RSA key
 * comes from Node's native generator (forge's pure-JS keygen takes seconds). A self-signed
 * certificate gives encryption, not server identity: Prometheus scrapes it with
 * insecure_skip_verify, and authorization rests on the caller's token (auth.ts). Whoever needs
 * server identity mounts a CA-signed pair.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import forge from 'node-forge';

export interface TlsPair {
  cert: string;
  key: string;
}

/** tls.crt and tls.key from `dir`; errors name the file. */
export async function loadCertDir(dir: string): Promise<TlsPair> {
  const read = async (name: string) => {
    try {
      return await readFile(join(dir, name), 'utf8');
    } catch (err) {
      throw new Error(`--metrics-cert-dir: reading ${join(dir, name)}`, { cause: err });
    }
  };
  return { cert: await read('tls.crt'), key: await read('tls.key') };
}

/**
 * A self-signed serving certificate for `hosts` (DNS names or IPv4/IPv6 literals), valid from an
 * hour before `now` (clock skew) for `days`.
 */
export function selfSignedCert(hosts: string[] = [hostname(), 'localhost', '127.0.0.1'], now = new Date(), days = 365): TlsPair {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(publicKey);
  // A positive serial (high bit clear), 16 random bytes as RFC 5280 allows up to 20.
  const serial = randomBytes(16);
  serial[0] = serial[0]! & 0x7f;
  cert.serialNumber = serial.toString('hex');
  cert.validity.notBefore = new Date(now.getTime() - 3600_000);
  cert.validity.notAfter = new Date(now.getTime() + days * 86_400_000);
  const name = [{ name: 'commonName', value: `kube-npm-metrics@${Math.floor(now.getTime() / 1000)}` }];
  cert.setSubject(name);
  cert.setIssuer(name);
  const isIp = (h: string) => /^[\d.]+$/.test(h) || h.includes(':');
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: [...new Set(hosts)].map((h) => (isIp(h) ? { type: 7, ip: h } : { type: 2, value: h })) },
  ]);
  cert.sign(forge.pki.privateKeyFromPem(privateKey), forge.md.sha256.create());
  return { cert: forge.pki.certificateToPem(cert), key: privateKey };
}
