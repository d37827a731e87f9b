// ws.js: one WebSocket to /ws that reconnects by itself.
//
// Reconnects with exponential backoff and jitter (1 s .. 30 s), refreshes the
// token on close code 4001, pings every heartbeat_ms from `hello` and drops a
// link that stays silent for too long. Events are handed to `onEvent`.

const MIN_DELAY = 1000;
const MAX_DELAY = 30_000;

export class Socket {
  /**
   * @param {object} o
   * @param {(force:boolean)=>Promise<string|null>} o.token  access token (null: logged out)
   * @param {()=>Promise<boolean>} o.refresh  rotate tokens after a 4001 close
   * @param {(ev:object)=>void} o.onEvent  every parsed server event
   * @param {(state:string, retryMs?:number)=>void} o.onState  'connecting' | 'online' | 'offline'
   */
  constructor(o) {
    this.o = o;
    this.ws = null;
    this.ready = false; // true between `hello` and close
    this.connecting = false;
    this.stopped = true;
    this.attempt = 0; // failed attempts since the last `hello`
    this.timer = null;
    this.beat = null;
    this.lastRx = 0;
    this.refs = 0;
    this.onOnline = () => this.reconnectNow();
  }

  /** A fresh `ref` for a request. */
  nextRef(prefix = 'r') {
    this.refs += 1;
    return `${prefix}-${this.refs}`;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener('online', this.onOnline);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    clearTimeout(this.timer);
    this.teardown(1000);
    this.o.onState('offline');
  }

  /** Sends a frame if the connection is up; returns whether it was sent. */
  send(frame) {
    if (!this.ready || this.ws?.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Skips the backoff wait (e.g. the browser came back online). */
  reconnectNow() {
    if (this.stopped || this.ws || this.connecting) return;
    this.attempt = 0;
    this.connect();
  }

  async connect() {
    clearTimeout(this.timer);
    if (this.stopped || this.ws || this.connecting) return;
    this.connecting = true;
    this.o.onState('connecting');
    let token;
    try {
      // A refused upgrade (expired token) looks like a plain network failure
      // to the browser, so every third failed attempt forces a token refresh.
      token = await this.o.token(this.attempt > 0 && this.attempt % 3 === 0);
    } catch {
      this.connecting = false;
      this.retry();
      return;
    }
    this.connecting = false;
    if (!token || this.stopped || this.ws) return; // logged out meanwhile
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${proto}//${location.host}/ws?token=${encodeURIComponent(token)}`);
    this.ws = ws;
    this.lastRx = Date.now();
    ws.onmessage = (e) => this.receive(ws, e);
    ws.onclose = (e) => this.closed(ws, e.code);
    // A connection that never says `hello` is as good as dead.
    this.timer = setTimeout(() => {
      if (this.ws === ws && !this.ready) {
        this.teardown();
        this.retry();
      }
    }, 15_000);
  }

  receive(ws, e) {
    if (ws !== this.ws) return;
    this.lastRx = Date.now();
    let ev;
    try {
      ev = JSON.parse(e.data);
    } catch {
      return;
    }
    if (!ev || typeof ev.type !== 'string') return;
    if (ev.type === 'hello') {
      clearTimeout(this.timer);
      this.ready = true;
      this.attempt = 0;
      this.heartbeat(ev.heartbeat_ms);
      this.o.onState('online');
    }
    this.o.onEvent(ev);
  }

  closed(ws, code) {
    if (ws !== this.ws) return;
    this.teardown();
    if (this.stopped) return;
    if (code === 4001) {
      // Token invalid or expired: rotate it, then reconnect.
      this.o.onState('connecting');
      this.o.refresh().then(
        (ok) => ok && this.retry(MIN_DELAY),
        () => this.retry(),
      );
      return;
    }
    // 1013 (try again later) and 1008 (policy) ask us to back off harder;
    // 1012 (node going away) and anything else reconnect on the normal curve.
    if (code === 1013 || code === 1008) this.attempt = Math.max(this.attempt, 3);
    this.retry();
  }

  teardown(code) {
    const ws = this.ws;
    this.ws = null;
    this.ready = false;
    clearInterval(this.beat);
    if (ws) {
      ws.onmessage = ws.onclose = null;
      try {
        ws.close(code);
      } catch {
        /* already closed */
      }
    }
  }

  /** Plans the next attempt: min(30 s, 1 s * 2^n), jittered to 50-100 %. */
  retry(delay) {
    if (this.stopped) return;
    clearTimeout(this.timer);
    const base = Math.min(MAX_DELAY, MIN_DELAY * 2 ** this.attempt);
    const ms = delay ?? Math.max(MIN_DELAY, base / 2 + (Math.random() * base) / 2);
    this.attempt += 1;
    this.o.onState('offline', ms);
    this.timer = setTimeout(() => this.connect(), ms);
  }

  heartbeat(ms) {
    const every = Math.max(1000, Number(ms) || 25_000);
    clearInterval(this.beat);
    this.beat = setInterval(() => {
      if (Date.now() - this.lastRx > every * 2.5) {
        // No pong nor anything else: the link is dead even if TCP has not noticed.
        this.teardown(4000);
        this.retry();
        return;
      }
      this.send({ type: 'ping', ref: this.nextRef('ping') });
    }, every);
  }
}
