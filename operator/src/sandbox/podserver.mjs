// The sandbox's "container": runs INSIDE a pod network namespace (plain JS, starts fast).
// Also the in-pod agent of the kernel test harness (test/kernel/harness/podagent.mjs runs "agent").
//
// Serve:  ip netns exec <pod ns> node podserver.mjs serve '{"name":"demo/web","tcp":[80],"udp":[53]}'
//   Listens on every TCP port (accepts, writes "<name>\n", closes) and every UDP port (echoes each
//   datagram) on 0.0.0.0; prints {"ready":true,"pid":..} once bound, or {"fatal":".."} and exits 1.
//   Exits on stdin EOF (its supervisor went away) or SIGTERM.
// Probe:  ip netns exec <pod ns> node podserver.mjs probe '{"host":"10.244.2.3","port":80,"protocol":"TCP","timeoutMs":1000}'
//   Prints {"ok":true,"ms":1.2} or {"ok":false,"error":"timeout","ms":1000} and exits 0.
//   TCP = connect within the timeout; UDP = echo round trip (fresh socket / source port per probe,
//   datagram resent every timeout/4). Other protocols: {"ok":false,"unsupported":true,"error":..}.
// Agent:  ip netns exec <pod ns> node podserver.mjs agent CONFIG (CONFIG as for serve)
//   Serves like serve, then reads probe requests on stdin, one JSON object per line, each with an
//   "id": {"id":1,"host":..,"port":..,"protocol":..,"timeoutMs":..}, runs them concurrently and
//   answers each on stdout in completion order: {"id":1,"ok":true,"ms":1.2}. Exits on stdin EOF,
//   SIGTERM, or when stdout is gone.
import net from 'node:net';
import dgram from 'node:dgram';
import readline from 'node:readline';
import process from 'node:process';
import { Buffer } from 'node:buffer';
import { performance } from 'node:perf_hooks';
import { setTimeout, clearTimeout, setInterval, clearInterval } from 'node:timers';

const mode = process.argv[2];
const config = JSON.parse(process.argv[3] ?? '{}');

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function listenTcp(name, port) {
  return new Promise((resolve, reject) => {
    const srv = net.createServer((sock) => {
      sock.on('error', () => {
        /* peer reset */
      });
      sock.end(name + '\n');
    });
    srv.on('error', reject);
    srv.listen({ port, host: '0.0.0.0', backlog: 1024 }, resolve);
  });
}

function listenUdp(port) {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket('udp4');
    sock.on('error', reject);
    sock.on('message', (msg, rinfo) => sock.send(msg, rinfo.port, rinfo.address));
    sock.bind(port, '0.0.0.0', resolve);
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
    // A fresh socket (fresh source port) per probe, so that conntrack state left by an earlier
    // probe never makes a new one look ESTABLISHED.
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
    sock.on('error', (err) => finish(false, err.code ?? err.message));
    sock.on('message', (msg) => {
      if (msg.equals(token)) finish(true);
    });
    sock.connect(port, host, (err) => {
      if (err) return finish(false, err.code ?? err.message);
      const send = () => {
        if (!done) sock.send(token, (e) => e && finish(false, e.code ?? e.message));
      };
      send();
      resend = setInterval(send, Math.max(100, Math.floor(timeoutMs / 4)));
    });
  });
}

/** Runs one probe request: {ok, error?, unsupported?, ms}. */
async function probe(req) {
  const protocol = String(req.protocol ?? 'TCP').toUpperCase();
  const timeoutMs = Number(req.timeoutMs ?? 1000);
  const port = Number(req.port);
  const start = performance.now();
  let res;
  if (!(port > 0 && port < 65536)) res = { ok: false, error: `bad port ${req.port}` };
  else if (protocol === 'TCP') res = await probeTcp(String(req.host), port, timeoutMs);
  else if (protocol === 'UDP') res = await probeUdp(String(req.host), port, timeoutMs);
  else res = { ok: false, unsupported: true, error: `protocol ${protocol} is not supported by the sandbox prober` };
  return { ...res, ms: Math.round((performance.now() - start) * 10) / 10 };
}

/** Binds every listener of config; on failure prints {"fatal"} and exits 1. Returns what the ready line reports. */
async function serve(config) {
  const name = String(config.name ?? 'pod');
  const tcp = Array.isArray(config.tcp) ? config.tcp.map(Number) : [];
  const udp = Array.isArray(config.udp) ? config.udp.map(Number) : [];
  try {
    await Promise.all([...tcp.map((p) => listenTcp(name, p)), ...udp.map(listenUdp)]);
  } catch (err) {
    emit({ fatal: `listen failed: ${err && err.message ? err.message : String(err)}` });
    process.exit(1);
  }
  return { ready: true, pid: process.pid, name, tcp, udp };
}

/** Agent mode: one stdin line = one probe request with an id; answered concurrently. */
async function answer(line) {
  let req;
  try {
    req = JSON.parse(line);
  } catch {
    emit({ id: null, ok: false, error: `bad request: ${line.slice(0, 200)}` });
    return;
  }
  emit({ id: req.id, ...(await probe(req)) });
}

if (mode === 'serve') {
  process.stdout.on('error', () => {
    /* supervisor gone: keep serving until stdin closes */
  });
  const ready = await serve(config);
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
  process.on('SIGTERM', () => process.exit(0));
  emit(ready);
} else if (mode === 'agent') {
  process.stdout.on('error', () => process.exit(0)); // nobody left to answer (EPIPE)
  const ready = await serve(config);
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  rl.on('line', (line) => {
    if (line.trim() !== '') void answer(line);
  });
  rl.on('close', () => process.exit(0));
  process.on('SIGTERM', () => process.exit(0));
  emit(ready);
} else if (mode === 'probe') {
  emit(await probe(config));
  process.exit(0);
} else {
  process.stderr.write('usage: podserver.mjs serve CONFIG | probe REQUEST | agent CONFIG\n');
  process.exit(2);
}
