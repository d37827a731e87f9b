// app.js: the Parley web client (state, rendering and event wiring).
//
// Rooms come from GET /rooms, history from GET /rooms/{id}/messages, and
// everything live (messages, acks, receipts, typing, presence, room changes)
// from the WebSocket. Bodies, usernames and room names are only ever inserted
// as text (see ui.el / setText), never as HTML.

import {
  Api, ApiError, currentSession, freshToken, refresh, scheduleRefresh, setAuthLostHandler, setTokenHandler,
} from './api.js';
import { Socket } from './ws.js';
import { $, el, setText, toast, clearToasts, timeOfDay, fullDate, relTime, newId } from './ui.js';

const PAGE = 50; // history page size
const TYPING_SEND_MS = 3000; // refresh our typing flag at most this often
const TYPING_SHOW_MS = 8000; // hide someone's typing after this long without refresh
const RESEND_MS = 10_000; // resend an unacknowledged message after this long
const SYNC_CAP = 200; // replay at most this many undelivered messages per room on start
const RETRYABLE = new Set(['rate_limited', 'unavailable', 'internal']);

// ---------------------------------------------------------------- state

let state = freshState();
let socket = null;
let timers = [];

function freshState() {
  return {
    me: null, // {user_id, username}
    rooms: new Map(), // room_id -> room + {last_seq, read_seq, delivered_seq}
    order: [], // room ids, most recently active first
    msgs: new Map(), // room_id -> {bySeq: Map(seq -> message), hasMore, loaded, loading}
    receipts: new Map(), // room_id -> Map(user_id -> {delivered_seq, read_seq})
    pending: new Map(), // client_msg_id -> unacknowledged message (seq 0)
    presence: new Map(), // user_id -> {online, last_seen, live}
    typing: new Map(), // room_id -> Map(user_id -> hide timer)
    syncPoint: new Map(), // room_id -> last seq seen, sent in `sync`
    drafts: new Map(), // room_id -> unsent composer text
    current: null, // open room id
  };
}

const me = () => state.me?.user_id;

// ---------------------------------------------------------------- rooms

function otherMember(room) {
  return room.kind === 'direct' ? room.members.find((m) => m.user_id !== me()) ?? null : null;
}

/** Direct rooms are named after the other user. */
function roomName(room) {
  return otherMember(room)?.username ?? room.name;
}

const myRole = (room) => room.members.find((m) => m.user_id === me())?.role;

function canManage(room) {
  const role = myRole(room);
  return room.kind === 'group' && (role === 'owner' || role === 'admin');
}

const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
const unreadOf = (room) => Math.max(0, room.last_seq - room.read_seq);

/** Merges a room (from GET /rooms, a room event or an HTTP answer) into the state. */
function mergeRoom(r) {
  const old = state.rooms.get(r.room_id);
  const room = {
    ...old,
    ...r,
    members: r.members ?? old?.members ?? [],
    last_seq: Math.max(r.last_seq ?? 0, old?.last_seq ?? 0),
    read_seq: Math.max(r.read_seq ?? 0, old?.read_seq ?? 0),
    delivered_seq: Math.max(r.delivered_seq ?? 0, old?.delivered_seq ?? 0),
  };
  state.rooms.set(room.room_id, room);
  if (!state.order.includes(room.room_id)) state.order.unshift(room.room_id);
  if (!state.syncPoint.has(room.room_id)) {
    // Replay what this device has not received yet (bounded); a room that
    // shows up mid-session (no delivered_seq) starts from its head.
    const from = r.delivered_seq ?? room.last_seq;
    state.syncPoint.set(room.room_id, Math.max(from, room.last_seq - SYNC_CAP, 0));
  }
  // Optional extension: members may carry their watermarks.
  for (const m of room.members) {
    if (m.read_seq !== undefined || m.delivered_seq !== undefined) {
      setReceipt(room.room_id, m.user_id, m.delivered_seq ?? 0, m.read_seq ?? 0);
    }
  }
  const other = otherMember(room);
  if (other) watchPresence(other.user_id);
  return room;
}

/** A room we were in is gone (we were removed, or left on another device): say so. */
function lostRoom(id) {
  const room = state.rooms.get(id);
  if (!room) return;
  dropRoom(id);
  toast(`You are no longer a member of “${roomName(room)}”.`, 'info');
}

function dropRoom(id) {
  // Typing there ends with the membership: nothing to tell the server.
  if (typingRoom === id) typingRoom = null;
  state.rooms.delete(id);
  state.order = state.order.filter((x) => x !== id);
  for (const k of ['msgs', 'receipts', 'syncPoint', 'drafts']) state[k].delete(id);
  saveReceipts();
  for (const t of state.typing.get(id)?.values() ?? []) clearTimeout(t);
  state.typing.delete(id);
  for (const [cmid, p] of state.pending) if (p.room_id === id) state.pending.delete(cmid);
  savePending();
  if (state.current === id) navigate(null);
  scheduleRender();
}

async function loadRooms() {
  const st = state;
  const { rooms } = await Api.rooms();
  if (st !== state) return; // logged out meanwhile
  const ids = new Set(rooms.map((r) => r.room_id));
  for (const id of [...state.rooms.keys()]) if (!ids.has(id)) lostRoom(id);
  // The list stays in order of activity: rooms new to us first (in the
  // server's order, newest first), then those with messages we have not
  // seen yet, then the rest as they were.
  const known = state.order.filter((id) => ids.has(id));
  const moved = new Set(rooms
    .filter((r) => state.rooms.has(r.room_id) && r.last_seq > state.rooms.get(r.room_id).last_seq)
    .map((r) => r.room_id));
  for (const r of rooms) mergeRoom(r);
  const fresh = rooms.map((r) => r.room_id).filter((id) => !known.includes(id));
  state.order = [...fresh, ...known.filter((id) => moved.has(id)), ...known.filter((id) => !moved.has(id))];
  if (!state.current) applyRoute(); // the URL may name a room we did not know yet
  scheduleRender();
}

let reloadTimer = null;
function scheduleRoomsReload() {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(() => loadRooms().catch(showError), 300);
}

// ---------------------------------------------------------------- messages

function store(roomId) {
  let s = state.msgs.get(roomId);
  if (!s) {
    s = { bySeq: new Map(), hasMore: true, loaded: false, loading: false };
    state.msgs.set(roomId, s);
  }
  return s;
}

const seqs = (s) => [...s.bySeq.keys()];

/** Adds a committed message (deduplicated by room and seq). */
function addMessage(m, live) {
  if (!m || !m.room_id || !(m.seq > 0)) return;
  const s = store(m.room_id);
  s.bySeq.set(m.seq, m);
  const mine = m.sender_id === me();
  if (mine && m.client_msg_id && state.pending.delete(m.client_msg_id)) savePending();
  state.syncPoint.set(m.room_id, Math.max(state.syncPoint.get(m.room_id) ?? 0, m.seq));
  const room = state.rooms.get(m.room_id);
  if (!room) {
    scheduleRoomsReload(); // a room we have not heard of yet
    return;
  }
  if (m.seq > room.last_seq) {
    room.last_seq = m.seq;
    state.order = [room.room_id, ...state.order.filter((x) => x !== room.room_id)];
  }
  if (mine) {
    // Our own message is read by us; only move the mark if nothing unread lies before it.
    if (room.read_seq >= m.seq - 1) queueMark('read', room.room_id, m.seq);
  } else {
    queueMark('delivered', room.room_id, m.seq);
    if (live) stopShowingTyping(m.room_id, m.sender_id);
  }
  scheduleRender();
}

/** Loads the newest page of a room, or with `older` the page before what we hold. */
async function loadHistory(roomId, older) {
  const s = store(roomId);
  if (s.loading || (older && (!s.loaded || !s.hasMore))) return;
  const params = { limit: PAGE };
  if (older) {
    const min = Math.min(...seqs(s));
    if (min <= 1) {
      s.hasMore = false;
      scheduleRender();
      return;
    }
    params.before_seq = min;
  }
  s.loading = true;
  scheduleRender();
  try {
    const st = state;
    const page = await Api.messages(roomId, params);
    if (st !== state) return;
    for (const m of page.messages ?? []) addMessage(m, false);
    s.hasMore = !!page.has_more;
    s.loaded = true;
  } catch (e) {
    showError(e);
    if (e instanceof ApiError && e.code === 'not_found') dropRoom(roomId);
  } finally {
    s.loading = false;
    scheduleRender();
  }
}

// ---------------------------------------------------------------- sending

function pendingKey() {
  return `parley.pending.${me()}`;
}

function savePending() {
  if (!state.me) return;
  const list = [...state.pending.values()].map(({ room_id, client_msg_id, body, created }) => ({
    room_id, client_msg_id, body, created,
  }));
  if (list.length) localStorage.setItem(pendingKey(), JSON.stringify(list));
  else localStorage.removeItem(pendingKey());
}

function loadPending() {
  try {
    for (const p of JSON.parse(localStorage.getItem(pendingKey())) ?? []) addPending(p);
  } catch {
    /* ignore a corrupt entry */
  }
}

function addPending({ room_id, client_msg_id, body, created }) {
  const p = {
    room_id, client_msg_id, body, created,
    seq: 0, sender_id: me(), sender_name: state.me.username, sent_at: null,
    ref: null, lastTry: 0, failed: false,
  };
  state.pending.set(client_msg_id, p);
  return p;
}

function sendMessage() {
  const composer = $('#composer');
  const body = composer.value;
  const roomId = state.current;
  if (!roomId || !body.trim()) return;
  if ([...body].length > 4000) {
    toast('A message may have at most 4000 characters.');
    return;
  }
  const p = addPending({ room_id: roomId, client_msg_id: newId(), body, created: Date.now() });
  savePending();
  composer.value = '';
  state.drafts.delete(roomId);
  autosize();
  stopTyping();
  trySend(p);
  stickToBottom = true;
  scheduleRender();
}

/** (Re)sends a pending message with its original client_msg_id; the server deduplicates. */
function trySend(p) {
  if (p.failed || !socket) return;
  p.ref = socket.nextRef('send');
  p.lastTry = Date.now();
  socket.send({ type: 'send', ref: p.ref, room_id: p.room_id, client_msg_id: p.client_msg_id, body: p.body });
}

function resendStale() {
  if (!socket?.ready) return;
  for (const p of state.pending.values()) if (Date.now() - p.lastTry > RESEND_MS) trySend(p);
}

function onSent(ev) {
  const p = state.pending.get(ev.client_msg_id);
  if (!p) return; // already committed through its `message` event
  addMessage({
    room_id: ev.room_id, seq: ev.seq, message_id: ev.message_id, sender_id: me(),
    sender_name: state.me.username, body: p.body, sent_at: ev.sent_at, client_msg_id: ev.client_msg_id,
  }, true);
}

// ---------------------------------------------------------------- receipts, delivered, read

function setReceipt(roomId, userId, delivered, read) {
  if (userId === me()) {
    // Another of our sessions moved our own marks.
    const room = state.rooms.get(roomId);
    if (room) {
      room.read_seq = Math.max(room.read_seq, read);
      room.delivered_seq = Math.max(room.delivered_seq, delivered, read);
    }
    return;
  }
  let r = state.receipts.get(roomId);
  if (!r) state.receipts.set(roomId, (r = new Map()));
  const old = r.get(userId) ?? { delivered_seq: 0, read_seq: 0 };
  r.set(userId, {
    delivered_seq: Math.max(old.delivered_seq, delivered ?? 0, read ?? 0),
    read_seq: Math.max(old.read_seq, read ?? 0),
  });
  clearTimeout(receiptSaveTimer);
  receiptSaveTimer = setTimeout(saveReceipts, 500);
}

// The server has no snapshot of other members' marks (only live `receipt`
// events), so keep what we learnt to show ✓✓ correctly after a reload.
let receiptSaveTimer = null;
const receiptsKey = () => `parley.receipts.${me()}`;

function saveReceipts() {
  if (!state.me) return;
  const out = {};
  for (const [roomId, r] of state.receipts) {
    out[roomId] = Object.fromEntries([...r].map(([u, m]) => [u, [m.delivered_seq, m.read_seq]]));
  }
  localStorage.setItem(receiptsKey(), JSON.stringify(out));
}

function loadReceipts() {
  try {
    const all = JSON.parse(localStorage.getItem(receiptsKey())) ?? {};
    for (const [roomId, users] of Object.entries(all)) {
      for (const [u, [d, r]] of Object.entries(users)) setReceipt(roomId, u, d, r);
    }
  } catch {
    /* ignore a corrupt entry */
  }
}

/** The highest marks any other member reached in a room. */
function othersMarks(roomId) {
  let delivered = 0;
  let read = 0;
  for (const [uid, r] of state.receipts.get(roomId) ?? []) {
    if (uid === me()) continue;
    delivered = Math.max(delivered, r.delivered_seq);
    read = Math.max(read, r.read_seq);
  }
  return { delivered, read };
}

function statusOf(m, marks) {
  if (!m.seq) return m.failed ? 'failed' : 'pending';
  if (marks.read >= m.seq) return 'seen';
  if (marks.delivered >= m.seq) return 'delivered';
  return 'sent';
}

// Watermarks to send, coalesced per room and flushed shortly after, a few
// at a time: a user with many rooms gets one `delivered` per room after
// every `synced`, which at once would run into the server's frame rate
// limit (50/s, bursts of 100 by default).
const marks = { delivered: new Map(), read: new Map() };
let markTimer = null;
const MARK_DELAY_MS = 150;
const MARKS_PER_FLUSH = 20;
const MARK_PACE_MS = 500;
const MARK_RETRY_MS = 1000;
// Marks sent lately, by `ref`, to send again if the server refuses them for
// a passing reason (a rate limit); successes are not answered, so only the
// latest few are kept.
const sentMarks = new Map();
const SENT_MARKS_KEPT = 256;

function queueMark(kind, roomId, seq) {
  const room = state.rooms.get(roomId);
  if (room) {
    const key = kind === 'read' ? 'read_seq' : 'delivered_seq';
    if (room[key] >= seq) return;
    room[key] = seq;
    if (kind === 'read') room.delivered_seq = Math.max(room.delivered_seq, seq);
  }
  requeueMark(kind, roomId, seq, MARK_DELAY_MS);
}

function requeueMark(kind, roomId, seq, delayMs) {
  marks[kind].set(roomId, Math.max(marks[kind].get(roomId) ?? 0, seq));
  if (!markTimer) markTimer = setTimeout(flushMarks, delayMs);
}

function flushMarks() {
  clearTimeout(markTimer);
  markTimer = null;
  if (!socket?.ready) return; // kept until the next `hello`
  let budget = MARKS_PER_FLUSH;
  for (const kind of ['read', 'delivered']) {
    for (const [room_id, seq] of marks[kind]) {
      if (budget === 0) break;
      const ref = socket.nextRef('mark');
      if (!socket.send({ type: kind, ref, room_id, seq })) return; // kept until the next `hello`
      budget -= 1;
      marks[kind].delete(room_id);
      sentMarks.set(ref, { kind, room_id, seq });
      if (sentMarks.size > SENT_MARKS_KEPT) sentMarks.delete(sentMarks.keys().next().value);
    }
  }
  if (marks.read.size || marks.delivered.size) markTimer = setTimeout(flushMarks, MARK_PACE_MS);
}

/** A refused mark: sent again later if the reason passes, else dropped (e.g. we left the room). */
function onMarkError(ev) {
  const mark = sentMarks.get(ev.ref);
  sentMarks.delete(ev.ref);
  if (!mark || !RETRYABLE.has(ev.code) || !state.rooms.has(mark.room_id)) return;
  requeueMark(mark.kind, mark.room_id, mark.seq, MARK_RETRY_MS);
}

/** Marks the open room read while the page is visible. */
function markCurrentRead() {
  const id = state.current;
  if (!id || document.visibilityState !== 'visible') return;
  const s = state.msgs.get(id);
  if (s?.bySeq.size) queueMark('read', id, Math.max(...seqs(s)));
}

// ---------------------------------------------------------------- typing

let typingRoom = null;
let typingSentAt = 0;

function onComposerInput() {
  autosize();
  const id = state.current;
  if (!id) return;
  state.drafts.set(id, $('#composer').value);
  if (!$('#composer').value) {
    stopTyping();
    return;
  }
  if (typingRoom !== id || Date.now() - typingSentAt > TYPING_SEND_MS) {
    if (typingRoom && typingRoom !== id) stopTyping();
    if (socket?.send({ type: 'typing', room_id: id, active: true })) {
      typingRoom = id;
      typingSentAt = Date.now();
    }
  }
}

function stopTyping() {
  if (typingRoom) socket?.send({ type: 'typing', room_id: typingRoom, active: false });
  typingRoom = null;
  typingSentAt = 0;
}

function onTyping(ev) {
  if (ev.user_id === me()) return;
  let m = state.typing.get(ev.room_id);
  if (!m) state.typing.set(ev.room_id, (m = new Map()));
  clearTimeout(m.get(ev.user_id));
  if (ev.active) m.set(ev.user_id, setTimeout(() => stopShowingTyping(ev.room_id, ev.user_id), TYPING_SHOW_MS));
  else m.delete(ev.user_id);
  scheduleRender();
}

function stopShowingTyping(roomId, userId) {
  const m = state.typing.get(roomId);
  if (!m?.has(userId)) return;
  clearTimeout(m.get(userId));
  m.delete(userId);
  scheduleRender();
}

// ---------------------------------------------------------------- presence

const presenceAsked = new Set();

/** Fetches a user's presence once; `presence` events keep it current afterwards. */
function watchPresence(userId, again = false) {
  if (presenceAsked.has(userId) && !again) return;
  presenceAsked.add(userId);
  const st = state;
  Api.user(userId).then(
    (u) => {
      if (st === state && !state.presence.get(userId)?.live) setPresence(userId, u.online, u.last_seen, false);
    },
    () => presenceAsked.delete(userId),
  );
}

function setPresence(userId, online, lastSeen, live) {
  state.presence.set(userId, { online: !!online, last_seen: lastSeen ?? null, live });
  scheduleRender();
}

const isOnline = (userId) => !!state.presence.get(userId)?.online;

function presenceText(userId) {
  const p = state.presence.get(userId);
  if (!p) return '';
  if (p.online) return 'online';
  return p.last_seen ? `last seen ${relTime(p.last_seen)}` : 'offline';
}

function dot(userId) {
  const on = isOnline(userId);
  return el('span', { class: `presence-dot ${on ? 'online' : 'offline'}`, title: on ? 'online' : 'offline' });
}

// ---------------------------------------------------------------- rendering

let renderTimer = null;
let stickToBottom = false; // scroll to the newest message at the next render
const msgEls = new Map(); // key -> li of the open room

/** Coalesces many changes (e.g. a sync burst) into one render. */
function scheduleRender() {
  if (!renderTimer) renderTimer = setTimeout(render, 0);
}

function render() {
  renderTimer = null;
  if (!state.me) return;
  markCurrentRead(); // first, so the badges below are current
  renderRooms();
  renderHeader();
  renderMessages();
  renderTyping();
  renderPanel();
  const total = [...state.rooms.values()].reduce((n, r) => n + unreadOf(r), 0);
  document.title = total ? `(${total}) Parley` : 'Parley';
}

const roomEls = new Map(); // room_id -> li of the room list

/**
 * Reconciles #room-list, updating entries in place: the list is redrawn on
 * nearly every event, and an entry replaced between a press and a release
 * would swallow the user's click.
 */
function renderRooms() {
  const list = $('#room-list');
  const focused = document.activeElement?.closest?.('.room-item');
  const ids = state.order.filter((id) => state.rooms.has(id));
  const keep = new Set(ids);
  for (const [id, li] of roomEls) {
    if (!keep.has(id)) {
      li.remove();
      roomEls.delete(id);
    }
  }
  ids.forEach((id, i) => {
    const room = state.rooms.get(id);
    const other = otherMember(room);
    const n = unreadOf(room);
    let li = roomEls.get(id);
    if (!li) {
      li = el('li', { class: 'room-item', 'data-room-id': id },
        el('button', { type: 'button', class: 'room-button' },
          el('span', { class: 'room-icon', 'aria-hidden': 'true' }, '#'),
          el('span', { class: 'room-name' }),
          el('span', { class: 'unread' })));
      roomEls.set(id, li);
    }
    const btn = li.firstElementChild;
    const active = id === state.current;
    li.classList.toggle('active', active);
    if (active) btn.setAttribute('aria-current', 'true');
    else btn.removeAttribute('aria-current');
    // Direct rooms lead with the other user's presence dot, groups with '#'.
    const lead = btn.firstElementChild;
    if (other) {
      const on = isOnline(other.user_id);
      if (!lead.classList.contains('presence-dot')) btn.replaceChild(dot(other.user_id), lead);
      else if (lead.classList.contains('online') !== on) {
        lead.className = `presence-dot ${on ? 'online' : 'offline'}`;
        lead.title = on ? 'online' : 'offline';
      }
    } else if (!lead.classList.contains('room-icon')) {
      btn.replaceChild(el('span', { class: 'room-icon', 'aria-hidden': 'true' }, '#'), lead);
    }
    setText($('.room-name', li), roomName(room));
    const badge = $('.unread', li);
    badge.hidden = n === 0;
    badge.title = `${n} unread`;
    setText(badge, String(n));
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] ?? null);
  });
  $('#room-list-empty').hidden = ids.length > 0;
  // Moving an entry (new activity puts it first) drops its focus.
  if (focused?.isConnected && !focused.contains(document.activeElement)) focused.firstElementChild.focus();
}

function renderHeader() {
  const room = state.rooms.get(state.current);
  const other = room && otherMember(room);
  setText($('#room-title'), room ? roomName(room) : 'Select a conversation');
  const pres = $('#room-presence');
  setText(pres, !room ? '' : other ? presenceText(other.user_id) : plural(room.members.length, 'member'));
  pres.dataset.state = other ? (isOnline(other.user_id) ? 'online' : 'offline') : '';
  $('#details-button').disabled = !room;
  $('#composer').disabled = !room;
  $('#send-button').disabled = !room;
}

function messageEl() {
  return el('li', { class: 'message' },
    el('div', { class: 'meta' }, el('span', { class: 'sender' }), el('time', { class: 'time' })),
    el('div', { class: 'body' }),
    el('div', { class: 'foot' }, el('span', { class: 'status' }, el('span', { class: 'sr-only status-word' }))));
}

function updateMessageEl(li, m, marks) {
  const mine = m.sender_id === me();
  li.classList.toggle('mine', mine);
  li.dataset.roomId = m.room_id;
  if (m.seq) li.dataset.seq = String(m.seq);
  else delete li.dataset.seq;
  if (m.client_msg_id) li.dataset.clientMsgId = m.client_msg_id;
  setText($('.sender', li), m.sender_name);
  setText($('.body', li), m.body);
  const time = $('.time', li);
  setText(time, m.sent_at ? timeOfDay(m.sent_at) : '');
  if (m.sent_at) {
    time.dateTime = m.sent_at;
    time.title = fullDate(m.sent_at);
  }
  const status = mine ? statusOf(m, marks) : '';
  if (li.dataset.status !== status) {
    if (status) li.dataset.status = status;
    else delete li.dataset.status;
    const st = $('.status', li);
    st.title = status;
    setText($('.status-word', st), status);
  }
  // A refused message gets retry/discard buttons.
  const actions = $('.actions', li);
  if (status === 'failed' && !actions) {
    $('.foot', li).append(el('span', { class: 'actions' },
      el('button', { type: 'button', class: 'link retry', 'data-cmid': m.client_msg_id }, 'Retry'),
      el('button', { type: 'button', class: 'link discard', 'data-cmid': m.client_msg_id }, 'Discard')));
  } else if (status !== 'failed' && actions) actions.remove();
}

/** Reconciles #message-list with the open room's messages, reusing elements. */
function renderMessages() {
  const list = $('#message-list');
  const id = state.current;
  if (list.dataset.roomId !== (id ?? '')) {
    list.replaceChildren();
    msgEls.clear();
    list.dataset.roomId = id ?? '';
  }
  if (!id) return;
  const s = store(id);
  const items = [...s.bySeq.values()];
  for (const p of state.pending.values()) if (p.room_id === id) items.push(p);
  // Committed messages by seq, then pending ones in the order they were written.
  items.sort((a, b) => (a.seq || Infinity) - (b.seq || Infinity) || a.created - b.created);

  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  const oldHeight = list.scrollHeight;
  const oldTop = list.scrollTop;
  const oldFirst = list.children[1];

  let marker = list.firstElementChild;
  if (!marker?.classList.contains('history-marker')) marker = el('li', { class: 'history-marker' });
  setText(marker, s.loading ? 'Loading…' : !s.loaded || s.hasMore ? '' : items.length ? 'Start of the conversation' : 'No messages yet. Say hello!');

  const marks = othersMarks(id);
  const wanted = [marker];
  const keep = new Set();
  for (const m of items) {
    // Our messages are keyed by client_msg_id so a pending one turns into the sent one in place.
    const key = m.client_msg_id && m.sender_id === me() ? `c:${m.client_msg_id}` : `s:${m.seq}`;
    keep.add(key);
    let li = msgEls.get(key);
    if (!li) msgEls.set(key, (li = messageEl()));
    updateMessageEl(li, m, marks);
    wanted.push(li);
  }
  for (const [key, li] of msgEls) {
    if (!keep.has(key)) {
      li.remove();
      msgEls.delete(key);
    }
  }
  wanted.forEach((node, i) => {
    if (list.children[i] !== node) list.insertBefore(node, list.children[i] ?? null);
  });

  if (stickToBottom || nearBottom) list.scrollTop = list.scrollHeight;
  else if (oldFirst && oldFirst !== list.children[1]) list.scrollTop = oldTop + (list.scrollHeight - oldHeight); // older page prepended
  stickToBottom = false;
  // Keep loading until the list can scroll (so the scroll-up trigger works).
  if (s.loaded && s.hasMore && !s.loading && list.scrollHeight <= list.clientHeight + 40) loadHistory(id, true);
}

function renderTyping() {
  const box = $('#typing-indicator');
  const room = state.rooms.get(state.current);
  const ids = room ? [...(state.typing.get(room.room_id)?.keys() ?? [])] : [];
  const names = ids.map((u) => room.members.find((m) => m.user_id === u)?.username ?? 'someone');
  let text = '';
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = `${names.length} people are typing…`;
  setText(box, text);
}

// ---------------------------------------------------------------- details panel

let panelKey = ''; // what #member-list shows, to skip identical rebuilds

function openPanel() {
  const room = state.rooms.get(state.current);
  if (!room) return;
  $('#members-panel').hidden = false;
  panelKey = '';
  $('#details-button').setAttribute('aria-expanded', 'true');
  for (const m of room.members.slice(0, 50)) if (m.user_id !== me()) watchPresence(m.user_id);
  renderPanel();
  $('#panel-close').focus();
}

function closePanel() {
  const panel = $('#members-panel');
  if (panel.hidden) return;
  panel.hidden = true;
  $('#details-button').setAttribute('aria-expanded', 'false');
  setError('#panel-error', '');
  if (panel.contains(document.activeElement)) $('#details-button').focus();
}

function renderPanel() {
  if ($('#members-panel').hidden) return;
  const room = state.rooms.get(state.current);
  if (!room) {
    closePanel();
    return;
  }
  const manage = canManage(room);
  setText($('#panel-title'), roomName(room));
  setText($('#panel-kind'), room.kind === 'direct' ? 'Direct conversation' : `Group · ${plural(room.members.length, 'member')}`);
  // Rebuilt only when it changes: renders come with nearly every event, and a
  // button replaced between a press and a release would swallow the click.
  const key = JSON.stringify([room.room_id, manage, room.members.map((m) => [m.user_id, m.username, m.role, isOnline(m.user_id)])]);
  if (key !== panelKey) {
    panelKey = key;
    renderMembers(room, manage);
  }
  $('#add-member-form').hidden = !manage;
  $('#rename-form').hidden = !manage;
  // The name as it is, unless the user is editing it.
  const rename = $('#rename-input');
  const shown = `${room.room_id}:${room.name}`;
  if (document.activeElement !== rename && rename.dataset.shown !== shown) {
    rename.value = room.name;
    rename.dataset.shown = shown;
  }
  $('#leave-button').hidden = room.kind !== 'group';
}

function renderMembers(room, manage) {
  const focusedUser = document.activeElement?.closest?.('.member')?.dataset.userId;
  const owner = myRole(room) === 'owner';
  $('#member-list').replaceChildren(...room.members.map((m) => {
    const self = m.user_id === me();
    const li = el('li', { class: 'member', 'data-user-id': m.user_id },
      self ? el('span', { class: 'presence-dot online', title: 'online' }) : dot(m.user_id),
      el('span', { class: 'member-name' }, self ? `${m.username} (you)` : m.username),
      el('span', { class: `role role-${m.role}` }, m.role));
    // Actions go on a line of their own, under the name.
    const actions = [];
    if (manage && !self && m.role !== 'owner') {
      // Only the owner changes roles (between admin and member).
      if (owner) {
        const to = m.role === 'admin' ? 'member' : 'admin';
        actions.push(el('button', { type: 'button', class: 'ghost small set-role', 'data-user-id': m.user_id,
          'data-role': to, 'aria-label': `Make ${m.username} ${to === 'admin' ? 'an admin' : 'a plain member'}` },
          to === 'admin' ? 'Make admin' : 'Make member'));
      }
      // The owner removes anyone; an admin, plain members only.
      if (owner || m.role === 'member') actions.push(el('button', { type: 'button', class: 'ghost small remove-member', 'data-user-id': m.user_id,
        'aria-label': `Remove ${m.username}` }, 'Remove'));
    }
    if (actions.length) li.append(el('div', { class: 'member-actions' }, ...actions));
    return li;
  }));
  if (focusedUser) $(`.member[data-user-id="${CSS.escape(focusedUser)}"] button`)?.focus();
}

// ---------------------------------------------------------------- navigation

/** Rooms are addressed by the URL hash, so Back returns to the list on phones. */
function navigate(roomId) {
  const hash = roomId ? `#room/${encodeURIComponent(roomId)}` : '#';
  if (location.hash !== hash && !(hash === '#' && !location.hash)) location.hash = hash;
  else applyRoute();
}

function applyRoute() {
  const m = /^#room\/(.+)$/.exec(location.hash);
  let id = null;
  try {
    id = m ? decodeURIComponent(m[1]) : null;
  } catch {
    // A mangled link names no room: show the list.
  }
  openRoom(id && state.rooms.has(id) ? id : null);
}

function openRoom(id) {
  const composer = $('#composer');
  if (state.current !== id) {
    stopTyping();
    if (state.current) state.drafts.set(state.current, composer.value);
    state.current = id;
    composer.value = state.drafts.get(id) ?? '';
    autosize();
    stickToBottom = true;
    closePanel();
  }
  document.body.classList.toggle('show-chat', !!id);
  render();
  if (!id) return;
  if (!store(id).loaded) loadHistory(id, false);
  if (!matchMedia('(max-width: 720px)').matches) composer.focus(); // no surprise keyboard on phones
}

// ---------------------------------------------------------------- WebSocket events

async function onHello() {
  // Membership may have changed while we were away: refresh before syncing.
  await loadRooms().catch(showError);
  const rooms = {};
  for (const id of state.rooms.keys()) rooms[id] = state.syncPoint.get(id) ?? 0;
  socket?.send({ type: 'sync', ref: socket.nextRef('sync'), rooms });
  flushMarks();
  for (const p of state.pending.values()) trySend(p);
  for (const p of state.presence.values()) p.live = false; // events may have been missed
  for (const room of state.rooms.values()) {
    const other = otherMember(room);
    if (other) watchPresence(other.user_id, true); // presence may have changed meanwhile
  }
}

function onEvent(ev) {
  switch (ev.type) {
    case 'hello':
      onHello();
      break;
    case 'message':
      addMessage(ev, true);
      break;
    case 'sent':
      onSent(ev);
      break;
    case 'synced':
      // Everything up to each head has reached this device.
      for (const [roomId, head] of Object.entries(ev.rooms ?? {})) {
        if (head > 0) queueMark('delivered', roomId, head);
      }
      scheduleRender();
      break;
    case 'receipt':
      setReceipt(ev.room_id, ev.user_id, ev.delivered_seq, ev.read_seq);
      scheduleRender();
      break;
    case 'typing':
      onTyping(ev);
      break;
    case 'presence':
      setPresence(ev.user_id, ev.status === 'online', ev.last_seen, true);
      break;
    case 'room':
      onRoomEvent(ev);
      break;
    case 'error':
      onWsError(ev);
      break;
    default:
      break; // pong and anything newer
  }
}

function onRoomEvent(ev) {
  const r = ev.room;
  if (!r?.room_id) return;
  if (r.members?.some((m) => m.user_id === me())) mergeRoom(r);
  else lostRoom(r.room_id); // we were removed, or left (here that dropped it already)
  scheduleRoomsReload(); // refresh counters
  scheduleRender();
}

function onWsError(ev) {
  // A refused `auth` renewal is not the user's business: the server closes
  // with 4001 when the old token runs out and we reconnect with a fresh one.
  if (ev.ref?.startsWith('auth-')) return;
  // Nor is a refused receipt mark: it is sent again, or no longer matters.
  if (ev.ref?.startsWith('mark-')) {
    onMarkError(ev);
    return;
  }
  toast(`${ev.code}: ${ev.message}`);
  const p = ev.ref && [...state.pending.values()].find((x) => x.ref === ev.ref);
  if (!p) return;
  if (RETRYABLE.has(ev.code)) p.lastTry = Date.now(); // resent by the resend timer later
  else {
    p.failed = true;
    scheduleRender();
  }
}

function onSocketState(s, retryMs) {
  const box = $('#connection-status');
  box.dataset.state = s;
  setText(box, s === 'online' ? 'Connected' : s === 'connecting' ? 'Connecting…'
    : retryMs ? `Offline, retrying in ${Math.ceil(retryMs / 1000)} s` : 'Offline');
}

// ---------------------------------------------------------------- session

function showView(which) {
  $('#auth-view').hidden = which !== 'auth';
  $('#app-view').hidden = which !== 'app';
}

async function startSession(user) {
  endSession();
  state.me = { user_id: user.user_id, username: user.username };
  setText($('#me-name'), user.username);
  loadPending();
  loadReceipts();
  showView('app');
  render();
  try {
    await loadRooms();
  } catch (e) {
    showError(e); // offline: the socket will load rooms once it connects
  }
  if (!state.me) return; // logged out meanwhile
  applyRoute();
  socket = new Socket({ token: freshToken, refresh, onEvent, onState: onSocketState });
  socket.start();
  timers = [
    setInterval(resendStale, 3000),
    setInterval(() => state.current && renderHeader(), 30_000), // "last seen n min ago"
  ];
}

function endSession() {
  socket?.stop();
  socket = null;
  timers.forEach(clearInterval);
  clearTimeout(reloadTimer);
  clearTimeout(markTimer);
  clearTimeout(receiptSaveTimer);
  markTimer = null;
  marks.delivered.clear();
  marks.read.clear();
  for (const m of state.typing.values()) for (const t of m.values()) clearTimeout(t);
  presenceAsked.clear();
  msgEls.clear();
  typingRoom = null;
  state = freshState();
  $('#message-list').replaceChildren();
  $('#message-list').dataset.roomId = '';
  $('#room-list').replaceChildren();
  roomEls.clear();
  closePanel();
  document.body.classList.remove('show-chat');
  document.title = 'Parley';
}

function logout() {
  if (state.me) {
    localStorage.removeItem(pendingKey());
    localStorage.removeItem(receiptsKey());
  }
  endSession();
  Api.logout();
  if (location.hash) history.replaceState(null, '', location.pathname);
  showView('auth');
  $('#login-username').focus();
}

// ---------------------------------------------------------------- forms and errors

function errorText(e) {
  if (e instanceof ApiError) {
    return e.code === 'rate_limited' && e.retryAfter ? `${e.message} (try again in ${e.retryAfter} s)` : e.message;
  }
  return 'Cannot reach the server. Check your connection and try again.';
}

function showError(e) {
  if (e instanceof ApiError && e.status === 401) return; // handled by the auth-lost path
  toast(e instanceof ApiError ? `${e.code}: ${errorText(e)}` : errorText(e));
}

function setError(sel, text) {
  const p = $(sel);
  setText(p, text);
  p.hidden = !text;
}

/** Runs an async form action with its buttons disabled. */
async function busy(form, fn) {
  const buttons = [...form.querySelectorAll('button')];
  buttons.forEach((b) => (b.disabled = true));
  try {
    await fn();
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}

async function authSubmit(register) {
  const username = $('#login-username').value.trim();
  const password = $('#login-password').value;
  setError('#auth-error', '');
  if (!username || !password) {
    setError('#auth-error', 'Enter a username and a password.');
    return;
  }
  await busy($('#auth-form'), async () => {
    try {
      if (register) await Api.register(username, password);
      const user = await Api.login(username, password);
      $('#login-password').value = '';
      await startSession(user);
    } catch (e) {
      setError('#auth-error', errorText(e));
    }
  });
}

/** Opens (or creates) a room from a form and shows it. */
async function roomFromForm(form, request) {
  setError('#new-chat-error', '');
  await busy(form, async () => {
    try {
      const room = mergeRoom(await request());
      state.order = [room.room_id, ...state.order.filter((x) => x !== room.room_id)];
      form.reset();
      navigate(room.room_id);
    } catch (e) {
      setError('#new-chat-error', errorText(e));
    }
  });
}

function autosize() {
  const c = $('#composer');
  c.style.height = 'auto';
  c.style.height = `${Math.min(c.scrollHeight, 160)}px`;
}

// ---------------------------------------------------------------- wiring

function wire() {
  $('#auth-form').addEventListener('submit', (e) => {
    e.preventDefault();
    authSubmit(false);
  });
  $('#register-button').addEventListener('click', () => authSubmit(true));
  $('#logout-button').addEventListener('click', logout);

  $('#room-list').addEventListener('click', (e) => {
    const item = e.target.closest('.room-item');
    if (item) navigate(item.dataset.roomId);
  });
  $('#back-button').addEventListener('click', () => navigate(null));
  window.addEventListener('hashchange', () => state.me && applyRoute());

  $('#new-direct-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const username = $('#new-direct-username').value.trim();
    if (username) roomFromForm(e.target, () => Api.direct(username));
  });
  $('#new-group-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const name = $('#new-group-name').value.trim();
    const members = $('#new-group-members').value.split(/[\s,]+/).filter(Boolean);
    if (!name) setError('#new-chat-error', 'Give the group a name.');
    else roomFromForm(e.target, () => Api.createGroup(name, members));
  });

  // Composer: Enter sends, Shift+Enter inserts a newline.
  const composer = $('#composer');
  $('#composer-form').addEventListener('submit', (e) => {
    e.preventDefault();
    sendMessage();
    composer.focus();
  });
  composer.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      sendMessage();
    }
  });
  composer.addEventListener('input', onComposerInput);
  composer.addEventListener('blur', stopTyping);

  // Older history when scrolled near the top.
  $('#message-list').addEventListener('scroll', (e) => {
    if (state.current && e.target.scrollTop < 120) loadHistory(state.current, true);
  }, { passive: true });
  $('#message-list').addEventListener('click', (e) => {
    const btn = e.target.closest('button');
    const p = btn?.dataset.cmid && state.pending.get(btn.dataset.cmid);
    if (!p) return;
    if (btn.classList.contains('retry')) {
      p.failed = false;
      trySend(p);
    } else {
      state.pending.delete(p.client_msg_id);
      savePending();
    }
    scheduleRender();
  });

  // Details panel.
  $('#details-button').addEventListener('click', () => ($('#members-panel').hidden ? openPanel() : closePanel()));
  $('#panel-close').addEventListener('click', closePanel);
  $('#add-member-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const roomId = state.current;
    const username = $('#add-member-username').value.trim();
    if (!roomId || !username) return;
    setError('#panel-error', '');
    busy(e.target, async () => {
      try {
        mergeRoom(await Api.addMember(roomId, username));
        e.target.reset();
        scheduleRender();
      } catch (err) {
        setError('#panel-error', errorText(err));
      }
    });
  });
  $('#rename-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const roomId = state.current;
    const name = $('#rename-input').value;
    if (!roomId || name === state.rooms.get(roomId)?.name) return;
    setError('#panel-error', '');
    busy(e.target, async () => {
      try {
        mergeRoom(await Api.rename(roomId, name));
        $('#rename-input').blur();
        scheduleRender();
      } catch (err) {
        setError('#panel-error', errorText(err));
      }
    });
  });
  $('#member-list').addEventListener('click', async (e) => {
    const btn = e.target.closest('.remove-member, .set-role');
    const roomId = state.current;
    if (!btn || !roomId) return;
    btn.disabled = true;
    try {
      if (btn.classList.contains('set-role')) {
        mergeRoom(await Api.setRole(roomId, btn.dataset.userId, btn.dataset.role));
        scheduleRender();
        return;
      }
      await Api.removeMember(roomId, btn.dataset.userId);
      mergeRoom(await Api.room(roomId));
      scheduleRender();
    } catch (err) {
      btn.disabled = false;
      setError('#panel-error', errorText(err));
    }
  });
  $('#leave-button').addEventListener('click', async () => {
    const roomId = state.current;
    const room = state.rooms.get(roomId);
    if (!room) return;
    const owner = myRole(room) === 'owner' && room.members.length > 1;
    const question = `Leave “${roomName(room)}”?` +
      (owner ? ' You own it: ownership passes to another member.' : '');
    if (!confirm(question)) return;
    try {
      await Api.removeMember(roomId, me());
      dropRoom(roomId);
    } catch (err) {
      setError('#panel-error', errorText(err));
    }
  });

  // Escape closes the panel, then any toasts.
  document.addEventListener('keydown', (e) => {
    if (e.key !== 'Escape') return;
    if (!$('#members-panel').hidden) closePanel();
    else clearToasts();
  });

  window.addEventListener('pagehide', saveReceipts);

  // Reading: mark read when the page becomes visible again.
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') {
      scheduleRender(); // marks the open room read
      socket?.reconnectNow();
    } else stopTyping();
  });
}

async function boot() {
  wire();
  // Renew the open WebSocket's session with each new access token (the `auth`
  // frame of docs/protocol.md); otherwise the server closes it with 4001 when
  // the token it was opened with expires.
  setTokenHandler((token) => socket?.send({ type: 'auth', ref: socket.nextRef('auth'), token }));
  setAuthLostHandler(() => {
    endSession();
    showView('auth');
    setError('#auth-error', 'Your session has ended. Please log in again.');
  });
  const s = currentSession();
  if (!s) {
    showView('auth');
    $('#login-username').focus();
    return;
  }
  scheduleRefresh();
  let user;
  try {
    user = await Api.me();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return; // the auth-lost handler showed the login
    user = s.user; // server unreachable: run offline, the socket keeps trying
  }
  await startSession(user);
}

boot();
