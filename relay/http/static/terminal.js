// One managed agent's terminal in the dashboard: xterm.js fed by the relay's output stream.
//
// The contract (ADR 0031, GET /api/orchestrators/{id}/agents/{agentId}/output):
// - `snapshot` {data, cols, rows}: reset the terminal, size it to the pane, write data
//   (the pane's recent history and screen, ending with the cursor where it is);
// - `output` {data}: what the program wrote since, in order, ANSI escapes kept;
// - `end` {reason}: the relay ended the stream (the agent is no longer managed, the
//   relay stops). The server then closes; without closing here too, EventSource
//   would reconnect at once.
// There are no ids: every (re)connect starts from a fresh snapshot, which is why a
// reconnect is harmless and why nothing here tries to stitch streams together.
//
// Kept apart from app.js because it knows nothing of the fleet: a box to draw in, a
// URL to read, a callback for its status. xterm.js (vendored, ~350 kB) is imported
// the first time a terminal opens, so the rest of the dashboard never loads it.
'use strict';

let lib = null;

function loadXterm() {
  lib ??= Promise.all([
    import('./vendor/xterm/xterm.mjs'),
    import('./vendor/xterm/addon-fit.mjs'),
  ]).then(([x, f]) => ({ Terminal: x.Terminal, FitAddon: f.FitAddon }));
  return lib;
}

const BASE_FONT = 13; // px; shrunk (to MIN_FONT at most) so that a wide pane fits its box
const MIN_FONT = 7;
const FONT = 'ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", Menlo, Consolas, monospace';
// A terminal is dark whatever the page's theme: programs choose their colours for one.
const THEME = {
  background: '#11151c', foreground: '#e6e9ef', cursor: '#e6e9ef', selectionBackground: '#3a4456',
};

/** What the status line says; `state` is also the element's data-state. */
export const TERMINAL_STATES = {
  loading: 'Loading the terminal…',
  connecting: 'Connecting…',
  waiting: 'Waiting for the host to send the screen…',
  live: 'Live',
  reconnecting: 'Reconnecting…',
  ended: 'Ended',
  error: 'Unavailable',
};

export class AgentTerminal {
  /**
   * @param {HTMLElement} box where xterm.js draws
   * @param {(state: string, detail?: string) => void} onStatus told of every change
   * @param {() => string} token the admin token, or '' (sent as ?token=: EventSource has no headers)
   */
  constructor(box, onStatus, token) {
    this.box = box;
    this.onStatus = onStatus;
    this.token = token;
    this.url = null;
    this.term = null;
    this.fit = null;
    this.es = null;
    this.size = null; // {cols, rows} of the pane, from the last snapshot
    this.closed = false;
    this.retryTimer = null;
    this.retryDelay = 1000;
    this.onResize = () => this.fitFont();
  }

  /** Load xterm.js, draw an empty terminal, and start following `path`. */
  async open(path) {
    this.url = path;
    this.status('loading');
    let Terminal;
    let FitAddon;
    try {
      ({ Terminal, FitAddon } = await loadXterm());
    } catch (err) {
      lib = null; // a failed import is not cached: the next open tries again
      this.status('error', `The terminal could not be loaded: ${err.message}`);
      return;
    }
    if (this.closed) return;
    this.term = new Terminal({
      disableStdin: true, // answers go through the input box: each is a command in the log
      cursorBlink: false,
      fontFamily: FONT,
      fontSize: BASE_FONT,
      scrollback: 5000,
      theme: THEME,
    });
    this.fit = new FitAddon();
    this.term.loadAddon(this.fit);
    this.term.open(this.box);
    window.addEventListener('resize', this.onResize);
    this.connect();
  }

  status(state, detail = '') {
    if (!this.closed) this.onStatus(state, detail);
  }

  streamUrl() {
    const t = this.token();
    return t ? `${this.url}?token=${encodeURIComponent(t)}` : this.url;
  }

  connect() {
    if (this.closed) return;
    clearTimeout(this.retryTimer);
    if (this.es) this.es.close();
    this.status(this.size ? 'reconnecting' : 'connecting');
    const es = new EventSource(this.streamUrl());
    this.es = es;
    let screen = false; // a snapshot arrived on this connection
    es.onopen = () => {
      this.retryDelay = 1000;
      if (!screen) this.status('waiting');
    };
    es.addEventListener('snapshot', (ev) => {
      const d = parse(ev.data);
      if (!d || es !== this.es) return;
      screen = true;
      this.term.reset();
      if (d.cols && d.rows) {
        this.size = { cols: d.cols, rows: d.rows };
        if (this.term.cols !== d.cols || this.term.rows !== d.rows) this.term.resize(d.cols, d.rows);
        this.fitFont();
      }
      this.term.write(d.data || '');
      this.status('live');
    });
    es.addEventListener('output', (ev) => {
      const d = parse(ev.data);
      if (d && es === this.es) this.term.write(d.data || '');
    });
    es.addEventListener('end', (ev) => {
      if (es !== this.es) return;
      es.close();
      const reason = parse(ev.data)?.reason || 'the relay ended the stream';
      if (/shutting down/.test(reason)) {
        this.status('reconnecting', `${reason}; trying again…`);
        this.retryLater();
      } else {
        this.status('ended', reason);
      }
    });
    es.onerror = () => {
      if (es !== this.es) return;
      if (es.readyState !== EventSource.CLOSED) {
        this.status('reconnecting'); // the browser retries by itself; a snapshot follows
        return;
      }
      es.close();
      this.whyRefused();
    };
  }

  /** An EventSource never says why it was refused: ask once with fetch, then decide. */
  async whyRefused() {
    let status = 0;
    let message = '';
    const ctrl = new AbortController();
    try {
      const res = await fetch(this.streamUrl(), { headers: { Accept: 'text/event-stream' }, signal: ctrl.signal });
      status = res.status;
      if (status !== 200) message = parse(await res.text())?.error || `${res.status} ${res.statusText}`;
    } catch {
      message = 'the relay could not be reached';
    } finally {
      ctrl.abort();
    }
    if (this.closed) return;
    if (status === 200) {
      this.connect(); // it works now
    } else if (status === 404 || status === 400 || status === 403) {
      this.status('error', message); // retrying cannot help
    } else {
      this.status('error', `${message}; trying again…`);
      this.retryLater();
    }
  }

  retryLater() {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), this.retryDelay);
    this.retryDelay = Math.min(this.retryDelay * 2, 15000);
  }

  /**
   * The pane keeps its own width (its lines are laid out for it), so the terminal
   * never re-flows: the font shrinks until the pane's columns fit the box, down to
   * MIN_FONT; past that the box scrolls sideways.
   */
  fitFont() {
    const t = this.term;
    if (!t || !this.size || !this.fit) return;
    const dims = this.fit.proposeDimensions(); // columns the box holds at the current size
    if (!dims || !Number.isFinite(dims.cols) || dims.cols <= 0) return;
    const now = t.options.fontSize;
    const want = Math.min(BASE_FONT, Math.max(MIN_FONT, Math.floor((2 * now * dims.cols) / this.size.cols) / 2));
    if (want !== now) t.options.fontSize = want;
  }

  /** Stop following and free everything; the object cannot be opened again. */
  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    window.removeEventListener('resize', this.onResize);
    if (this.es) this.es.close();
    this.es = null;
    if (this.term) this.term.dispose();
    this.term = null;
    this.box.replaceChildren();
  }
}

function parse(text) {
  try { return JSON.parse(text); } catch { return null; }
}
