// The relay dashboard: one module, no dependencies, no build step.
//
// How it stays correct while live:
// - one EventSource on /api/events feeds every view; each SSE event carries the
//   whole entity, so applying it twice is harmless and order is the log's order;
// - the first snapshot is loaded *after* the stream is open and events that
//   arrive meanwhile are buffered, then replayed on top, so nothing falls in
//   the gap between "read the lists" and "listen for changes";
// - after a drop the browser reconnects with Last-Event-ID by itself; if it
//   gives up (a non-200 answer closes an EventSource for good) we open a new one
//   with ?since=<last event id seen>, which the relay treats the same way. Ids
//   are `P` (a position's last event) or `P.K` (an earlier one of position P).
//
// Agents at work (issue 16): managed agents carry `attention` (input, idle or null)
// in the same orchestrator events, so the needs-input queue, the badge, the tab title
// and the agent view all read state.orchestrators; `orchestrator.attention` only adds
// the moment to notify. A terminal is not in the log: each agent view opens its own
// stream (terminal.js).
'use strict';

import { AgentTerminal, TERMINAL_STATES } from './terminal.js';

const TOKEN_KEY = 'relay.token';
const EVENT_NAMES = [
  'agent.status', 'agent.removed',
  'orchestrator.status', 'orchestrator.removed', 'orchestrator.command',
  'orchestrator.attention', 'system.reaper',
];
const VIEWS = ['orchestrators', 'inbox', 'commands', 'agents', 'history', 'agent'];
const VIEW_TITLES = {
  orchestrators: 'orchestrators', inbox: 'needs input', commands: 'commands', agents: 'agents', history: 'history',
};
const NOTIFY_KEY = 'relay.notify'; // 'on' once the person asked for notifications here
const LOG_PAGE = 500;
const LOG_KEEP = 2000; // timeline rows kept in memory; older ones are only reachable by the slider

const state = {
  orchestrators: new Map(),
  agents: new Map(),
  commands: new Map(),
  lastEventId: null, // the newest event id seen on the stream ("P" or "P.K")
  skew: 0, // server clock minus ours, in ms, from the Date header
  view: 'orchestrators',
  orchFilter: '',
  cmdFilter: 'all',
  agentFilter: 'all',
  errors: new Map(), // inline error per control key
  busy: new Set(), // control keys with a request in flight
  openDetails: new Set(), // <details> kept open across re-renders
  loaded: false,
  reaper: null, // {suspended, since, wouldReap, online} or {suspended, detail} from /api/health
  agentView: null, // {oid, aid} while the agent view shows one managed agent
  drafts: new Map(), // typed answers in the needs-input queue, by agent key, across re-renders
};

// Browser notifications: attention events waiting to be looked at, and those notified.
const notices = { pending: [], sent: new Set() };

const history = {
  events: [], // raw log events, oldest first
  after: 0, // next ?after= for /api/log
  floor: 0, // the timeline lists nothing at or before this position
  loading: null,
  loadedOnce: false,
  head: 0,
  at: null, // null = following the head live
  seq: 0,
  showHeartbeats: false,
  past: null,
};

// ---------------------------------------------------------------- helpers

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

/** Build an element: h('button', {class: 'x', onclick: f}, 'text', child). */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const serverNow = () => Date.now() + state.skew;

/** "just now", "12 s ago", "3 min ago"... relative to the relay's clock. */
function ago(ms) {
  if (!ms) return 'never';
  const s = Math.max(0, Math.round((serverNow() - ms) / 1000));
  if (s < 2) return 'just now';
  if (s < 90) return `${s} s ago`;
  const m = Math.round(s / 60);
  if (m < 90) return `${m} min ago`;
  const hr = Math.round(m / 60);
  if (hr < 36) return `${hr} h ago`;
  return `${Math.round(hr / 24)} d ago`;
}

/** Local time; the date only when it is not today (the title has the full one). */
function fmtTime(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  if (d.toDateString() === new Date().toDateString()) return time;
  return `${d.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${time}`;
}

const fullTime = (ms) => (ms ? new Date(ms).toLocaleString() : '');

/** A <time> whose text ticks every second (see tick()). */
function agoEl(ms, prefix = '') {
  return h('time', {
    datetime: ms ? new Date(ms).toISOString() : null,
    title: fullTime(ms),
    dataset: { ago: String(ms || 0), prefix },
  }, prefix + ago(ms));
}

function tick() {
  for (const el of $$('[data-ago]')) {
    const text = el.dataset.prefix + ago(Number(el.dataset.ago));
    if (el.textContent !== text) el.textContent = text;
  }
}

/** A table cell that stacks under its column name on phones (see app.css). */
function td(label, ...children) {
  return h('td', { 'data-label': label, class: label === 'Result' ? 'result' : null },
    h('div', { class: 'cell' }, ...children));
}

function badge(text, kind = '') {
  return h('span', { class: `badge ${kind}` }, text);
}

function statusBadge(status) {
  return h('span', { class: `badge status ${status}` },
    h('span', { class: 'dot', 'aria-hidden': 'true' }), status);
}

/** Show or clear an inline error paragraph. */
function setError(el, message) {
  if (!el) return;
  el.textContent = message || '';
  el.hidden = !message;
}

function announce(message, kind = 'ok') {
  $('#announce').textContent = message;
  const toast = h('div', { class: `toast ${kind}` }, message);
  $('#toasts').append(toast);
  setTimeout(() => toast.remove(), 5000);
}

/** Paths relative to baseDir when inside it, so cards stay short. */
function relPath(path, base) {
  if (!path) return '';
  if (!base) return path;
  const b = base.replace(/\/+$/, '');
  if (path === b) return '.';
  if (path.startsWith(b + '/')) return path.slice(b.length + 1);
  return path;
}

function joinPath(base, rel) {
  const b = (base || '').replace(/\/+$/, '');
  return rel ? `${b}/${rel.replace(/^\/+/, '')}` : b;
}

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const token = () => sessionStorage.getItem(TOKEN_KEY) || '';

function noteServerDate(res) {
  const date = Date.parse(res.headers.get('Date') || '');
  if (Number.isNaN(date)) return;
  const skew = date - Date.now();
  // The Date header has 1 s resolution: only trust it for real skew.
  state.skew = Math.abs(skew) > 2000 ? skew : 0;
}

/** fetch() the relay; throws ApiError carrying the relay's own error sentence. */
async function api(method, path, body, { signal } = {}) {
  const headers = { Accept: 'application/json' };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, 'The relay could not be reached. Is it running?');
  }
  noteServerDate(res);
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (res.status === 401) {
    askForToken(token() ? 'That token was not accepted. Check it and try again.' : '');
    throw new ApiError(401, (data && data.error) || 'This relay needs a token.');
  }
  if (!res.ok) {
    throw new ApiError(res.status, (data && data.error) || `The relay answered ${res.status} ${res.statusText}.`);
  }
  return data;
}

const asList = (data, key) => (Array.isArray(data) ? data : (data && data[key]) || []);

// ---------------------------------------------------------------- token

function askForToken(message) {
  const box = $('#auth');
  const wasHidden = box.hidden;
  box.hidden = false;
  setError($('#auth-error'), message);
  setStream('auth');
  if (wasHidden) $('#auth-token').focus();
}

function initAuth() {
  $('#auth-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const value = $('#auth-token').value.trim();
    // Empty forgets a stored token (a relay restarted without --token refuses stale ones).
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
    setError($('#auth-error'), '');
    try {
      await api('GET', '/api/orchestrators');
    } catch (err) {
      if (err.status === 401 && !value) setError($('#auth-error'), 'This relay needs a token.');
      else if (err.status !== 401) setError($('#auth-error'), err.message);
      return;
    }
    $('#auth').hidden = true;
    $('#auth-token').value = '';
    start();
  });
}

// ---------------------------------------------------------------- stream

let source = null;
let buffer = null; // events held back while a snapshot loads
let syncing = false; // a snapshot is being (re)loaded under an open stream
let reopenTimer = null;
let reopenDelay = 1000;

const STREAM_TEXT = {
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Stream down · reconnecting…',
  down: 'Stream down · retrying…',
  auth: 'Waiting for token',
};

function setStream(s) {
  const el = $('#stream');
  if (el.dataset.state === s) return;
  el.dataset.state = s;
  $('#stream-text').textContent = STREAM_TEXT[s] || s;
}

function streamUrl() {
  const params = new URLSearchParams();
  if (token()) params.set('token', token());
  if (state.lastEventId != null) params.set('since', String(state.lastEventId));
  const q = params.toString();
  return `/api/events${q ? `?${q}` : ''}`;
}

/** Raised when the stream is refused before it ever opened (404, 401, 5xx). */
class StreamClosedError extends Error {}

/**
 * Open the one EventSource; resolves when it is open, rejects if the relay
 * refuses it outright. Later drops are handled here, not by the caller.
 */
function openStream() {
  if (source) source.close();
  clearTimeout(reopenTimer);
  setStream(state.lastEventId == null ? 'connecting' : 'reconnecting');
  const es = new EventSource(streamUrl());
  source = es;
  let opened = false;
  return new Promise((resolve, reject) => {
    es.onopen = () => {
      reopenDelay = 1000;
      if (!opened) {
        opened = true;
        resolve();
      } else if (state.lastEventId == null) {
        resync(); // reconnected natively but had no position to resume from
      }
      // "Live" means up to date: while a snapshot loads, resync() says it when done.
      if (!syncing) setStream('live');
    };
    es.onerror = () => {
      if (source !== es) return;
      if (es.readyState !== EventSource.CLOSED) {
        setStream('reconnecting'); // the browser retries, with Last-Event-ID
        return;
      }
      es.close();
      if (!opened) {
        reject(new StreamClosedError('The live stream was refused.'));
        return;
      }
      // The browser gave up (a non-200 answer): we retry ourselves.
      setStream('down');
      scheduleReopen();
    };
    for (const name of EVENT_NAMES) es.addEventListener(name, onStreamEvent);
  });
}

function scheduleReopen() {
  clearTimeout(reopenTimer);
  reopenTimer = setTimeout(() => {
    reopenDelay = Math.min(reopenDelay * 2, 15000);
    if (state.lastEventId == null || !state.loaded) {
      // Nothing to resume from (or no snapshot yet): start over.
      start();
      return;
    }
    openStream().catch(async () => {
      setStream('down');
      const status = await probeStream();
      if (status === 401) {
        askForToken(token() ? 'That token was not accepted. Check it and try again.' : '');
        return; // start() runs again once a token is given
      }
      if (status === 409) {
        // The relay cannot resume from our position (its log was reset or
        // restored): reload everything and follow from now.
        setError($('#load-error'), '');
        announce('The relay cannot resume from where this page was; reloaded the fleet.', 'warn');
        start();
        return;
      }
      scheduleReopen();
    });
  }, reopenDelay);
}

/**
 * Why the stream was refused: an EventSource never tells, so ask with fetch
 * and drop the connection as soon as the status is known.
 */
async function probeStream() {
  const ctrl = new AbortController();
  try {
    const res = await fetch(streamUrl(), { headers: { Accept: 'text/event-stream' }, signal: ctrl.signal });
    return res.status;
  } catch {
    return 0;
  } finally {
    ctrl.abort();
  }
}

/**
 * An SSE id as [position, index]: "P.K" is [P, K]; a bare "P" is the position's
 * last event, [P, Infinity]. null for anything else.
 */
function parseEventId(id) {
  const m = /^(\d+)(?:\.(\d+))?$/.exec(id || '');
  if (!m) return null;
  return [Number(m[1]), m[2] === undefined ? Infinity : Number(m[2])];
}

function idBefore(a, b) {
  return a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);
}

function onStreamEvent(ev) {
  // Every event has its own id (P.0, P.1, ..., P for one position's events), so
  // "seen already" is an id not after the newest one seen.
  const key = parseEventId(ev.lastEventId);
  const seen = parseEventId(state.lastEventId);
  if (key && seen && !idBefore(seen, key)) return; // seen already
  if (key) state.lastEventId = ev.lastEventId;
  const pos = key ? key[0] : null;
  let data;
  try { data = JSON.parse(ev.data); } catch { return; }
  if (buffer) buffer.push([ev.type, data]);
  else applyEvent(ev.type, data);
  if (pos != null && pos > history.head) history.head = pos;
  scheduleRender();
  if (state.view === 'history') scheduleLogRefresh();
}

function applyEvent(type, data) {
  switch (type) {
    case 'agent.status': state.agents.set(data.id, data); break;
    case 'agent.removed': state.agents.delete(data.id); break;
    case 'orchestrator.status': state.orchestrators.set(data.id, data); break;
    case 'orchestrator.removed':
      // The relay forgets a removed host's commands too; mirror it.
      state.orchestrators.delete(data.id);
      for (const [id, c] of state.commands) if (c.orchestratorId === data.id) state.commands.delete(id);
      break;
    case 'orchestrator.command': state.commands.set(data.id, data); break;
    case 'orchestrator.attention': attentionChanged(data); break;
    case 'system.reaper': state.reaper = data; break;
    default: break;
  }
}

// ---------------------------------------------------------------- loading

let starting = null;

/** Open the stream, then load the snapshot underneath it (see top of file). */
function start() {
  if (starting) return starting;
  starting = (async () => {
    state.lastEventId = null;
    syncing = true;
    try {
      await openStream();
      await resync();
      setError($('#load-error'), '');
    } catch (err) {
      if (err.status === 401) return; // the token form is up; it calls start() again
      let message = err.message;
      if (err instanceof StreamClosedError) {
        // Show the fleet anyway and keep trying for the live stream.
        setStream('down');
        try {
          await loadSnapshot();
          state.loaded = true;
          message = 'The live stream is unavailable; showing a snapshot and retrying.';
        } catch (err2) {
          if (err2.status === 401) return;
          message = err2.message;
        }
      }
      setError($('#load-error'), message);
      scheduleReopen();
    } finally {
      syncing = false;
      starting = null;
      scheduleRender();
    }
  })();
  return starting;
}

/** Reload the lists while holding back stream events, then replay them on top. */
async function resync() {
  buffer = [];
  syncing = true;
  try {
    await loadSnapshot();
    for (const [type, data] of buffer) applyEvent(type, data);
    state.loaded = true;
    if (source && source.readyState === EventSource.OPEN) setStream('live');
  } finally {
    buffer = null;
    syncing = false;
    scheduleRender();
  }
}

async function loadSnapshot() {
  const [orchs, agents, health] = await Promise.all([
    api('GET', '/api/orchestrators'),
    api('GET', '/api/agents'),
    api('GET', '/api/health').catch(() => null),
  ]);
  state.reaper = reaperFromHealth(health);
  state.orchestrators = new Map(asList(orchs, 'orchestrators').map((o) => [o.id, o]));
  state.agents = new Map(asList(agents, 'agents').map((a) => [a.id, a]));
  const lists = await Promise.all([...state.orchestrators.keys()].map((id) => (
    api('GET', `/api/orchestrators/${encodeURIComponent(id)}/commands`).catch(() => [])
  )));
  const commands = new Map();
  for (const list of lists) for (const c of asList(list, 'commands')) commands.set(c.id, c);
  state.commands = commands;
}

// ---------------------------------------------------------------- rendering

let renderQueued = false;

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  setTimeout(() => { renderQueued = false; render(); }, 0);
}

/**
 * Keyed update of a container's children: unchanged items keep their node
 * (and focus); a changed item is rebuilt and focus moves to its twin control.
 */
function reconcile(container, items, keyOf, sigOf, build) {
  const old = new Map();
  for (const el of [...container.children]) old.set(el.dataset.key, el);
  const active = document.activeElement;
  let refocus = null;
  const nodes = items.map((item) => {
    const key = keyOf(item);
    const sig = sigOf(item);
    const prev = old.get(key);
    old.delete(key);
    if (prev && prev._sig === sig) return prev;
    const el = build(item);
    el.dataset.key = key;
    el._sig = sig;
    if (prev) {
      if (active && prev.contains(active) && active.dataset.fkey) refocus = active.dataset.fkey;
      prev.replaceWith(el);
    }
    return el;
  });
  for (const el of old.values()) el.remove();
  nodes.forEach((node, i) => {
    if (container.children[i] !== node) container.insertBefore(node, container.children[i] || null);
  });
  if (refocus) {
    const target = container.querySelector(`[data-fkey="${CSS.escape(refocus)}"]`);
    if (target) target.focus();
  }
}

function render() {
  renderNav();
  renderReaper();
  renderOrchestrators();
  if (state.view === 'inbox') renderInbox();
  renderNotifyButton();
  processNotices();
  if (state.view === 'agent') renderAgentView();
  if (state.view === 'commands') renderCommands();
  if (state.view === 'agents') renderAgents();
  if (state.view === 'history') renderHistory();
  refreshSpawnDialog();
}

const orchList = () => [...state.orchestrators.values()].sort((a, b) => (
  (a.hostname || '').localeCompare(b.hostname || '') || a.id.localeCompare(b.id)
));

function renderNav() {
  const orchs = [...state.orchestrators.values()];
  const online = orchs.filter((o) => o.status === 'online').length;
  const oc = $('#nav-orch-count');
  oc.textContent = `${online}/${orchs.length}`;
  oc.setAttribute('aria-label', `${online} of ${orchs.length} online`);
  oc.classList.toggle('good', online > 0);
  const pending = [...state.commands.values()].filter((c) => c.status === 'pending').length;
  const cc = $('#nav-cmd-count');
  cc.hidden = pending === 0;
  cc.textContent = String(pending);
  cc.setAttribute('aria-label', `${pending} pending`);
  $('#nav-agent-count').textContent = String(state.agents.size);
  const waiting = waitingForInput().length;
  const ic = $('#nav-input-count');
  ic.hidden = waiting === 0;
  ic.textContent = String(waiting);
  ic.setAttribute('aria-label', `${waiting} waiting for input`);
  // The tab's title counts them too: visible from another tab or window.
  const here = state.view === 'agent' ? agentTitle() : VIEW_TITLES[state.view];
  const title = `${waiting ? `(${waiting}) ` : ''}relay · ${here}`;
  if (document.title !== title) document.title = title;
  for (const a of $$('.tabs a')) {
    if (a.dataset.view === state.view) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

// --- orchestrators

function matchesFilter(o, f) {
  if (!f) return true;
  const hay = [o.hostname, o.id, o.baseDir, ...(o.providers || []),
    ...(o.managedAgents || []).flatMap((m) => [m.label, m.tmuxSession, m.agentId, m.cwd])]
    .filter(Boolean).join(' ').toLowerCase();
  return hay.includes(f.toLowerCase());
}

function pendingFor(orchId) {
  return [...state.commands.values()]
    .filter((c) => c.orchestratorId === orchId && OPEN_COMMAND.includes(c.status))
    .sort((a, b) => (a.requestedAt || 0) - (b.requestedAt || 0));
}

function renderOrchestrators() {
  const all = orchList();
  const shown = all.filter((o) => matchesFilter(o, state.orchFilter));
  $('#orch-empty').hidden = !state.loaded || all.length > 0;
  $('#orch-nomatch').hidden = all.length === 0 || shown.length > 0;
  $('#spawn-open').disabled = !all.some((o) => o.status === 'online');
  const host = $('#host-cmd');
  const cmd = `relay host --relay ${location.origin} --id ID --base-dir DIR --provider claude=claude`;
  if (host.textContent !== cmd) host.textContent = cmd;
  const sigExtra = (o) => JSON.stringify([
    pendingFor(o.id),
    [...state.errors].filter(([k]) => k.startsWith(`${o.id}\u0000`)),
    [...state.busy].filter((k) => k.startsWith(`${o.id}\u0000`)),
    state.openDetails.has(`env:${o.id}`),
  ]);
  reconcile($('#orch-list'), shown, (o) => o.id, (o) => JSON.stringify(o) + sigExtra(o),
    (o) => orchCard(o, { live: true }));
}

const ckey = (orchId, what) => `${orchId}\u0000${what}`;

function orchCard(o, { live }) {
  const online = o.status === 'online';
  const managed = o.managedAgents || [];
  const envKeys = o.envKeys || [];
  const envKey = `env:${o.id}`;
  const envDetails = h('details', { class: 'env', open: live && state.openDetails.has(envKey) },
    h('summary', { dataset: { fkey: `${o.id}:env` } },
      `${envKeys.length} env var${envKeys.length === 1 ? '' : 's'}`),
    envKeys.length ? h('ul', { class: 'env-keys' }, envKeys.map((k) => h('li', {}, h('code', {}, k))))
      : h('p', { class: 'muted' }, 'No environment variables are passed to agents.'));
  if (live) {
    envDetails.addEventListener('toggle', () => {
      if (envDetails.open) state.openDetails.add(envKey); else state.openDetails.delete(envKey);
    });
  }
  const pending = live ? pendingFor(o.id) : [];
  const removeKey = ckey(o.id, 'remove');
  return h('article', { class: `card orch ${o.status}`, 'aria-label': `Orchestrator ${o.hostname || o.id}` },
    h('header', { class: 'card-head' },
      h('div', { class: 'titles' },
        h('h2', { class: 'host' }, o.hostname || o.id),
        h('div', { class: 'sub' }, h('span', { class: 'muted' }, 'id '), h('code', { class: 'orch-id' }, o.id))),
      statusBadge(o.status)),
    h('dl', { class: 'facts' },
      h('div', {}, h('dt', {}, 'Base dir'), h('dd', {}, h('code', { class: 'basedir' }, o.baseDir || '–'))),
      h('div', {}, h('dt', {}, 'Providers'), h('dd', { class: 'providers' },
        (o.providers || []).map((p) => badge(p, `provider ${p}`)))),
      h('div', {}, h('dt', {}, 'Env'), h('dd', {}, envDetails)),
      h('div', {}, h('dt', {}, 'Capacity'), h('dd', {}, capacityEl(o))),
      Object.keys(o.labels || {}).length ? h('div', {}, h('dt', {}, 'Labels'), h('dd', { class: 'labels' },
        Object.entries(o.labels).sort().map(([k, v]) => badge(`${k}=${v}`, 'tag')))) : null,
      h('div', {}, h('dt', {}, 'Last seen'), h('dd', { class: 'last-seen' },
        live ? agoEl(o.lastSeen) : h('time', { title: fmtTime(o.lastSeen) }, fmtTime(o.lastSeen))))),
    h('section', { class: 'managed', 'aria-label': `Managed agents on ${o.hostname || o.id}` },
      h('h3', {}, `Managed agents `, h('span', { class: 'count' }, String(managed.length))),
      managed.length === 0 ? h('p', { class: 'muted' }, 'None running.') : h('ul', { class: 'managed-list' },
        managed.map((m) => managedRow(o, m, live)))),
    pending.length ? h('section', { class: 'pending-cmds', 'aria-label': 'Pending commands' },
      h('h3', {}, 'Pending'),
      h('ul', {}, pending.map((c) => h('li', { class: 'pending-cmd' },
        h('span', { class: 'spinner', 'aria-hidden': 'true' }), commandSummary(c, o),
        c.status === 'running' ? ' · started' : null, ' · ', agoEl(c.requestedAt))))) : null,
    live ? h('footer', { class: 'card-foot' },
      h('button', {
        type: 'button', class: 'primary', disabled: !online, dataset: { fkey: `${o.id}:spawn` },
        title: online ? null : 'This orchestrator is offline',
        onclick: () => openSpawn(o.id),
      }, 'Spawn…'),
      h('button', {
        type: 'button', class: 'ghost danger-text', dataset: { fkey: `${o.id}:remove` },
        disabled: state.busy.has(removeKey), onclick: () => confirmRemove(o),
      }, 'Remove'),
      inlineError(removeKey)) : null);
}

function inlineError(key) {
  const msg = state.errors.get(key);
  return msg ? h('p', { class: 'error', role: 'alert' }, msg) : null;
}

function managedRow(o, m, live) {
  const name = m.label || m.tmuxSession || m.agentId;
  const online = o.status === 'online';
  const actions = ['restart', 'shutdown'].map((action) => {
    const key = ckey(o.id, `${action}:${m.agentId}`);
    const busy = state.busy.has(key);
    const label = action === 'restart' ? 'Restart' : 'Shutdown';
    return h('button', {
      type: 'button', class: `small ${action === 'shutdown' ? 'danger-text' : ''}`,
      disabled: busy || !online, dataset: { fkey: `${o.id}:${action}:${m.agentId}` },
      'aria-label': `${label} ${name}`, title: online ? null : 'This orchestrator is offline',
      onclick: () => (action === 'shutdown' ? confirmShutdown(o, m) : runAction(o, m, action)),
    }, busy ? `${label}…` : label);
  });
  const errs = ['restart', 'shutdown'].map((a) => inlineError(ckey(o.id, `${a}:${m.agentId}`)));
  const st = agentState(m);
  return h('li', {
    class: `managed-agent state-${st}${m.attention ? ` attn-${m.attention}` : ''}`,
    dataset: { agent: m.agentId, state: st, attention: m.attention || '' },
  },
    h('div', { class: 'm-main' },
      stateBadge(st),
      live ? h('a', {
        class: 'm-name', href: agentHash(o.id, m.agentId), dataset: { fkey: `${o.id}:open:${m.agentId}` },
        title: 'Open its terminal',
      }, name) : h('span', { class: 'm-name' }, name),
      badge(m.provider, `provider ${m.provider}`),
      m.approvalMode && m.approvalMode !== 'guarded' ? badge(m.approvalMode, 'mode') : null,
      attentionBadge(m)),
    h('div', { class: 'm-sub' },
      h('code', { class: 'm-cwd', title: m.cwd }, relPath(m.cwd, o.baseDir)),
      m.branch ? h('span', { class: 'm-branch', title: m.worktree || '' }, ' · worktree ', h('code', {}, m.branch)) : null,
      m.tmuxSession && m.label ? h('span', { class: 'muted' }, ` · tmux ${m.tmuxSession}`) : null,
      m.startedAt ? h('span', { class: 'muted' }, ' · started ', live ? agoEl(m.startedAt) : fmtTime(m.startedAt)) : null),
    crashNote(m, live),
    live ? h('div', { class: 'm-actions' }, actions) : null,
    live ? errs : null);
}

function commandSummary(c, o) {
  const orch = o || state.orchestrators.get(c.orchestratorId);
  const target = c.agentId
    ? (orch?.managedAgents || []).find((m) => m.agentId === c.agentId)?.label || c.agentId
    : null;
  if (c.kind === 'spawn') {
    const where = c.cwd ? ` in ${relPath(c.cwd, orch?.baseDir)}` : '';
    return `spawn ${c.provider || ''}${c.label ? ` “${c.label}”` : ''}${where}`;
  }
  if (c.kind === 'input') return `input ${inputText(c)} to ${target}`;
  return `${c.kind} ${target || 'all agents'}`;
}

async function withBusy(key, fn) {
  state.busy.add(key);
  state.errors.delete(key);
  scheduleRender();
  try {
    return await fn();
  } catch (err) {
    state.errors.set(key, err.message);
    throw err;
  } finally {
    state.busy.delete(key);
    scheduleRender();
  }
}

async function runAction(o, m, action) {
  const key = ckey(o.id, `${action}:${m.agentId}`);
  try {
    const res = await withBusy(key, () => api('POST',
      `/api/orchestrators/${encodeURIComponent(o.id)}/actions`, { action, agentId: m.agentId }));
    if (res && res.command) state.commands.set(res.command.id, res.command);
    announce(`${action === 'restart' ? 'Restart' : 'Shutdown'} of ${m.label || m.tmuxSession || m.agentId} requested.`);
  } catch { /* shown inline */ }
}

// --- confirmation dialog

let confirmAction = null;

function openConfirm({ title, body, ok, run }) {
  const dlg = $('#confirm-dialog');
  $('#confirm-title').textContent = title;
  $('#confirm-body').replaceChildren(...body.filter(Boolean));
  $('#confirm-ok').textContent = ok;
  setError($('#confirm-error'), '');
  confirmAction = { run };
  const opener = document.activeElement;
  dlg.addEventListener('close', () => { if (opener && opener.isConnected) opener.focus(); }, { once: true });
  dlg.showModal();
  $('#confirm-dialog [data-close]').focus();
}

function initConfirm() {
  const dlg = $('#confirm-dialog');
  $('#confirm-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!confirmAction) return;
    const btn = $('#confirm-ok');
    btn.disabled = true;
    try {
      await confirmAction.run();
      confirmAction = null;
      dlg.close();
    } catch (err) {
      setError($('#confirm-error'), err.message);
    } finally {
      btn.disabled = false;
    }
  });
  $('#confirm-dialog [data-close]').addEventListener('click', () => dlg.close());
}

function confirmRemove(o) {
  const n = (o.managedAgents || []).length;
  openConfirm({
    title: `Remove ${o.hostname || o.id}?`,
    body: [
      h('p', {}, 'This removes the orchestrator ', h('code', {}, o.id), ' and its agent record from the relay.'),
      h('p', { class: 'notice' }, n
        ? `Its ${n} managed agent${n === 1 ? '' : 's'} keep running on the host; nothing is stopped.`
        : 'Managed agents keep running on the host; nothing is stopped.'),
      h('p', { class: 'muted' }, 'If its host daemon is still running, it will register again.'),
    ],
    ok: 'Remove',
    run: async () => {
      await api('DELETE', `/api/orchestrators/${encodeURIComponent(o.id)}`);
      state.orchestrators.delete(o.id);
      scheduleRender();
      announce(`${o.hostname || o.id} removed.`);
    },
  });
}

function confirmShutdown(o, m) {
  const name = m.label || m.tmuxSession || m.agentId;
  const remove = m.worktree ? h('input', { type: 'checkbox', id: 'confirm-remove-worktree' }) : null;
  openConfirm({
    title: `Shut down ${name}?`,
    body: [h('p', {}, 'The host stops this ', h('b', {}, m.provider), ' agent and its tmux session ',
      h('code', {}, m.tmuxSession || m.agentId), '. Work not saved by the agent is lost.'),
    remove ? h('label', { class: 'check' }, remove,
      ' Also remove its worktree ', h('code', {}, m.branch || m.worktree),
      ' if it has no uncommitted changes (the branch is kept)') : null],
    ok: 'Shut down',
    run: async () => {
      const key = ckey(o.id, `shutdown:${m.agentId}`);
      const body = { action: 'shutdown', agentId: m.agentId };
      if (remove?.checked) body.removeWorktree = true;
      const res = await withBusy(key, () => api('POST',
        `/api/orchestrators/${encodeURIComponent(o.id)}/actions`, body))
        .catch((err) => { state.errors.delete(key); throw err; });
      if (res && res.command) state.commands.set(res.command.id, res.command);
      announce(`Shutdown of ${name} requested.`);
    },
  });
}

// --- spawn dialog

const spawn = { orchId: null, dirsFor: null, dirFilter: '' };
const SPAWN_ERRORS = ['#spawn-error', '#spawn-cwd-error', '#spawn-provider-error', '#spawn-prompt-error',
  '#spawn-label-error', '#spawn-worktree-error', '#spawn-resume-error'];

function onlineOrchs() {
  return orchList().filter((o) => o.status === 'online');
}

function openSpawn(orchId) {
  const dlg = $('#spawn-dialog');
  const online = onlineOrchs();
  spawn.orchId = online.some((o) => o.id === orchId) ? orchId : online[0]?.id || null;
  spawn.dirsFor = null;
  $('#spawn-form').reset();
  for (const id of SPAWN_ERRORS) setError($(id), '');
  $('#spawn-branch').disabled = true;
  const opener = document.activeElement;
  dlg.addEventListener('close', () => { if (opener && opener.isConnected) opener.focus(); }, { once: true });
  refreshSpawnDialog(true);
  dlg.showModal();
  (spawn.orchId ? $('#spawn-orch') : $('#spawn-dialog [data-close]')).focus();
}

/** Keep the dialog true to the fleet while it is open (hosts come and go). */
function refreshSpawnDialog(reset = false) {
  const dlg = $('#spawn-dialog');
  if (!dlg.open && !reset) return;
  const online = onlineOrchs();
  const sel = $('#spawn-orch');
  const sig = JSON.stringify(online.map((o) => [o.id, o.hostname]));
  if (sel.dataset.sig !== sig || reset) {
    sel.replaceChildren(...online.map((o) => h('option', { value: o.id },
      o.hostname && o.hostname !== o.id ? `${o.hostname} (${o.id})` : o.id)));
    sel.dataset.sig = sig;
  }
  const wasOffline = spawn.orchId && !online.some((o) => o.id === spawn.orchId);
  if (spawn.orchId && !wasOffline) sel.value = spawn.orchId;
  $('#spawn-none').hidden = online.length > 0;
  if (wasOffline) {
    $('#spawn-none').hidden = false;
    $('#spawn-none').textContent = 'The chosen orchestrator went offline. Pick another one, or wait for it to come back.';
  } else {
    $('#spawn-none').textContent = 'No orchestrator is online. Start a host daemon, or wait for one to come back.';
  }
  sel.disabled = online.length === 0;
  $('#spawn-submit').disabled = online.length === 0 || wasOffline;
  const o = state.orchestrators.get(spawn.orchId);
  fillSpawnFor(o, reset);
}

function fillSpawnFor(o, reset) {
  const provBox = $('#spawn-providers');
  const providers = o?.providers || [];
  const current = $('input[name=provider]:checked', provBox)?.value;
  const psig = JSON.stringify([o?.id, providers]);
  if (provBox.dataset.sig !== psig || reset) {
    provBox.replaceChildren(...providers.map((p, i) => h('label', { class: 'choice inline' },
      h('input', {
        type: 'radio', name: 'provider', value: p,
        checked: current ? current === p : i === 0,
        onchange: updatePromptField,
      }), ' ', badge(p, `provider ${p}`))));
    if (!$('input[name=provider]:checked', provBox) && providers.length) {
      $('input[name=provider]', provBox).checked = true;
    }
    provBox.dataset.sig = psig;
  }
  if (!providers.length) provBox.replaceChildren(h('p', { class: 'muted' }, 'Choose an orchestrator first.'));
  updatePromptField();
  const base = o?.baseDir || '';
  $('#spawn-orch-hint').textContent = o
    ? `${o.hostname || o.id} · base directory ${base} · ${o.managedAgents?.length || 0} agent(s) running` : '';
  if (spawn.dirsFor !== o?.id) {
    spawn.dirsFor = o?.id ?? null;
    spawn.dirFilter = '';
    $('#spawn-cwd').value = base;
    renderDirs(o);
  }
}

function updatePromptField() {
  const provider = $('#spawn-providers input[name=provider]:checked')?.value;
  const field = $('#spawn-prompt-field');
  field.hidden = provider !== 'claude';
}

const FOLDER_ICON = '<svg viewBox="0 0 16 16" width="14" height="14" aria-hidden="true">'
  + '<path fill="currentColor" d="M1.5 3h4.2l1.5 1.5h7.3v8.5h-13z" opacity=".85"/></svg>';

/** The host's directories (meta.dirs) as a list to pick from; typing narrows it. */
function renderDirs(o) {
  const box = $('#spawn-dirs');
  const base = o?.baseDir || '';
  const dirs = Array.isArray(o?.meta?.dirs) ? o.meta.dirs.filter((d) => typeof d === 'string') : null;
  const hint = $('#spawn-cwd-hint');
  if (!o) { box.replaceChildren(); hint.textContent = ''; return; }
  if (!dirs) {
    hint.textContent = `Inside ${base}, absolute or relative to it. This host does not report its directories; the relay checks the path.`;
    box.replaceChildren();
    return;
  }
  hint.textContent = `Inside ${base}: pick a directory below, or type a path (absolute or relative to it).`;
  const typed = $('#spawn-cwd').value.trim();
  const filter = spawn.dirFilter;
  const sorted = [...new Set(dirs)].sort();
  const shown = sorted.filter((d) => !filter || d.toLowerCase().includes(filter.toLowerCase()));
  const choose = (path) => {
    $('#spawn-cwd').value = path;
    spawn.dirFilter = '';
    setError($('#spawn-cwd-error'), '');
    renderDirs(o);
  };
  const item = (label, path, depth) => {
    const btn = h('button', {
      type: 'button', class: `dir depth-${depth}`, 'aria-pressed': String(typed === path),
      title: path, onclick: () => choose(path),
    }, h('span', { class: 'folder' }), label);
    btn.firstChild.innerHTML = FOLDER_ICON;
    return h('li', {}, btn);
  };
  const notes = [];
  if (sorted.length === 0) notes.push(h('p', { class: 'muted' }, 'The host reports no subdirectories.'));
  if (shown.length > 300) notes.push(h('p', { class: 'muted' }, `${shown.length - 300} more: type to narrow.`));
  if (o.meta.dirsTruncated) notes.push(h('p', { class: 'muted' }, 'The host listed only part of its directories; type a path for the others.'));
  if (filter && shown.length === 0) notes.push(h('p', { class: 'muted' }, `No listed directory matches “${filter}”.`));
  box.replaceChildren(h('ul', { class: 'dir-list' },
    filter ? null : item(`${base} (base)`, base, 0),
    shown.slice(0, 300).map((d) => item(d, joinPath(base, d), Math.min(d.split('/').length, 3)))),
  ...notes);
}

function initSpawn() {
  const dlg = $('#spawn-dialog');
  $('#spawn-open').addEventListener('click', () => openSpawn(null));
  for (const b of $$('#spawn-dialog [data-close]')) b.addEventListener('click', () => dlg.close());
  $('#spawn-orch').addEventListener('change', (ev) => {
    spawn.orchId = ev.target.value;
    refreshSpawnDialog();
  });
  $('#spawn-cwd').addEventListener('input', () => {
    setError($('#spawn-cwd-error'), '');
    const o = state.orchestrators.get(spawn.orchId);
    const typed = $('#spawn-cwd').value.trim();
    const rel = relPath(typed, o?.baseDir);
    spawn.dirFilter = rel === '.' || rel === typed ? (typed.startsWith('/') ? '' : typed) : rel;
    renderDirs(state.orchestrators.get(spawn.orchId));
  });
  $('#spawn-worktree').addEventListener('change', (ev) => {
    $('#spawn-branch').disabled = !ev.target.checked;
    setError($('#spawn-worktree-error'), '');
  });
  $('#spawn-prompt').addEventListener('input', (ev) => {
    $('#spawn-prompt-count').textContent = `${ev.target.value.length} / 4000`;
  });
  $('#spawn-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const o = state.orchestrators.get(spawn.orchId);
    if (!o) return;
    for (const id of SPAWN_ERRORS) setError($(id), '');
    const form = new FormData($('#spawn-form'));
    const provider = form.get('provider');
    if (!provider) { setError($('#spawn-provider-error'), 'Choose a provider.'); return; }
    const body = { provider, approvalMode: form.get('approvalMode') || 'guarded' };
    const cwd = String(form.get('cwd') || '').trim();
    if (cwd) body.cwd = cwd;
    const label = String(form.get('label') || '').trim();
    if (label) body.label = label;
    const prompt = String(form.get('prompt') || '').trim();
    if (prompt && provider === 'claude') body.prompt = prompt;
    if ($('#spawn-worktree').checked) {
      const branch = String(form.get('branch') || '').trim();
      body.worktree = branch ? { branch } : {};
    }
    const resume = String(form.get('resume') || '').trim();
    if (resume) body.resume = resume;
    const btn = $('#spawn-submit');
    btn.disabled = true;
    btn.textContent = 'Spawning…';
    try {
      const res = await api('POST', `/api/orchestrators/${encodeURIComponent(o.id)}/spawn`, body);
      if (res && res.command) state.commands.set(res.command.id, res.command);
      dlg.close();
      announce(`Spawn of ${provider} requested on ${o.hostname || o.id}.`);
      scheduleRender();
    } catch (err) {
      // Put the relay's sentence next to the field it names.
      const m = err.message.toLowerCase();
      const fields = [
        [/worktree|branch|\bgit\b/, '#spawn-worktree-error'],
        [/resume|session/, '#spawn-resume-error'],
        [/\bcwd\b|base ?dir|director/, '#spawn-cwd-error'],
        [/provider/, '#spawn-provider-error'],
        [/prompt/, '#spawn-prompt-error'],
        [/label/, '#spawn-label-error'],
      ];
      const target = fields.find(([re]) => re.test(m))?.[1] || '#spawn-error';
      setError($(target), err.message);
    } finally {
      btn.textContent = 'Spawn';
      refreshSpawnDialog();
    }
  });
}

// --- commands

function renderCommands() {
  const all = [...state.commands.values()].sort((a, b) => (b.requestedAt || 0) - (a.requestedAt || 0));
  const counts = { all: all.length, pending: 0, running: 0, done: 0, failed: 0, expired: 0 };
  for (const c of all) counts[c.status] = (counts[c.status] || 0) + 1;
  for (const k of Object.keys(counts)) {
    const el = $(`#cmd-n-${k}`);
    if (el) el.textContent = String(counts[k]);
  }
  for (const b of $$('[data-cmd-filter]')) b.setAttribute('aria-pressed', String(b.dataset.cmdFilter === state.cmdFilter));
  const shown = state.cmdFilter === 'all' ? all : all.filter((c) => c.status === state.cmdFilter);
  $('#cmd-empty').hidden = all.length > 0;
  $('#cmd-table').hidden = shown.length === 0;
  reconcile($('#cmd-list'), shown, (c) => c.id, (c) => JSON.stringify([c, state.orchestrators.get(c.orchestratorId)?.hostname]), commandRow);
}

function commandRow(c) {
  const o = state.orchestrators.get(c.orchestratorId);
  const result = c.result || {};
  const error = result.error || c.error;
  const details = [];
  if (c.kind === 'spawn') {
    if (c.approvalMode) details.push(c.approvalMode);
    if (c.worktree) details.push(`worktree ${c.worktree.branch || '(new branch)'}`);
    if (c.resume) details.push(`resumes ${c.resume}`);
    if (c.prompt) details.push(`prompt: ${c.prompt.length > 60 ? `${c.prompt.slice(0, 60)}…` : c.prompt}`);
  }
  if (c.removeWorktree) details.push('removes its worktree if clean');
  return h('tr', { class: `cmd ${c.status}`, dataset: { command: c.id } },
    td('Status', statusBadge(c.status)),
    td('Command', h('b', {}, c.kind), ' ', c.provider ? badge(c.provider, `provider ${c.provider}`) : null,
      h('div', { class: 'muted small-text' }, h('code', { title: c.id }, c.id.slice(0, 8)))),
    td('Host', o ? o.hostname || o.id : h('span', { class: 'muted' }, `${c.orchestratorId} (removed)`)),
    td('Target', c.kind === 'spawn'
      ? [c.label ? h('b', {}, c.label) : null, c.label ? ' ' : null,
        h('code', { title: c.cwd || o?.baseDir }, relPath(c.cwd || o?.baseDir || '', o?.baseDir) || '.'),
        details.length ? h('div', { class: 'muted small-text' }, details.join(' · ')) : null]
      : [agentLink(c.orchestratorId, c.agentId) || 'all agents',
        c.kind === 'input' ? h('div', { class: 'input-text' }, inputText(c)) : null,
        details.length ? h('div', { class: 'muted small-text' }, details.join(' · ')) : null]),
    td('Requested', agoEl(c.requestedAt), c.requestedBy ? h('div', { class: 'muted small-text' }, `by ${c.requestedBy}`) : null),
    td('Result',
      c.status === 'pending' ? h('span', { class: 'muted' }, 'waiting for the host…')
        : c.status === 'running' ? h('span', { class: 'muted' }, 'started on the host ', agoEl(c.startedAt), '…')
        : c.status === 'expired' ? expiredNote(c)
        : error ? h('span', { class: 'error-text' }, error)
          : h('span', {}, c.status === 'done' ? 'done' : c.status,
            result.agentId || c.resultAgentId ? [' · ', agentLink(c.orchestratorId, result.agentId || c.resultAgentId)] : '',
            result.at || result.completedAt ? [' · ', agoEl(result.at || result.completedAt)] : null)));
}

// --- fleet lifecycle (issue 15): capacity, agent states, expiry, the reaper's brake

const OPEN_COMMAND = ['pending', 'running'];
// One colour per state, the same in every view (app.css: --st-*).
const AGENT_STATES = {
  running: 'reported by its online host',
  unknown: 'its host is offline; it may still be running (for up to --lost-after)',
  lost: 'its host has been offline longer than --lost-after',
  crashloop: 'it kept exiting with a failure; the host stopped restarting it',
};

function agentState(m) {
  // An offline host's word is old news: unknown and lost come before crashloop.
  if (m.state === 'unknown' || m.state === 'lost') return m.state;
  return m.crashloop ? 'crashloop' : 'running';
}

function stateBadge(st) {
  return h('span', { class: `badge state state-${st}`, title: AGENT_STATES[st] }, st);
}

function exitText(status, signal) {
  if (status != null) return `exit status ${status}`;
  if (signal != null) return `signal ${signal}`;
  return 'an unknown exit';
}

function crashNote(m, live) {
  const loop = m.crashloop;
  if (loop) {
    return h('div', { class: 'm-crash', role: 'note' },
      `Crash loop: ${exitText(loop.exitStatus, loop.signal)} after ${loop.restarts} restart${loop.restarts === 1 ? '' : 's'}`,
      ' · ', live ? agoEl(loop.at) : fmtTime(loop.at), '. Restart starts it afresh.');
  }
  if (m.restarts) {
    const last = m.lastExit ? `, last ${exitText(m.lastExit.status, m.lastExit.signal)}` : '';
    return h('div', { class: 'm-restarts muted' }, `restarted ${m.restarts}×${last}`);
  }
  return null;
}

function capacityEl(o) {
  const active = o.activeAgents ?? (o.managedAgents || []).length;
  const max = o.maxAgents;
  if (!max) return h('span', { class: 'capacity' }, `${active} agent${active === 1 ? '' : 's'} · no limit`);
  const pct = Math.min(100, Math.round((100 * active) / max));
  const level = active >= max ? 'full' : pct >= 75 ? 'high' : 'ok';
  const fill = h('span', { class: 'fill' });
  fill.style.width = `${pct}%`; // CSSOM, not a style attribute: allowed under a strict CSP
  return h('span', { class: `capacity ${level}` },
    h('span', {
      class: 'bar', role: 'meter', 'aria-label': `Capacity of ${o.hostname || o.id}`,
      'aria-valuemin': '0', 'aria-valuemax': String(max), 'aria-valuenow': String(active),
      'aria-valuetext': `${active} of ${max} agents`,
    }, fill),
    h('span', { class: 'capacity-text' }, `${active} / ${max}`));
}

function expiredNote(c) {
  const e = c.expired || {};
  return h('span', { class: 'expired-text' }, `expired: ${e.reason || 'no reason given'}`,
    e.at ? [' · ', agoEl(e.at)] : null);
}

function reaperFromHealth(health) {
  const check = (health?.checks || []).find((ch) => ch.name === 'reaper');
  return check ? { suspended: check.status === 'suspended', detail: check.detail } : null;
}

function renderReaper() {
  const el = $('#reaper-banner');
  const r = state.reaper;
  el.hidden = !(r && r.suspended);
  if (el.hidden) return;
  const text = r.wouldReap != null
    ? `The reaper is suspended: ${r.wouldReap} of ${r.online} online hosts and agents went silent at once`
      + `${r.since ? ` (${fmtTime(r.since)})` : ''}. Nobody is marked offline until fewer are silent;`
      + ' POST /api/system/reap?force=true reaps anyway.'
    : `The reaper is suspended: ${r.detail || 'a mass outage was detected'}.`;
  if (el.textContent !== text) el.textContent = text;
}

// --- agents

function renderAgents() {
  const all = [...state.agents.values()].sort((a, b) => (
    (a.status === b.status ? 0 : a.status === 'online' ? -1 : 1)
    || (a.name || a.id).localeCompare(b.name || b.id)
  ));
  const online = all.filter((a) => a.status === 'online').length;
  $('#agent-n-all').textContent = String(all.length);
  $('#agent-n-online').textContent = String(online);
  $('#agent-n-offline').textContent = String(all.length - online);
  for (const b of $$('[data-agent-filter]')) b.setAttribute('aria-pressed', String(b.dataset.agentFilter === state.agentFilter));
  const shown = state.agentFilter === 'all' ? all : all.filter((a) => a.status === state.agentFilter);
  $('#agent-empty').hidden = all.length > 0;
  $('#agent-table').hidden = shown.length === 0;
  reconcile($('#agent-list'), shown, (a) => a.id, (a) => JSON.stringify(a), (a) => agentRow(a, true));
}

function agentRow(a, live) {
  const isHost = a.id.startsWith('orchestrator-') && state.orchestrators.has(a.id.slice('orchestrator-'.length));
  const name = a.label || a.name || a.id;
  return h('tr', { class: `agent ${a.status}`, dataset: { agent: a.id } },
    td('Status', statusBadge(a.status)),
    td('Agent', h('b', {}, name), isHost ? [' ', badge('host', 'host')] : null,
      name !== a.id ? h('div', { class: 'muted small-text' }, h('code', {}, a.id)) : null),
    td('Machine', a.machine || h('span', { class: 'muted' }, '–')),
    live ? td('Capabilities & tags',
      (a.capabilities || []).map((c) => badge(c, 'cap')), (a.tags || []).map((t) => badge(`#${t}`, 'tag'))) : null,
    td('Last seen', live ? agoEl(a.lastSeen) : fmtTime(a.lastSeen)));
}

// --- history

let logTimer = null;

function scheduleLogRefresh() {
  clearTimeout(logTimer);
  logTimer = setTimeout(() => loadLog(), 250);
}

/**
 * Where the timeline starts on first load: the latest LOG_PAGE events, not the
 * whole log (heartbeats make it long). The relay's health check reports its
 * read-model position; without it we read from the start.
 */
async function firstLogWindow() {
  try {
    const health = await api('GET', '/api/health');
    const rm = (health?.checks || []).find((c) => c.name === 'readModels');
    const position = Number(rm?.position);
    if (Number.isFinite(position) && position > LOG_PAGE) return position - LOG_PAGE;
  } catch { /* fall back to reading from the start */ }
  return 0;
}

/** Read the log forward from where we stopped; keeps the newest LOG_KEEP rows. */
function loadLog() {
  if (history.loading) return history.loading;
  history.loading = (async () => {
    try {
      if (!history.loadedOnce && history.events.length === 0 && history.after === 0) {
        history.after = await firstLogWindow();
        history.floor = history.after;
      }
      for (let pages = 0; pages < 400; pages += 1) {
        const data = await api('GET', `/api/log?after=${history.after}&limit=${LOG_PAGE}`);
        const events = asList(data, 'events');
        for (const e of events) history.events.push(e);
        trimLog();
        const last = events.length ? events[events.length - 1].position : null;
        const next = data && data.next != null ? Number(data.next) : last;
        if (last != null && last > history.head) history.head = last;
        if (next != null && next > history.after) history.after = next;
        if (events.length < LOG_PAGE || next == null) break;
      }
      history.loadedOnce = true;
      setError($('#log-error'), '');
    } catch (err) {
      setError($('#log-error'), `Could not read the log: ${err.message}`);
    } finally {
      history.loading = null;
      scheduleRender();
    }
  })();
  return history.loading;
}

function trimLog() {
  if (history.events.length <= LOG_KEEP) return;
  history.events.splice(0, history.events.length - LOG_KEEP);
  history.floor = history.events[0].position - 1;
}

/** One page of events before the oldest one shown. */
async function loadEarlier() {
  const first = history.events[0]?.position ?? history.after + 1;
  const after = Math.max(0, first - 1 - LOG_PAGE);
  const btn = $('#timeline-more');
  btn.disabled = true;
  try {
    const data = await api('GET', `/api/log?after=${after}&limit=${LOG_PAGE}`);
    const older = asList(data, 'events').filter((e) => e.position < first);
    history.events.unshift(...older);
    history.floor = after;
    setError($('#log-error'), '');
  } catch (err) {
    setError($('#log-error'), `Could not read the log: ${err.message}`);
  } finally {
    btn.disabled = false;
    scheduleRender();
  }
}

const isHeartbeat = (e) => /heartbeat/i.test(e.type || '');

function humanType(type) {
  const last = String(type || '').split(/[.:]/).filter(Boolean).pop() || String(type);
  const words = last.replace(/([a-z0-9])([A-Z])/g, '$1 $2').toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function eventFamily(e) {
  const t = String(e.type || '').toLowerCase();
  if (t.includes('command') || t.includes('spawn') || t.includes('action')) return 'command';
  if (e.entityKind) return String(e.entityKind);
  if (t.includes('orchestrator') || t.includes('managed')) return 'orchestrator';
  if (t.includes('agent')) return 'agent';
  return 'other';
}

function eventDetail(e) {
  const d = e.data || {};
  const bits = [];
  if (d.sender || d.recipient) {
    // A message's id says nothing to a person; who wrote to whom does.
    bits.push(`${d.sender || '?'} → ${d.recipient || d.to || '?'}`);
    if (d.subject) bits.push(`“${d.subject}”`);
  } else {
    const who = e.entityId || d.hostname || d.name || d.orchestratorId || d.agentId;
    if (who) bits.push(e.entityKind ? `${e.entityKind} ${who}` : String(who));
    if (d.hostname && d.hostname !== who) bits.push(d.hostname);
  }
  if (d.agentId && !d.sender && d.agentId !== e.entityId) bits.push(`agent ${d.agentId}`);
  if (d.attention) bits.push(`attention ${d.attention}`);
  if (typeof d.reason === 'string') bits.push(d.reason);
  if (typeof d.text === 'string') bits.push(inputText(d));
  if (d.provider) bits.push(d.provider);
  if (d.action) bits.push(d.action);
  if (d.status) bits.push(d.status);
  if (d.cwd) bits.push(d.cwd);
  if (d.label) bits.push(`“${d.label}”`);
  if (d.error) bits.push(`error: ${d.error}`);
  if (Array.isArray(d.agents)) bits.push(`${d.agents.length} managed agent(s)`);
  return bits.join(' · ');
}

function currentPos() {
  if (history.at == null) return history.head;
  return history.loadedOnce ? Math.min(history.at, history.head) : history.at;
}

function renderHistory() {
  const head = Math.max(history.head, (parseEventId(state.lastEventId) || [0])[0]);
  history.head = head;
  const pos = currentPos();
  const slider = $('#pos-slider');
  slider.max = String(head);
  if (document.activeElement !== slider) slider.value = String(pos);
  const input = $('#pos-input');
  input.max = String(head);
  if (document.activeElement !== input) input.value = String(pos);
  $('#pos-head').textContent = String(head);
  $('#pos-live').disabled = history.at == null;
  const mode = $('#pos-mode');
  mode.textContent = history.at == null ? 'live' : 'past';
  mode.className = `badge ${history.at == null ? 'live' : 'past'}`;
  const atEvent = history.events.find((e) => e.position === pos);
  $('#pos-when').textContent = atEvent ? `· ${fmtTime(atEvent.at)}` : '';
  $('#past-pos').textContent = String(pos);

  const rows = history.events.filter((e) => history.showHeartbeats || !isHeartbeat(e)).slice().reverse();
  reconcile($('#timeline'), rows, (e) => String(e.position),
    (e) => `${e.position}:${e.position === pos}:${e.position > pos}`, (e) => timelineRow(e, pos));
  if (history.reveal) {
    history.reveal = false;
    revealCurrent();
  }
  $('#timeline-more').hidden = !(history.floor > 0);
  $('#timeline-empty').hidden = rows.length > 0 || !history.loadedOnce;
  if (!history.loadedOnce) {
    if (!history.loading) loadLog();
    return; // the head is unknown until the log is read: don't show position 0 meanwhile
  }
  if (history.past?.pos !== pos && history.pastFor !== pos) loadPast(pos);
}

function timelineRow(e, pos) {
  const fam = eventFamily(e);
  return h('li', { class: `tl ${fam}${e.position === pos ? ' current' : ''}${e.position > pos ? ' later' : ''}` },
    h('button', {
      type: 'button', class: 'tl-btn', dataset: { fkey: `tl:${e.position}` },
      'aria-label': `Show the fleet at position ${e.position}: ${humanType(e.type)}`,
      'aria-current': e.position === pos ? 'step' : null,
      onclick: () => setPosition(e.position, { reveal: false }),
    },
    h('span', { class: 'tl-pos' }, `#${e.position}`),
    h('span', { class: 'tl-type' }, humanType(e.type)),
    h('span', { class: 'tl-detail' }, eventDetail(e)),
    h('time', { class: 'tl-time', title: fmtTime(e.at) }, e.at ? new Date(e.at).toLocaleTimeString() : '')));
}

function setPosition(p, { reveal = true } = {}) {
  const n = Math.max(0, Math.round(Number(p)));
  if (Number.isNaN(n)) return;
  // Before the log is read the head is unknown: keep what was asked for.
  history.at = history.loadedOnce && n >= history.head ? null : n;
  history.reveal = reveal;
  scheduleRender();
}

/** Scroll the timeline (not the page) so that the current entry shows. */
function revealCurrent() {
  const box = $('#timeline');
  const cur = $('.tl.current', box);
  if (!cur) return;
  const top = cur.offsetTop;
  if (top < box.scrollTop || top + cur.offsetHeight > box.scrollTop + box.clientHeight) {
    box.scrollTop = Math.max(0, top - box.clientHeight / 3);
  }
}

let pastTimer = null;
let pastAbort = null;

function loadPast(pos) {
  history.pastFor = pos;
  clearTimeout(pastTimer);
  pastTimer = setTimeout(async () => {
    if (pastAbort) pastAbort.abort();
    const ctrl = new AbortController();
    pastAbort = ctrl;
    const seq = ++history.seq;
    try {
      const q = `?at=${pos}`;
      const [orchs, agents, managed] = await Promise.all([
        api('GET', `/api/orchestrators${q}`, undefined, ctrl),
        api('GET', `/api/agents${q}`, undefined, ctrl),
        api('GET', `/api/managed-agents${q}`, undefined, ctrl),
      ]);
      if (seq !== history.seq) return;
      history.past = {
        pos,
        orchestrators: asList(orchs, 'orchestrators'),
        agents: asList(agents, 'agents'),
        managed: asList(managed, 'managedAgents'),
      };
      setError($('#pos-error'), '');
      renderPast();
    } catch (err) {
      if (err.name === 'AbortError' || seq !== history.seq) return;
      history.pastFor = null;
      setError($('#pos-error'), `Could not load the fleet at position ${pos}: ${err.message}`);
    }
  }, 120);
}

function renderPast() {
  const past = history.past;
  if (!past) return;
  const orchs = [...past.orchestrators].sort((a, b) => (a.hostname || '').localeCompare(b.hostname || ''));
  const online = orchs.filter((o) => o.status === 'online').length;
  const agentsOnline = past.agents.filter((a) => a.status === 'online').length;
  $('#past-summary').textContent = `${orchs.length} orchestrator(s), ${online} online · `
    + `${past.agents.length} agent(s), ${agentsOnline} online · ${past.managed.length} managed agent(s)`;
  const box = $('#past-orchs');
  box.replaceChildren(...(orchs.length ? orchs.map((o) => orchCard(o, { live: false }))
    : [h('p', { class: 'muted' }, 'No orchestrators at this position.')]));
  $('#past-agents').replaceChildren(...past.agents.map((a) => agentRow(a, false)));
}

// ---------------------------------------------------------------- agents at work (issue 16)

const agentKey = (oid, aid) => `${oid}\u0000${aid}`;
const agentHash = (oid, aid) => `#agent/${encodeURIComponent(oid)}/${encodeURIComponent(aid)}`;
const agentName = (m) => m.label || m.tmuxSession || m.agentId;

function findManaged(oid, aid) {
  const o = state.orchestrators.get(oid);
  return [o, (o?.managedAgents || []).find((m) => m.agentId === aid)];
}

/** A link to an agent's view while its host still manages it; otherwise its id. */
function agentLink(oid, aid) {
  if (!aid) return null;
  const [, m] = findManaged(oid, aid);
  return m ? h('a', { href: agentHash(oid, aid) }, agentName(m)) : aid;
}

/** What an input command types, as a person reads it: “y” ⏎. */
function inputText(c) {
  const text = c.text ? `“${c.text.length > 80 ? `${c.text.slice(0, 80)}…` : c.text}”` : '';
  return `${text}${c.enter === false ? '' : `${text ? ' ' : ''}⏎`}` || '“”';
}

const ATTENTION_TEXT = {
  input: ['waiting for input', 'it asked a question and waits for a person'],
  idle: ['idle', 'its terminal has been quiet and asks nothing the host recognises'],
};

function attentionBadge(m) {
  const t = ATTENTION_TEXT[m.attention];
  if (!t) return null;
  return h('span', {
    class: `badge attn attn-${m.attention}`,
    title: `${t[1]}${m.attentionReason ? ` (${m.attentionReason})` : ''}`,
  }, t[0]);
}

/** Every agent across the fleet that waits for a person, oldest question first. */
function waitingForInput() {
  const out = [];
  for (const o of state.orchestrators.values()) {
    for (const m of o.managedAgents || []) if (m.attention === 'input') out.push({ o, m });
  }
  return out.sort((a, b) => (a.m.attentionSince || 0) - (b.m.attentionSince || 0)
    || (a.o.hostname || a.o.id).localeCompare(b.o.hostname || b.o.id)
    || a.m.agentId.localeCompare(b.m.agentId));
}

/**
 * orchestrator.attention: one managed agent as /api/managed-agents lists it. The
 * orchestrator's own event at the same position carries it too; merging keeps the
 * page right even if a stream narrowed to this family ever arrives alone.
 */
function attentionChanged(d) {
  const o = state.orchestrators.get(d.orchestratorId);
  if (o) {
    const { orchestratorId, hostname, orchestratorStatus, ...m } = d;
    const list = (o.managedAgents || []).map((x) => (x.agentId === m.agentId ? { ...x, ...m } : x));
    state.orchestrators.set(o.id, { ...o, managedAgents: list });
  }
  if (d.attention === 'input') notices.pending.push(d);
}

/** Input commands sent to one agent, newest first. */
function inputsTo(oid, aid) {
  return [...state.commands.values()]
    .filter((c) => c.kind === 'input' && c.orchestratorId === oid && c.agentId === aid)
    .sort((a, b) => (b.requestedAt || 0) - (a.requestedAt || 0));
}

/** The answer in flight for the question an agent asks now (sent since it asked), if any. */
function answerTo(o, m) {
  return inputsTo(o.id, m.agentId).find((c) => (c.requestedAt || 0) >= (m.attentionSince || 0)) || null;
}

/** A status badge and what was typed: the command's state as the host reports it. */
function inputStatus(c) {
  const error = c.result?.error || c.error;
  return h('span', { class: 'input-status', dataset: { command: c.id, status: c.status } },
    statusBadge(c.status), ' ', h('span', { class: 'input-text' }, inputText(c)),
    c.status === 'expired' ? [' · ', expiredNote(c)] : null,
    error ? [' · ', h('span', { class: 'error-text' }, error)] : null);
}

/**
 * Answers the question's own words suggest: y and n for "[y/N]", "(y/n)", "yes/no".
 * Always offered besides: Enter alone, and a text field.
 */
function quickAnswers(m) {
  const tail = (m.attentionExcerpt || '').split('\n').slice(-4).join('\n');
  return /\[\s*y\s*\/\s*n\s*\]|\(\s*y\s*\/\s*n\s*\)|\byes\s*\/\s*no\b/i.test(tail) ? ['y', 'n'] : [];
}

async function sendInput(o, m, text, enter) {
  const key = ckey(o.id, `input:${m.agentId}`);
  const res = await withBusy(key, () => api('POST', `/api/orchestrators/${encodeURIComponent(o.id)}/actions`,
    { action: 'input', agentId: m.agentId, text, enter }));
  if (res && res.command) state.commands.set(res.command.id, res.command);
  announce(`Sent ${inputText({ text, enter })} to ${agentName(m)}.`);
  return res;
}

/** The one-click answers of a waiting agent (queue and agent view alike). */
function answerControls(o, m, where) {
  const key = ckey(o.id, `input:${m.agentId}`);
  const busy = state.busy.has(key) || o.status !== 'online';
  const dk = agentKey(o.id, m.agentId);
  const field = h('input', {
    type: 'text', class: 'answer-text', autocomplete: 'off', spellcheck: 'false', maxlength: '4000',
    'aria-label': `Answer for ${agentName(m)}`, placeholder: 'Answer…',
    dataset: { fkey: `${where}:${dk}:text` },
  });
  field.value = state.drafts.get(dk) || '';
  field.addEventListener('input', () => state.drafts.set(dk, field.value));
  const send = (text, enter) => sendInput(o, m, text, enter)
    .then(() => { if (text === field.value) state.drafts.delete(dk); })
    .catch(() => { /* shown inline */ });
  const form = h('form', {
    class: 'answer', novalidate: true,
    onsubmit: (ev) => { ev.preventDefault(); send(field.value, true); },
  },
  quickAnswers(m).map((a) => h('button', {
    type: 'button', class: 'small quick', disabled: busy, dataset: { fkey: `${where}:${dk}:${a}` },
    'aria-label': `Answer ${a} to ${agentName(m)}`, onclick: () => send(a, true),
  }, a)),
  h('button', {
    type: 'button', class: 'small quick', disabled: busy, dataset: { fkey: `${where}:${dk}:enter` },
    'aria-label': `Press Enter in ${agentName(m)}`, onclick: () => send('', true),
  }, 'Enter ⏎'),
  field,
  h('button', { type: 'submit', class: 'small primary', disabled: busy, dataset: { fkey: `${where}:${dk}:send` } }, 'Send'));
  const sent = answerTo(o, m);
  return [form,
    o.status !== 'online' ? h('p', { class: 'muted small-text' }, 'Its host is offline: answers wait until it is back.') : null,
    sent ? h('p', { class: 'answer-sent' }, 'Sent: ', inputStatus(sent)) : null,
    inlineError(key)];
}

// --- the needs-input queue

function renderInbox() {
  const waiting = waitingForInput();
  $('#inbox-empty').hidden = !state.loaded || waiting.length > 0;
  const sig = ({ o, m }) => JSON.stringify([m, o.status, o.hostname, answerTo(o, m),
    state.busy.has(ckey(o.id, `input:${m.agentId}`)), state.errors.get(ckey(o.id, `input:${m.agentId}`))]);
  reconcile($('#inbox-list'), waiting, ({ o, m }) => agentKey(o.id, m.agentId), sig, inboxItem);
}

function inboxItem({ o, m }) {
  const lines = (m.attentionExcerpt || '').split('\n');
  return h('li', { class: 'inbox-item card', dataset: { agent: m.agentId, orchestrator: o.id } },
    h('header', { class: 'card-head' },
      h('div', { class: 'titles' },
        h('h2', {}, h('a', { href: agentHash(o.id, m.agentId), dataset: { fkey: `inbox:${o.id}:${m.agentId}:open` } },
          agentName(m))),
        h('div', { class: 'sub muted' }, badge(m.provider, `provider ${m.provider}`), ' on ',
          h('b', {}, o.hostname || o.id), ' · asked ', agoEl(m.attentionSince))),
      h('a', { class: 'small-link', href: agentHash(o.id, m.agentId) }, 'Terminal →')),
    m.attentionReason ? h('p', { class: 'attn-reason' }, m.attentionReason) : null,
    lines.some((l) => l.trim()) ? h('pre', { class: 'excerpt', 'aria-label': 'The last lines it printed' },
      lines.slice(-12).join('\n')) : null,
    answerControls(o, m, 'inbox'));
}

// --- one agent's view: its terminal, facts and answers

let terminal = null; // the AgentTerminal on show, with .key

function agentTitle() {
  const v = state.agentView;
  if (!v) return 'agent';
  const [, m] = findManaged(v.oid, v.aid);
  return m ? agentName(m) : v.aid;
}

/** Open the agent view's terminal, or close it when the view goes. */
function syncTerminal() {
  const v = state.view === 'agent' ? state.agentView : null;
  const key = v ? agentKey(v.oid, v.aid) : null;
  if (terminal && terminal.key === key) return;
  if (terminal) terminal.close();
  terminal = null;
  setTermStatus('idle');
  if (!v) return;
  $('#input-text').value = '';
  setError($('#input-error'), '');
  terminal = new AgentTerminal($('#term-box'), setTermStatus, token);
  terminal.key = key;
  terminal.open(`/api/orchestrators/${encodeURIComponent(v.oid)}/agents/${encodeURIComponent(v.aid)}/output`);
}

function setTermStatus(st, detail = '') {
  const el = $('#term-status');
  el.dataset.state = st;
  const text = st === 'idle' ? '' : `${TERMINAL_STATES[st] || st}${detail ? `: ${detail}` : ''}`;
  if (el.textContent !== text) el.textContent = text;
}

function renderAgentView() {
  const v = state.agentView;
  if (!v) return;
  const [o, m] = findManaged(v.oid, v.aid);
  const gone = $('#agent-gone');
  gone.hidden = Boolean(m) || !state.loaded;
  if (!gone.hidden) {
    gone.textContent = o ? `${o.hostname || o.id} manages no agent ${v.aid} now: it was shut down, or it ended.`
      : `There is no orchestrator ${v.oid} now.`;
  }
  $('#h-agent').textContent = m ? agentName(m) : v.aid;
  const online = o?.status === 'online';
  $('#input-send').disabled = !m || !online;
  $('#input-send').title = m && !online ? 'Its host is offline' : '';
  const sig = JSON.stringify([m, o?.status, o?.hostname, o?.baseDir, inputsTo(v.oid, v.aid),
    [...state.busy].filter((k) => k.startsWith(`${v.oid}\u0000`)),
    [...state.errors].filter(([k]) => k.startsWith(`${v.oid}\u0000`))]);
  const box = $('#agent-facts');
  if (box._sig === sig) return;
  box._sig = sig;
  const active = document.activeElement?.dataset?.fkey;
  if (!m) {
    $('#agent-badges').replaceChildren();
    $('#agent-actions').replaceChildren();
    box.replaceChildren();
    $('#agent-attention').hidden = true;
  } else {
    const st = agentState(m);
    $('#agent-badges').replaceChildren(...[stateBadge(st), badge(m.provider, `provider ${m.provider}`),
      m.approvalMode ? badge(m.approvalMode, m.approvalMode === 'guarded' ? '' : 'mode') : null,
      attentionBadge(m)].filter(Boolean));
    const actions = ['restart', 'shutdown'].map((action) => {
      const busy = state.busy.has(ckey(o.id, `${action}:${m.agentId}`));
      const label = action === 'restart' ? 'Restart' : 'Shutdown';
      return h('button', {
        type: 'button', class: action === 'shutdown' ? 'danger-text' : '', disabled: busy || !online,
        dataset: { fkey: `agent:${action}` }, title: online ? null : 'Its host is offline',
        onclick: () => (action === 'shutdown' ? confirmShutdown(o, m) : runAction(o, m, action)),
      }, busy ? `${label}…` : label);
    });
    $('#agent-actions').replaceChildren(...actions,
      ...['restart', 'shutdown'].map((a) => inlineError(ckey(o.id, `${a}:${m.agentId}`))).filter(Boolean));
    const fact = (label, ...value) => h('div', {}, h('dt', {}, label), h('dd', {}, ...value));
    const copyable = (text, what) => [h('code', { class: 'copy-value' }, text), ' ',
      h('button', {
        type: 'button', class: 'small ghost', 'aria-label': `Copy ${what}`, dataset: { fkey: `agent:copy:${what}` },
        onclick: () => copyText(text, what),
      }, 'Copy')];
    box.replaceChildren(...[
      fact('Host', h('b', {}, o.hostname || o.id), ' ', statusBadge(o.status)),
      fact('Working directory', h('code', { title: m.cwd }, m.cwd || '–')),
      fact('Worktree', m.worktree ? h('code', { class: 'worktree', title: m.worktree }, relPath(m.worktree, o.baseDir))
        : h('span', { class: 'muted' }, 'none')),
      fact('Branch', m.branch ? h('code', { class: 'branch' }, m.branch) : h('span', { class: 'muted' }, '–')),
      fact('Session', m.sessionId ? copyable(m.sessionId, 'session id')
        : h('span', { class: 'muted', title: 'the provider has not told its session id' }, 'unknown')),
      fact('tmux', m.tmuxSession ? copyable(`tmux -L relay attach -t ${m.tmuxSession}`, 'tmux command')
        : h('span', { class: 'muted' }, '–')),
      fact('Started', m.startedAt ? agoEl(m.startedAt) : h('span', { class: 'muted' }, '–')),
      crashNote(m, true) ? fact('Restarts', crashNote(m, true)) : null,
    ].filter(Boolean));
    const attn = $('#agent-attention');
    attn.hidden = !m.attention;
    if (m.attention === 'input') {
      attn.className = 'attention-box input';
      attn.replaceChildren(h('p', {}, h('b', {}, 'Waiting for input'), ' since ', agoEl(m.attentionSince),
        m.attentionReason ? [' · ', h('span', { class: 'attn-reason' }, m.attentionReason)] : null),
      ...answerControls(o, m, 'agent').filter(Boolean));
    } else if (m.attention === 'idle') {
      attn.className = 'attention-box idle';
      attn.replaceChildren(h('p', {}, h('b', {}, 'Idle'), ' since ', agoEl(m.attentionSince),
        m.attentionReason ? [' · ', m.attentionReason] : null));
    }
  }
  const inputs = inputsTo(v.oid, v.aid).slice(0, 8);
  $('#input-none').hidden = inputs.length > 0;
  $('#input-list').replaceChildren(...inputs.map((c) => h('li', {}, inputStatus(c), ' · ', agoEl(c.requestedAt),
    c.requestedBy ? h('span', { class: 'muted' }, ` · by ${c.requestedBy}`) : null)));
  if (active) $(`[data-fkey="${CSS.escape(active)}"]`)?.focus();
}

async function copyText(text, what) {
  try {
    await navigator.clipboard.writeText(text);
    announce(`Copied the ${what}.`);
  } catch {
    announce(`Could not copy; select the ${what} and press Ctrl+C.`, 'warn');
  }
}

function initAgentView() {
  $('#input-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const v = state.agentView;
    const [o, m] = v ? findManaged(v.oid, v.aid) : [];
    if (!o || !m) return;
    const input = $('#input-text');
    const text = input.value;
    const enter = $('#input-enter').checked;
    setError($('#input-error'), '');
    if (!text && !enter) {
      setError($('#input-error'), 'Type something, or tick “Send with Enter” to press Enter alone.');
      return;
    }
    const btn = $('#input-send');
    btn.disabled = true;
    try {
      await sendInput(o, m, text, enter);
      if (input.value === text) input.value = '';
    } catch (err) {
      state.errors.delete(ckey(o.id, `input:${m.agentId}`)); // shown under the box instead
      setError($('#input-error'), err.message);
    } finally {
      btn.disabled = false;
      scheduleRender();
    }
  });
}

// --- browser notifications (opt-in)

const canNotify = () => 'Notification' in window;

function notifyEnabled() {
  return canNotify() && Notification.permission === 'granted' && localStorage.getItem(NOTIFY_KEY) === 'on';
}

const BELL_ICON = '<svg viewBox="0 0 16 16" width="14" height="14" aria-hidden="true"><path fill="currentColor" '
  + 'd="M8 1.5a4 4 0 0 0-4 4v2.6L2.6 10.5v1h10.8v-1L12 8.1V5.5a4 4 0 0 0-4-4zM6.3 12.5a1.7 1.7 0 0 0 3.4 0z"/></svg>';

function renderNotifyButton() {
  const btn = $('#notify-btn');
  btn.hidden = !canNotify();
  if (btn.hidden) return;
  const denied = Notification.permission === 'denied';
  const on = notifyEnabled();
  const text = denied ? 'Notifications blocked' : on ? 'Notifications on' : 'Notify me';
  if ($('#notify-text').textContent !== text) $('#notify-text').textContent = text;
  btn.disabled = denied;
  btn.setAttribute('aria-pressed', String(on));
  btn.title = denied ? 'This browser blocks notifications from this page: allow them in its site settings.'
    : on ? 'You are notified when an agent waits for input while this page is not in front. Click to stop.'
      : 'Get a browser notification when an agent waits for input.';
}

function initNotify() {
  const btn = $('#notify-btn');
  btn.querySelector('.bell').innerHTML = BELL_ICON;
  btn.addEventListener('click', async () => {
    if (!canNotify()) return;
    if (notifyEnabled()) {
      localStorage.setItem(NOTIFY_KEY, 'off');
      announce('Notifications off.');
    } else {
      const answer = Notification.permission === 'granted' ? 'granted' : await Notification.requestPermission();
      if (answer === 'granted') {
        localStorage.setItem(NOTIFY_KEY, 'on');
        announce('You will be notified when an agent waits for input.');
      } else {
        announce('Notifications were not allowed.', 'warn');
      }
    }
    renderNotifyButton();
  });
}

/**
 * A notification per question (AgentAwaitingInput with attention input), once, and
 * only while the agent still waits with it: a question already answered by the
 * time the stream delivered both facts is not news. Only when the person opted in,
 * and only when this page is not in front of them (then the badge says it).
 */
function processNotices() {
  if (!notices.pending.length) return;
  const list = notices.pending;
  notices.pending = [];
  if (!notifyEnabled() || (document.visibilityState === 'visible' && document.hasFocus())) return;
  for (const d of list) {
    const [o, m] = findManaged(d.orchestratorId, d.agentId);
    if (!m || m.attention !== 'input' || m.attentionSince !== d.attentionSince) continue;
    const key = `${agentKey(o.id, m.agentId)}@${m.attentionSince}`;
    if (notices.sent.has(key)) continue;
    notices.sent.add(key);
    const last = (m.attentionExcerpt || '').split('\n').filter((l) => l.trim()).pop() || m.attentionReason || '';
    try {
      const n = new Notification(`${agentName(m)} needs input`, {
        body: `${o.hostname || o.id}: ${last}`, tag: agentKey(o.id, m.agentId),
      });
      n.onclick = () => {
        window.focus();
        location.hash = agentHash(o.id, m.agentId);
        n.close();
      };
    } catch { /* e.g. a browser that only notifies from a service worker: the badge remains */ }
  }
}

// ---------------------------------------------------------------- routing & init

function showView(hash) {
  // #agent/<orchestrator id>/<agent id> is one agent's view; the others are names.
  const [view, ...rest] = hash.split('/');
  if (view === 'agent' && rest.length === 2) {
    try {
      state.agentView = { oid: decodeURIComponent(rest[0]), aid: decodeURIComponent(rest[1]) };
    } catch {
      state.agentView = null;
    }
  } else {
    state.agentView = null;
  }
  state.view = view === 'agent' ? (state.agentView ? 'agent' : 'orchestrators')
    : VIEWS.includes(view) ? view : 'orchestrators';
  for (const sec of $$('.view')) sec.hidden = sec.dataset.view !== state.view;
  syncTerminal();
  if (state.view === 'history') {
    history.pastFor = null;
    loadLog();
  }
  render();
}

function initControls() {
  $('#orch-filter').addEventListener('input', (ev) => { state.orchFilter = ev.target.value.trim(); render(); });
  for (const b of $$('[data-cmd-filter]')) {
    b.addEventListener('click', () => { state.cmdFilter = b.dataset.cmdFilter; render(); });
  }
  for (const b of $$('[data-agent-filter]')) {
    b.addEventListener('click', () => { state.agentFilter = b.dataset.agentFilter; render(); });
  }
  $('#host-cmd-copy').addEventListener('click', async () => {
    const text = $('#host-cmd').textContent;
    try {
      await navigator.clipboard.writeText(text);
      announce('Command copied.');
    } catch {
      const range = document.createRange();
      range.selectNodeContents($('#host-cmd'));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      announce('Selected: press Ctrl+C to copy.');
    }
  });
  const slider = $('#pos-slider');
  slider.addEventListener('input', () => {
    $('#pos-input').value = slider.value;
    setPosition(slider.value);
  });
  const input = $('#pos-input');
  input.addEventListener('change', () => setPosition(input.value));
  input.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') setPosition(input.value); });
  $('#pos-prev').addEventListener('click', () => setPosition(currentPos() - 1));
  $('#pos-next').addEventListener('click', () => setPosition(currentPos() + 1));
  $('#pos-live').addEventListener('click', () => setPosition(history.head));
  $('#timeline-more').addEventListener('click', loadEarlier);
  $('#show-heartbeats').addEventListener('change', (ev) => { history.showHeartbeats = ev.target.checked; render(); });
  window.addEventListener('hashchange', () => showView(location.hash.slice(1)));
  // "/" jumps to the filter, as in most list UIs; never while typing somewhere.
  document.addEventListener('keydown', (ev) => {
    if (ev.key !== '/' || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const t = ev.target;
    if (t instanceof HTMLElement && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
    if (document.querySelector('dialog[open]')) return;
    ev.preventDefault();
    if (state.view !== 'orchestrators') location.hash = '#orchestrators';
    $('#orch-filter').focus();
  });
}

function init() {
  initAuth();
  initConfirm();
  initSpawn();
  initControls();
  initAgentView();
  initNotify();
  showView(location.hash.slice(1));
  setInterval(tick, 1000);
  start();
}

init();
