/**
 * An API server outage on demand: stop only the kube-apiserver of a control plane started by
 * controlplane.ts (etcd keeps running, so the data and resourceVersions survive), then start it
 * again with the same command line, port and certificates, as a restarted static pod would be.
 *
 *   const outage = await stopApiserver(cp);   // SIGTERM, waits until the process is gone
 *   ...
 *   await outage.restart();                   // same argv, log appended; resolves when /readyz is ok
 *
 * The restarted process's pid goes into DIR/kube-apiserver.pid, so cp.stop() (down.sh) stops it.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { isProcessRunning, type ControlPlane } from './controlplane.js';

export interface ApiserverOutage {
  /** When the old process was gone (Date.now()). */
  stoppedAt: number;
  /** Start the same kube-apiserver again; resolves with the wall-clock ms of its /readyz = ok. */
  restart(opts?: { readyTimeoutMs?: number }): Promise<number>;
}

const started = new Set<number>();
let hook = false;

function currentPid(cp: ControlPlane): number {
  return Number(readFileSync(join(cp.dir, 'kube-apiserver.pid'), 'utf8').trim());
}

export async function stopApiserver(cp: ControlPlane, signal: NodeJS.Signals = 'SIGTERM'): Promise<ApiserverOutage> {
  const pid = currentPid(cp);
  // The command line is all we need to start it again: up.sh passes every setting as a flag.
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((a) => a !== '');
  if (!argv[0]?.endsWith('kube-apiserver')) throw new Error(`pid ${pid} is not kube-apiserver: ${argv.join(' ')}`);
  process.kill(pid, signal);
  const deadline = Date.now() + 30_000;
  while (isProcessRunning(pid)) {
    if (Date.now() > deadline) process.kill(pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 50));
  }
  const stoppedAt = Date.now();
  return {
    stoppedAt,
    async restart(ropts = {}) {
      const log = openSync(join(cp.dir, 'kube-apiserver.log'), 'a');
      const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', log, log], detached: true });
      closeSync(log);
      child.unref();
      if (child.pid === undefined) throw new Error('kube-apiserver did not start');
      writeFileSync(join(cp.dir, 'kube-apiserver.pid'), `${child.pid}\n`);
      started.add(child.pid);
      if (!hook) {
        hook = true;
        process.on('exit', () => {
          for (const p of started) {
            try {
              if (isProcessRunning(p)) process.kill(p, 'SIGKILL');
            } catch {
              /* gone */
            }
          }
        });
      }
      const end = Date.now() + (ropts.readyTimeoutMs ?? 120_000);
      for (;;) {
        if (await readyz(cp)) return Date.now();
        if (!isProcessRunning(child.pid)) throw new Error(`restarted kube-apiserver exited; see ${join(cp.dir, 'kube-apiserver.log')}`);
        if (Date.now() > end) throw new Error('restarted kube-apiserver not ready in time');
        await new Promise((r) => setTimeout(r, 100));
      }
    },
  };
}

/** GET /readyz with the admin token; true on 200. */
export function readyz(cp: ControlPlane): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(`${cp.server}/readyz`, { ca: cp.caPem, headers: { authorization: `Bearer ${cp.token}` }, timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}
