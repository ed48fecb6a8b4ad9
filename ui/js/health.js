// Health: /health, /info (Docker, pool, limits, policies) and a few figures from
// /metrics, refreshed every few seconds.

import { get, request } from './api.js';
import { h, setText, notice, detail, duration, every } from './dom.js';

/** Sums of the samples of each metric in a Prometheus/OpenMetrics text. */
export function parseMetrics(text) {
  const sums = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const match = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/);
    if (!match) continue;
    const value = Number(match[3]);
    if (Number.isNaN(value)) continue;
    sums.set(match[1], (sums.get(match[1]) || 0) + value);
  }
  return sums;
}

const FIGURES = [
  ['repobox_sandboxes_active', 'Sandboxes now'],
  ['repobox_sandbox_creates_total', 'Sandboxes created'],
  ['repobox_sandbox_destroys_total', 'Sandboxes destroyed'],
  ['repobox_execs_total', 'Commands run'],
  ['repobox_pool_ready', 'Warm pool ready'],
  ['repobox_jobs', 'Jobs kept'],
  ['repobox_http_requests_total', 'HTTP requests'],
  ['repobox_git_cache_lookups_total', 'Git cache lookups'],
];

function text(value) {
  if (value === null || value === undefined || value === '') return '—';
  if (Array.isArray(value)) return value.length ? value.join(', ') : '—';
  if (typeof value === 'object') return Object.entries(value).map(([k, v]) => `${k}: ${text(v)}`).join('; ');
  return String(value);
}

/** A definition list of an object's fields, updated in place. */
function pairs(dl, object) {
  const entries = Object.entries(object || {});
  const keyed = new Map([...dl.querySelectorAll('dt')].map((dt) => [dt.textContent, dt.nextElementSibling]));
  for (const [key, value] of entries) {
    let dd = keyed.get(key);
    if (!dd) {
      dd = h('dd');
      dl.append(h('dt', { text: key }), dd);
    }
    setText(dd, text(value));
  }
}

export function mount(view) {
  const status = h('span.badge');
  const docker = h('dd');
  const version = h('dd');
  const uptime = h('dd');
  const active = h('dd');
  const service = h('dl.pairs');
  const pool = h('dl.pairs');
  const limits = h('dl.pairs');
  const figures = h('dl.figures');
  const figureCells = new Map();
  for (const [name, label] of FIGURES) {
    const dd = h('dd', { text: '—' });
    figureCells.set(name, dd);
    figures.append(h('div', {}, h('dt', { text: label }), dd));
  }

  async function refresh() {
    try {
      const health = await get('/health');
      status.className = `badge s-${health.status}`;
      setText(status, health.status);
      setText(docker, health.docker_available ? 'available' : 'unreachable');
      setText(version, health.version);
      setText(uptime, duration(health.uptime_seconds));
      setText(active, health.active_containers);
      const info = await get('/info');
      const { limits: infoLimits, pool: infoPool, ...rest } = info;
      pairs(service, rest);
      pairs(pool, infoPool);
      pairs(limits, infoLimits);
      const sums = parseMetrics(await (await request('GET', '/metrics')).text());
      // A counter that never counted has no sample yet: it is 0.
      for (const [name, dd] of figureCells) setText(dd, sums.get(name) || 0);
    } catch (error) {
      if (error.status !== 401) notice(detail(error));
    }
  }

  view.append(
    h('h1', {}, 'Health ', status),
    h('div.grid', {},
      h('section.card', { 'aria-labelledby': 'h-service' }, h('h2', { id: 'h-service', text: 'Service' }),
        h('dl.pairs', {}, h('dt', { text: 'Docker' }), docker, h('dt', { text: 'Version' }), version, h('dt', { text: 'Uptime' }), uptime, h('dt', { text: 'Sandboxes' }), active)),
      h('section.card', { 'aria-labelledby': 'h-metrics' }, h('h2', { id: 'h-metrics', text: 'Metrics' }), figures),
      h('section.card', { 'aria-labelledby': 'h-pool' }, h('h2', { id: 'h-pool', text: 'Warm pool' }), pool),
      h('section.card', { 'aria-labelledby': 'h-limits' }, h('h2', { id: 'h-limits', text: 'Limits' }), limits),
      h('section.card.wide', { 'aria-labelledby': 'h-config' }, h('h2', { id: 'h-config', text: 'Configuration' }), service),
    ),
  );
  return every(5000, refresh);
}
