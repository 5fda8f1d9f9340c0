// In-pod helper of the kernel test harness. Runs INSIDE a pod network namespace
// (`ip netns exec <podns> node podagent.mjs '<json config>'`), plain JS so it
// starts fast without tsx.
//
// Config (argv[2], JSON): { "name": "x/a", "tcp": [80, 81], "udp": [80, 81] }
//
// - Listens on every TCP port (accepts, writes "<name>\n", closes) and every
//   UDP port (answers every datagram with the same payload) on 0.0.0.0.
// - Prints one line `{"ready":true,"pid":..,"tcp":[..],"udp":[..]}` once all
//   listeners are bound, or `{"fatal":"..."}` and exits 1.
// - Reads probe commands on stdin, one JSON object per line:
//     {"id": 1, "host": "10.244.1.11", "port": 80, "protocol": "TCP"|"UDP"|"SCTP", "timeoutMs": 1000}
//   and answers each on stdout (in completion order, probes run concurrently):
//     {"id": 1, "ok": true, "ms": 1.2} | {"id": 1, "ok": false, "error": "timeout", "ms": 1000}
//   SCTP answers {"id", "ok": false, "unsupported": true, "error": "SCTP unsupported"}.
// - Exits when stdin is closed (so it never outlives the harness process).
import net from 'node:net';
import dgram from 'node:dgram';
import readline from 'node:readline';
import process from 'node:process';
import { Buffer } from 'node:buffer';
import { performance } from 'node:perf_hooks';
import { setTimeout, clearTimeout, setInterval, clearInterval } from 'node:timers';

const config = JSON.parse(process.argv[2] ?? '{}');
const name = String(config.name ?? 'pod');
const tcpPorts = Array.isArray(config.tcp) ? config.tcp.map(Number) : [80, 81];
const udpPorts = Array.isArray(config.udp) ? config.udp.map(Number) : [80, 81];

const servers = [];

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

process.stdout.on('error', () => process.exit(0)); // harness went away (EPIPE)

function listenTcp(port) {
  return new Promise((resolve, reject) => {
    const srv = net.createServer((sock) => {
      sock.on('error', () => {
        /* peer reset: nothing to do */
      });
      sock.end(name + '\n');
    });
    srv.on('error', reject);
    srv.listen({ port, host: '0.0.0.0', backlog: 1024 }, () => {
      servers.push(srv);
      resolve();
    });
  });
}

function listenUdp(port) {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket('udp4');
    sock.on('error', reject);
    sock.on('message', (msg, rinfo) => {
      sock.send(msg, rinfo.port, rinfo.address);
    });
    sock.bind(port, '0.0.0.0', () => {
      servers.push(sock);
      resolve();
    });
  });
}

function probeTcp(host, port, timeoutMs) {
  return new Promise((resolve) => {
    let done = false;
    const sock = net.connect({ host, port });
    const finish = (ok, error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(ok ? { ok: true } : { ok: false, error });
    };
    const timer = setTimeout(() => finish(false, 'timeout'), timeoutMs);
    sock.on('connect', () => finish(true));
    sock.on('error', (err) => finish(false, err.code ?? err.message));
  });
}

function probeUdp(host, port, timeoutMs) {
  return new Promise((resolve) => {
    let done = false;
    // A fresh socket (fresh ephemeral source port) per probe, so that conntrack
    // state left by an earlier probe never makes a new probe look ESTABLISHED.
    const sock = dgram.createSocket('udp4');
    const token = Buffer.from(`knpm-probe-${process.pid}-${Math.random().toString(36).slice(2)}`);
    let resend;
    const finish = (ok, error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearInterval(resend);
      try {
        sock.close();
      } catch {
        /* already closed */
      }
      resolve(ok ? { ok: true } : { ok: false, error });
    };
    const timer = setTimeout(() => finish(false, 'timeout'), timeoutMs);
    sock.on('error', (err) => finish(false, err.code ?? err.message)); // ECONNREFUSED on ICMP unreachable
    sock.on('message', (msg) => {
      if (msg.equals(token)) finish(true);
    });
    sock.connect(port, host, (err) => {
      if (err) return finish(false, err.code ?? err.message);
      const send = () => {
        if (!done) sock.send(token, (e) => e && finish(false, e.code ?? e.message));
      };
      send();
      // Resend a few times inside the timeout window: UDP has no retransmission.
      resend = setInterval(send, Math.max(100, Math.floor(timeoutMs / 4)));
    });
  });
}

async function handle(line) {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch {
    emit({ id: null, ok: false, error: `bad command: ${line.slice(0, 200)}` });
    return;
  }
  const id = cmd.id;
  const protocol = String(cmd.protocol ?? 'TCP').toUpperCase();
  const timeoutMs = Number(cmd.timeoutMs ?? 1000);
  const port = Number(cmd.port);
  const host = String(cmd.host);
  const start = performance.now();
  let res;
  if (!(port > 0 && port < 65536)) res = { ok: false, error: `bad port ${cmd.port}` };
  else if (protocol === 'TCP') res = await probeTcp(host, port, timeoutMs);
  else if (protocol === 'UDP') res = await probeUdp(host, port, timeoutMs);
  else if (protocol === 'SCTP') res = { ok: false, unsupported: true, error: 'SCTP unsupported' };
  else res = { ok: false, unsupported: true, error: `protocol ${protocol} unsupported` };
  emit({ id, ...res, ms: Math.round((performance.now() - start) * 10) / 10 });
}

try {
  await Promise.all([...tcpPorts.map(listenTcp), ...udpPorts.map(listenUdp)]);
} catch (err) {
  emit({ fatal: `listen failed: ${err && err.message ? err.message : String(err)}` });
  process.exit(1);
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on('line', (line) => {
  if (line.trim() !== '') void handle(line);
});
rl.on('close', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));

emit({ ready: true, pid: process.pid, name, tcp: tcpPorts, udp: udpPorts });
