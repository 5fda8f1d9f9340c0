// bench:scale counts API writes and watch bytes from the API server's own metrics: the parser must
// keep only write verbs, split subresources, and sum watch bytes by resource (or kind, older servers).
import { expect } from 'chai';
import { diff, parseCounters, total } from '../../bench/scale/apimetrics.js';

const SCRAPE = `# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="kubenpm.io",resource="npmnodes",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 7
apiserver_request_total{code="201",component="apiserver",dry_run="",group="kubenpm.io",resource="npmipsets",scope="resource",subresource="",verb="POST",version="v1alpha1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="kubenpm.io",resource="npmipsets",scope="resource",subresource="",verb="PUT",version="v1alpha1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="kubenpm.io",resource="npmipsets",scope="cluster",subresource="",verb="LIST",version="v1alpha1"} 40
apiserver_request_total{code="200",component="apiserver",dry_run="",group="kubenpm.io",resource="npmipsets",scope="cluster",subresource="",verb="WATCH",version="v1alpha1"} 9
apiserver_watch_events_sizes_sum{group="kubenpm.io",resource="npmipsets",version="v1alpha1"} 4096
apiserver_watch_events_sizes_count{group="kubenpm.io",resource="npmipsets",version="v1alpha1"} 2
apiserver_watch_events_total{group="kubenpm.io",resource="npmipsets",version="v1alpha1"} 2
apiserver_watch_events_sizes_sum{group="",kind="Pod",version="v1"} 100
`;

describe('bench:scale API server metrics (test/bench/scale/apimetrics.ts)', () => {
  it('counts writes by resource/subresource, never reads or watches; watch bytes by resource or kind', () => {
    const c = parseCounters(SCRAPE);
    expect(Object.fromEntries(c.writes)).to.deep.equal({ 'npmnodes/status': 7, npmipsets: 5 });
    expect(Object.fromEntries(c.watchBytes)).to.deep.equal({ npmipsets: 4096, Pod: 100 });
    expect(Object.fromEntries(c.watchEvents)).to.deep.equal({ npmipsets: 2 });
  });

  it('diffs two scrapes, keeping only what changed', () => {
    const a = parseCounters(SCRAPE);
    const b = parseCounters(SCRAPE.replace('verb="PATCH",version="v1alpha1"} 7', 'verb="PATCH",version="v1alpha1"} 10'));
    const d = diff(a.writes, b.writes);
    expect(d).to.deep.equal({ 'npmnodes/status': 3 });
    expect(total(d)).to.equal(3);
  });
});
