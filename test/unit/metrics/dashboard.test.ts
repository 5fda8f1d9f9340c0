// config/grafana/kube-npm-dashboard.json as a reader sees it (issue #12 item 6): a target-health
// panel (Prometheus's `up`) for both jobs, and no panel draws a rate on a duration axis or a
// duration on a per-second axis. Whether each query runs and returns data is checked against a real
// Prometheus by test/e2e/prometheus.test.ts.
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

interface Panel {
  id: number;
  type: string;
  title: string;
  targets?: { expr: string }[];
  fieldConfig?: { defaults?: { unit?: string } };
}

const dash = JSON.parse(readFileSync(fileURLToPath(new URL('../../../config/grafana/kube-npm-dashboard.json', import.meta.url)), 'utf8')) as { panels: (Panel & { panels?: Panel[] })[] };
const panels = dash.panels.flatMap((p) => [p, ...(p.panels ?? [])]).filter((p) => p.targets?.length);

/** Grafana's time units: an axis in one of these reads as a duration. */
const DURATION_UNITS = new Set(['ns', 'µs', 'ms', 's', 'm', 'h', 'd', 'dtdurations', 'dtdurationms', 'dthms', 'clockms', 'clocks']);
/** Grafana's per-second units. */
const PER_SECOND_UNITS = new Set(['ops', 'reqps', 'rps', 'wps', 'iops', 'Bps', 'bps', 'KBs', 'MBs', 'cps']);

/**
 * Whether an expression's result is a rate of change: rate()/irate() (per second) or increase()/
 * delta() (per window), except under histogram_quantile(), whose result is in the bucket's unit.
 */
export function isRate(expr: string): boolean {
  if (/^\s*histogram_quantile\s*\(/.test(expr)) return false;
  return /\b(rate|irate|increase|delta)\s*\(/.test(expr);
}

describe('config/grafana dashboard: what each panel draws', () => {
  it('isRate() tells rates from durations and levels', () => {
    expect(isRate('sum by (kind) (rate(kubenpm_api_writes_total[5m]))')).to.equal(true);
    expect(isRate('increase(kubenpm_drift_repairs_total[5m])')).to.equal(true);
    expect(isRate('histogram_quantile(0.99, sum by (le) (rate(kubenpm_sync_duration_seconds_bucket[5m])))')).to.equal(false);
    expect(isRate('max by (quantile) (npm_add_ipset_exec_time{quantile=~"0.5|0.9|0.99"})')).to.equal(false);
  });

  it('has a target-health panel: Prometheus `up` of the cluster and the node job', () => {
    const health = panels.filter((p) => p.targets!.some((t) => /^\s*up\{|\bor up\{/.test(t.expr)));
    expect(health.map((p) => p.title)).to.deep.equal(['Target health (up)']);
    const expr = health[0]!.targets!.map((t) => t.expr).join(' ');
    expect(expr).to.contain('up{job="$cluster_job"}').and.to.contain('up{job="$node_job"');
  });

  it('no panel draws a rate on a duration axis, or a level/duration on a per-second axis', () => {
    for (const p of panels) {
      const unit = p.fieldConfig?.defaults?.unit ?? '';
      for (const { expr } of p.targets!) {
        if (DURATION_UNITS.has(unit)) expect(isRate(expr), `"${p.title}" (unit ${unit}) draws a rate: ${expr}`).to.equal(false);
        if (PER_SECOND_UNITS.has(unit)) expect(/\b(rate|irate)\s*\(/.test(expr) && isRate(expr), `"${p.title}" (unit ${unit}) draws something that is not per second: ${expr}`).to.equal(true);
      }
      // One kind per panel: all rates or none (a shared axis cannot be both).
      const kinds = new Set(p.targets!.map((t) => isRate(t.expr)));
      expect(kinds.size, `"${p.title}" mixes rates and levels/durations`).to.equal(1);
    }
  });

  it('process and runtime metrics of both jobs are charted', () => {
    const exprs = panels.flatMap((p) => p.targets!.map((t) => t.expr)).join('\n');
    for (const m of ['process_resident_memory_bytes', 'process_cpu_seconds_total', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_p99_seconds'])
      expect(exprs, m).to.contain(`${m}{job="$cluster_job"}`).and.to.contain(`${m}{job="$node_job"`);
  });
});
