/**
 * prom-client's process and Node.js runtime metrics, as both endpoints register them.
 *
 * The event-loop lag metric samples with a libuv timer: at prom-client's default of 10 ms that is
 * 100 wake-ups a second, which cost an idle operator ~0.5 s of CPU per minute (bench:scale, issue
 * #10: 1.06 s/min with it, 0.51 without) and would cost as much on every node's agent. Sampling
 * every 200 ms still fills the p50/p90/p99 over a scrape interval (150 samples per 30 s).
 */
import { collectDefaultMetrics, type Registry } from 'prom-client';

export const EVENT_LOOP_SAMPLE_MS = 200;

export function registerRuntimeMetrics(register: Registry): void {
  collectDefaultMetrics({ register, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
}
