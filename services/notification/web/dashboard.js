// Orderly operations dashboard: orders per status, orders placed per second,
// the latest status changes, dead letters and outbox backlogs, kept current
// over the notification service's WebSocket. No dependencies, no build step.
//
// Sign-in: the operator pastes an admin's bearer token (a JWT). It stays in
// this tab (sessionStorage) and only ever travels in an Authorization
// header: each connection first exchanges it for a ticket that lives
// seconds (POST /v1/dashboard/tickets), and opens the WebSocket with the
// ticket, since a browser cannot set headers on a WebSocket and a JWT must
// never be in a URL. A refused token (401: invalid or expired; 403: not an
// admin's) signs out; anything else reconnects with backoff and a fresh
// ticket.
//
// Data from the server only ever reaches the page as textContent or an
// attribute value, never as markup.
'use strict';

(function () {
  const TOKEN_KEY = 'orderly.dashboard.token';
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const STATUSES = ['pending', 'reserved', 'confirmed', 'shipped', 'delivered', 'cancelled'];
  const SVG = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);
  const el = {
    connection: $('connection'),
    connectionText: $('connection-text'),
    signOut: $('sign-out'),
    problem: $('problem'),
    login: $('login'),
    token: $('token'),
    board: $('board'),
    counts: $('counts'),
    countedAt: $('counted-at'),
    rateNow: $('rate-now'),
    chart: $('chart'),
    chartSpan: $('chart-span'),
    dlq: $('dlq'),
    dlqTotal: $('dlq-total'),
    outbox: $('outbox'),
    sources: $('sources'),
    latest: $('latest'),
  };
  const timeFormat = new Intl.DateTimeFormat(undefined, { timeStyle: 'medium' });

  // /some/prefix/dashboard: the API lives under the same prefix.
  const prefix = location.pathname.replace(/\/dashboard\/?$/, '');

  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  let ws = null;
  let timer = 0;
  let attempt = 0;
  let lastSeq = 0;

  function setState(state, text) {
    el.connection.dataset.state = state;
    el.connectionText.textContent = text;
  }

  function showProblem(text) {
    el.problem.textContent = text;
    el.problem.hidden = !text;
  }

  function signedOut(problem) {
    token = '';
    sessionStorage.removeItem(TOKEN_KEY);
    if (ws) ws.close(1000);
    ws = null;
    clearTimeout(timer);
    el.board.hidden = true;
    el.signOut.hidden = true;
    el.login.hidden = false;
    setState(problem ? 'denied' : 'signed-out', problem ? 'refused' : 'signed out');
    showProblem(problem || '');
  }

  function retry() {
    clearTimeout(timer);
    if (!token) return;
    setState('reconnecting', 'reconnecting…');
    const wait = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt) * (0.5 + Math.random() / 2);
    attempt++;
    timer = setTimeout(connect, wait);
  }

  async function connect() {
    if (!token) return;
    let resp;
    try {
      resp = await fetch(prefix + '/v1/dashboard/tickets', {
        method: 'POST',
        headers: { Authorization: 'Bearer ' + token },
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch (e) {
      retry();
      return;
    }
    if (resp.status === 401) {
      signedOut('This token is not valid, or has expired. Paste a fresh admin token.');
      return;
    }
    if (resp.status === 403) {
      signedOut('This token is not an operator\'s: the dashboard needs a token with the admin role.');
      return;
    }
    if (resp.status !== 201) {
      retry();
      return;
    }
    let ticket;
    try {
      ticket = (await resp.json()).ticket;
    } catch (e) {
      retry();
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    el.login.hidden = true;
    el.signOut.hidden = false;
    showProblem('');
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const sock = new WebSocket(scheme + '//' + location.host + prefix + '/v1/dashboard/ws?ticket=' + encodeURIComponent(ticket));
    ws = sock;
    sock.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (msg.type !== 'dashboard' || msg.seq <= lastSeq) return;
      lastSeq = msg.seq;
      attempt = 0;
      setState('live', 'live');
      render(msg);
    };
    sock.onclose = () => {
      if (ws !== sock) return; // signed out, or replaced
      ws = null;
      lastSeq = 0; // another replica numbers its own snapshots
      retry();
    };
  }

  function text(tag, value, cls) {
    const e = document.createElement(tag);
    e.textContent = value;
    if (cls) e.className = cls;
    return e;
  }

  function row(cells) {
    const tr = document.createElement('tr');
    for (const c of cells) tr.append(c);
    return tr;
  }

  function when(iso) {
    const t = document.createElement('time');
    t.dateTime = iso;
    t.textContent = timeFormat.format(new Date(iso));
    return t;
  }

  function age(seconds) {
    if (seconds < 1) return seconds > 0 ? '< 1 s' : '—';
    if (seconds < 120) return Math.round(seconds) + ' s';
    return Math.round(seconds / 60) + ' min';
  }

  function render(s) {
    el.board.hidden = false;

    const counts = [];
    for (const st of STATUSES) {
      const div = document.createElement('div');
      div.dataset.status = st;
      div.append(text('dt', st), text('dd', String(s.orders_by_status[st] || 0)));
      counts.push(div);
    }
    el.counts.replaceChildren(...counts);
    el.countedAt.dateTime = s.counted_at;
    el.countedAt.textContent = timeFormat.format(new Date(s.counted_at));

    drawChart(s.orders_per_second);

    let total = 0;
    el.dlq.replaceChildren(...s.dead_letters.map((d) => {
      total += d.messages;
      const tr = row([text('td', d.service), text('td', d.queue), text('td', String(d.messages), 'num')]);
      tr.dataset.alert = String(d.messages > 0);
      return tr;
    }));
    el.dlqTotal.textContent = String(total);
    el.dlqTotal.dataset.total = String(total);
    if (s.dead_letters.length === 0) el.dlq.replaceChildren(row([text('td', 'no queues reported')]));

    el.outbox.replaceChildren(...s.outboxes.map((o) => {
      const tr = row([text('td', o.service), text('td', age(o.oldest_pending_seconds), 'num'), text('td', String(o.pending), 'num')]);
      tr.dataset.service = o.service;
      tr.dataset.alert = String(o.oldest_pending_seconds >= 60);
      return tr;
    }));
    if (s.outboxes.length === 0) el.outbox.replaceChildren(row([text('td', 'no outboxes reported')]));
    el.sources.replaceChildren(...s.sources.map((src) => {
      const li = text('li', src.ok ? src.service + ': read ' + timeFormat.format(new Date(src.at)) : src.service + ': ' + src.error);
      li.dataset.ok = String(src.ok);
      return li;
    }));

    el.latest.replaceChildren(...s.latest.map((c) => {
      const status = c.reason ? c.status + ' (' + c.reason + ')' : c.status;
      const order = document.createElement('td');
      order.append(text('code', c.order_id));
      const tr = row([(() => { const td = document.createElement('td'); td.append(when(c.at)); return td; })(), order, text('td', status), text('td', String(c.seq), 'num')]);
      tr.dataset.order = c.order_id;
      tr.dataset.status = c.status;
      return tr;
    }));
  }

  function drawChart(rate) {
    const pts = rate.points;
    const w = 600;
    const h = 160;
    const top = 14;
    const bottom = h - 4;
    const peak = Math.max(1, ...pts) * 1.1;
    const x = (i) => (pts.length > 1 ? (i * w) / (pts.length - 1) : 0);
    const y = (v) => bottom - (v / peak) * (bottom - top);
    let line = '';
    pts.forEach((v, i) => {
      line += (i ? ' L' : 'M') + x(i).toFixed(1) + ' ' + y(v).toFixed(1);
    });
    const make = (tag, attrs) => {
      const e = document.createElementNS(SVG, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      return e;
    };
    const label = make('text', { x: 4, y: 11 });
    label.textContent = 'max ' + (peak / 1.1).toFixed(1) + '/s';
    el.chart.replaceChildren(
      make('line', { class: 'grid', x1: 0, x2: w, y1: y(peak / 1.1), y2: y(peak / 1.1) }),
      make('line', { class: 'grid', x1: 0, x2: w, y1: bottom, y2: bottom }),
      make('path', { class: 'area', d: line + ' L' + w + ' ' + bottom + ' L0 ' + bottom + ' Z' }),
      make('path', { class: 'line', d: line }),
      label,
    );
    el.chart.dataset.points = String(pts.length);
    const now = pts.length ? pts[pts.length - 1] : 0;
    el.rateNow.textContent = now.toFixed(1) + '/s';
    el.rateNow.dataset.sum = String(pts.reduce((a, b) => a + b, 0));
    const minutes = Math.round((pts.length * rate.step_seconds) / 60);
    el.chartSpan.textContent = 'Last ' + minutes + ' min, mean per ' + rate.step_seconds + ' s.';
  }

  el.login.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = el.token.value.trim().replace(/^Bearer\s+/i, '');
    if (!t) return;
    el.token.value = '';
    token = t;
    attempt = 0;
    setState('connecting', 'connecting…');
    connect();
  });
  el.signOut.addEventListener('click', () => signedOut(''));
  window.addEventListener('online', () => {
    if (token && !ws) {
      attempt = 0;
      connect();
    }
  });

  if (token) {
    setState('connecting', 'connecting…');
    connect();
  } else {
    signedOut('');
  }
})();
