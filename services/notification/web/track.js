// Orderly live order tracking: shows an order's status timeline and keeps it
// current over the notification service's WebSocket (Server-Sent Events when
// WebSockets cannot get through). No dependencies, no build step.
//
// The page is static: the order id comes from the path (/track/{id}) and the
// tracking token from ?token=. Every status message is rendered once (keyed
// by its seq, kept in seq order). After a drop the page reconnects by itself
// with exponential backoff and jitter, asking only for what it missed
// (since = the highest seq seen), so any replica can serve the next
// connection. A normal close after a terminal status (delivered, cancelled)
// ends it: the indicator then reads "final".
//
// Data from the server only ever reaches the page as textContent or an
// attribute value, never as markup.
'use strict';

(function () {
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  // WebSocket attempts that failed to open while the server itself answered
  // (so something between us blocks WebSockets) before switching to SSE.
  const WS_FAILURES_BEFORE_SSE = 2;
  const TERMINAL = new Set(['delivered', 'cancelled']);
  const STATUS = {
    pending: ['Pending', 'We have received your order.'],
    reserved: ['Reserved', 'Your items are set aside for you.'],
    confirmed: ['Confirmed', 'Your payment went through.'],
    shipped: ['Shipped', 'Your order is on its way.'],
    delivered: ['Delivered', 'Your order has arrived.'],
    cancelled: ['Cancelled', 'This order was cancelled.'],
  };
  const REASONS = {
    out_of_stock: 'An item was out of stock.',
    payment_declined: 'The payment was declined.',
    customer_request: 'Cancelled at your request.',
    timeout: 'The order could not be completed in time.',
  };
  // Refusals that waiting will not cure, by HTTP status.
  const REFUSED = {
    401: 'This tracking link is not valid, or has expired. Please use the link from your order confirmation.',
    403: 'This page may not show live updates from here. Please open the link from your order confirmation.',
    404: 'We could not find this order. Please use the link from your order confirmation.',
  };
  const CONNECTION = {
    connecting: 'connecting…',
    live: 'live',
    reconnecting: 'reconnecting…',
    offline: 'offline',
    final: 'final',
    denied: 'unavailable',
  };

  const $ = (id) => document.getElementById(id);
  const el = {
    orderId: $('order-id'),
    current: $('current'),
    connection: $('connection'),
    connectionText: $('connection-text'),
    problem: $('problem'),
    timeline: $('timeline'),
    empty: $('empty'),
  };
  const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

  // /some/prefix/track/{id}: the API lives under the same prefix.
  const match = /^(.*)\/track\/([^/]+)$/.exec(location.pathname);
  const prefix = match ? match[1] : '';
  const orderId = match ? decodeURIComponent(match[2]) : '';
  const token = new URLSearchParams(location.search).get('token') || '';

  const seen = new Set(); // seqs rendered
  let lastSeq = 0; // highest seq rendered; what we ask the server to resume after
  let latest = null; // the message with the highest seq
  let state = '';
  let transport = 'ws'; // or 'sse'
  let wsFailures = 0; // consecutive WebSocket attempts blocked on the way
  let attempt = 0; // consecutive connections that brought nothing, for the backoff
  let conn = null; // the open or opening connection: { close() }
  let timer = 0;
  let stopped = false;

  function setState(s) {
    if (state === s || state === 'final' || state === 'denied') return;
    state = s;
    el.connection.dataset.state = s;
    el.connectionText.textContent = CONNECTION[s];
  }

  function showProblem(text) {
    el.problem.textContent = text;
    el.problem.hidden = false;
  }

  function label(status) {
    if (STATUS[status]) return STATUS[status][0];
    return status ? status.charAt(0).toUpperCase() + status.slice(1).replace(/_/g, ' ') : 'Unknown';
  }

  function apiURL(kind, scheme) {
    const q = new URLSearchParams({ token: token, since: String(lastSeq) });
    return scheme + '//' + location.host + prefix + '/v1/orders/' + encodeURIComponent(orderId) + '/' + kind + '?' + q;
  }

  // --- rendering -----------------------------------------------------------

  function entry(msg) {
    const li = document.createElement('li');
    li.className = 'step';
    li.dataset.seq = String(msg.seq);
    li.dataset.status = msg.status;

    const name = document.createElement('span');
    name.className = 'step-name';
    name.textContent = label(msg.status);
    li.append(name);

    const desc = document.createElement('span');
    desc.className = 'step-desc';
    if (msg.status === 'cancelled' && msg.reason) {
      desc.textContent = REASONS[msg.reason] || 'Reason: ' + msg.reason.replace(/_/g, ' ') + '.';
      li.dataset.reason = msg.reason;
    } else {
      desc.textContent = STATUS[msg.status] ? STATUS[msg.status][1] : '';
    }
    li.append(desc);

    const at = new Date(msg.at);
    if (!Number.isNaN(at.getTime())) {
      const time = document.createElement('time');
      time.className = 'step-time';
      time.dateTime = at.toISOString();
      time.textContent = timeFormat.format(at);
      li.append(time);
    }
    return li;
  }

  function render(msg) {
    const li = entry(msg);
    // Keep seq order even if a replay brings an older status late.
    let before = null;
    for (const other of el.timeline.children) {
      if (Number(other.dataset.seq) > msg.seq) {
        before = other;
        break;
      }
    }
    el.timeline.insertBefore(li, before);
    el.empty.hidden = true;

    for (const other of el.timeline.children) {
      const isCurrent = Number(other.dataset.seq) === lastSeq;
      other.classList.toggle('current-step', isCurrent);
      if (isCurrent) other.setAttribute('aria-current', 'step');
      else other.removeAttribute('aria-current');
    }
    const current = label(latest.status);
    el.current.dataset.status = latest.status;
    el.current.textContent = current;
    document.title = current + ' · Order tracking · Orderly';
  }

  // handle applies one message from either transport; it ignores anything
  // that is not a well-formed status of this order, and duplicates.
  function handle(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (e) {
      return;
    }
    if (!msg || msg.type !== 'status') return;
    if (typeof msg.order_id === 'string' && msg.order_id.toLowerCase() !== orderId.toLowerCase()) return;
    const seq = Number(msg.seq);
    if (!Number.isSafeInteger(seq) || seq < 1 || typeof msg.status !== 'string') return;
    attempt = 0; // this connection works: the next drop starts the backoff anew
    if (seen.has(seq)) return;
    seen.add(seq);
    const m = { seq: seq, status: msg.status, reason: typeof msg.reason === 'string' ? msg.reason : '', at: msg.at };
    if (seq > lastSeq) {
      lastSeq = seq;
      latest = m;
    }
    render(m);
  }

  function isTerminal() {
    return latest !== null && TERMINAL.has(latest.status);
  }

  // --- connection ----------------------------------------------------------

  function connect() {
    clearTimeout(timer);
    timer = 0;
    if (stopped || conn) return;
    if (!navigator.onLine) {
      setState('offline');
      timer = setTimeout(connect, BACKOFF_MAX_MS); // in case "online" never fires
      return;
    }
    if (state === 'offline') setState('reconnecting');
    if (transport === 'ws') openWebSocket();
    else openEventSource();
  }

  function openWebSocket() {
    let ws;
    try {
      ws = new WebSocket(apiURL('ws', location.protocol === 'https:' ? 'wss:' : 'ws:'));
    } catch (e) {
      transport = 'sse';
      openEventSource();
      return;
    }
    let opened = false;
    const me = { close: () => ws.close(1000) };
    conn = me;
    ws.onopen = () => {
      opened = true;
      wsFailures = 0;
      if (conn === me) setState('live');
    };
    ws.onmessage = (ev) => {
      if (conn === me) handle(ev.data);
    };
    ws.onclose = (ev) => {
      if (conn !== me) return; // closed on purpose, already replaced
      conn = null;
      if (ev.code === 1000 && isTerminal()) {
        finish();
      } else if (opened) {
        retry(); // 1012 restart, 1013 too slow, 1006 drop, …
      } else {
        diagnose((reachable) => {
          if (reachable && ++wsFailures >= WS_FAILURES_BEFORE_SSE) {
            transport = 'sse'; // the server is there, WebSockets do not get through
            connect();
            return;
          }
          retry();
        });
      }
    };
  }

  function openEventSource() {
    const es = new EventSource(apiURL('events', location.protocol));
    let opened = false;
    const me = { close: () => es.close() };
    conn = me;
    es.onopen = () => {
      opened = true;
      if (conn === me) setState('live');
    };
    const onEvent = (ev) => {
      if (conn === me) handle(ev.data);
    };
    es.addEventListener('status', onEvent);
    es.onmessage = onEvent;
    es.onerror = () => {
      if (conn !== me) return;
      // EventSource would reconnect on its own, but without "since" and
      // without our backoff: take over.
      es.close();
      conn = null;
      if (isTerminal()) {
        finish(); // the server ends the stream after a terminal status
      } else if (opened) {
        retry();
      } else {
        diagnose(() => retry());
      }
    };
  }

  // diagnose finds out why a connection did not open, which the browser does
  // not tell: it asks the SSE endpoint for its response headers only. A
  // refused token or an unknown order stops the page; otherwise cb learns
  // whether the server answered (true) or is unreachable or failing (false).
  function diagnose(cb) {
    const ctl = new AbortController();
    const giveUp = setTimeout(() => ctl.abort(), 5000);
    fetch(apiURL('events', location.protocol), {
      headers: { Accept: 'text/event-stream' },
      cache: 'no-store',
      signal: ctl.signal,
    }).then(
      (resp) => {
        clearTimeout(giveUp);
        ctl.abort();
        if (REFUSED[resp.status]) {
          deny(REFUSED[resp.status]);
          return;
        }
        cb(resp.ok);
      },
      () => {
        clearTimeout(giveUp);
        cb(false);
      },
    );
  }

  function retry() {
    if (stopped || conn) return; // conn: an "online" event already reconnected
    setState(navigator.onLine ? 'reconnecting' : 'offline');
    // Full jitter above a floor: the n-th retry waits 0.5 s to
    // min(10 s, 0.5 s·2ⁿ⁺¹), so clients dropped together come back spread out.
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (attempt + 1));
    attempt++;
    clearTimeout(timer);
    timer = setTimeout(connect, BACKOFF_MIN_MS + Math.random() * (cap - BACKOFF_MIN_MS));
  }

  function finish() {
    stopped = true;
    clearTimeout(timer);
    setState('final');
  }

  function deny(text) {
    stopped = true;
    clearTimeout(timer);
    if (conn) conn.close();
    conn = null;
    showProblem(text);
    setState('denied');
    if (!latest) {
      el.current.textContent = 'Unavailable';
      el.empty.hidden = true;
    }
  }

  function reconnectNow() {
    if (stopped || conn) return;
    attempt = 0;
    connect();
  }

  window.addEventListener('offline', () => {
    if (stopped) return;
    const c = conn;
    conn = null; // its close event is now ignored
    if (c) c.close();
    setState('offline');
    clearTimeout(timer);
    timer = setTimeout(connect, BACKOFF_MAX_MS);
  });
  window.addEventListener('online', reconnectNow);
  // A tab coming back from the background (or a laptop from sleep) should
  // not wait out a long backoff.
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') reconnectNow();
  });

  // --- start ---------------------------------------------------------------

  el.orderId.textContent = orderId || 'unknown';
  if (!orderId || !token) {
    deny('This tracking link is incomplete. Please use the link from your order confirmation.');
    return;
  }
  setState('connecting');
  connect();
})();
