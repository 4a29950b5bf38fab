// A real WebSocket client (the npm package ws) against GET /v1/me/events
// of a gateway in front of a real broker, users and playlists actor.
// Driven by tests/gateway/test_gw_ws_stack.c, which starts the processes
// and passes: GW (host:port), ADMIN_EMAIL, ADMIN_PASSWORD, SECRET_FILE
// (to sign a token that expires soon), QUEUE_FRAMES (the gateway's).
// Prints one line per check and "N passed, N failed" last; exits 1 on a
// failure.
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import WebSocket from 'ws';

const GW = process.env.GW;
const base = `http://${GW}`;
let passed = 0, failed = 0;
function check(ok, what) {
  if (ok) passed++; else failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function http(method, path, token, body) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(base + path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return {status: res.status, json};
}
async function login(email, password) {
  const r = await http('POST', '/v1/auth/login', null, {email, password});
  if (r.status !== 200) throw new Error(`login ${email}: ${r.status}`);
  return r.json.access_token;
}

// A client that records frames and lets a test wait for one.
function connect(token, {since, query} = {}) {
  const params = new URLSearchParams();
  if (since !== undefined) params.set('since', String(since));
  if (query) params.set('access_token', token);
  const url = `ws://${GW}/v1/me/events${params.size ? '?' + params : ''}`;
  const ws = new WebSocket(url, query ? {} : {headers: {authorization: `Bearer ${token}`}});
  const c = {ws, token, frames: [], waiters: [], closed: null, refused: null};
  ws.on('message', (m) => {
    const f = JSON.parse(m.toString());
    f.at = Date.now();
    c.frames.push(f);
    c.waiters = c.waiters.filter((w) => !(w.pred(f) && (w.resolve(f), true)));
  });
  ws.on('close', (code, reason) => { c.closed = {code, reason: reason.toString(), at: Date.now()}; });
  ws.on('unexpected-response', (req, res) => { c.refused = res.statusCode; ws.terminate(); });
  ws.on('error', () => {});
  c.wait = (pred, ms = 2000) => {
    const f = c.frames.find(pred);
    if (f) return Promise.resolve(f);
    return new Promise((resolve) => {
      const w = {pred, resolve};
      c.waiters.push(w);
      setTimeout(() => resolve(null), ms);
    });
  };
  c.waitClose = async (ms) => {
    const until = Date.now() + ms;
    while (!c.closed && Date.now() < until) await sleep(20);
    return c.closed;
  };
  return c;
}

function sign(sub, expIn) {
  const secret = fs.readFileSync(process.env.SECRET_FILE);
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const h = b64({alg: 'HS256', typ: 'JWT'});
  const p = b64({iss: 'musicbus', aud: 'musicbus-api', sub, sid: 'ws-test', tier: 'free',
                 roles: ['user'], iat: now, exp: now + expIn, jti: crypto.randomUUID()});
  const s = crypto.createHmac('sha256', secret).update(`${h}.${p}`).digest('base64url');
  return `${h}.${p}.${s}`;
}

// A raw socket that does the handshake and then never reads.
function slowClient(token) {
  return new Promise((resolve) => {
    const sock = net.connect({host: GW.split(':')[0], port: +GW.split(':')[1]}, () => {
      sock.write(`GET /v1/me/events HTTP/1.1\r\nHost: ${GW}\r\nUpgrade: websocket\r\n` +
                 `Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n` +
                 `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\n` +
                 `Authorization: Bearer ${token}\r\n\r\n`);
    });
    const chunks = [];
    sock.once('data', (d) => { chunks.push(d); sock.pause(); resolve({sock, chunks}); });
  });
}
// Reads what the slow client has (resuming it) and returns the close code
// of the close frame found, if any.
async function slowCloseCode(slow) {
  slow.sock.on('data', (d) => slow.chunks.push(d));
  slow.sock.resume();
  const until = Date.now() + 5000;
  let ended = false;
  slow.sock.on('close', () => { ended = true; });
  while (!ended && Date.now() < until) await sleep(20);
  let buf = Buffer.concat(slow.chunks);
  buf = buf.subarray(buf.indexOf('\r\n\r\n') + 4);
  let frames = 0;
  for (let i = 0; i + 2 <= buf.length;) {
    const op = buf[i] & 0x0f;
    let len = buf[i + 1] & 0x7f, at = i + 2;
    if (len === 126) { len = buf.readUInt16BE(at); at += 2; }
    if (at + len > buf.length) break;
    if (op === 0x8) return {code: buf.readUInt16BE(at), frames, ended};
    frames++;
    i = at + len;
  }
  return {code: null, frames, ended};
}

async function main() {
  const adminToken = await login(process.env.ADMIN_EMAIL, process.env.ADMIN_PASSWORD);
  const email = `alice-${Date.now()}@musicbus.test`;
  const password = 'alice-pass-7Qx';
  const su = await http('POST', '/v1/auth/signup', null, {email, password, display_name: 'Alice', country: 'FR'});
  check(su.status === 201 || su.status === 200, `sign-up (${su.status})`);
  const aliceId = su.json.id;
  const session1 = await login(email, password); // the WebSocket's
  const session2 = await login(email, password); // the HTTP changes'

  // No token, a bad one: refused before the upgrade.
  const none = connect('');
  await none.waitClose(2000);
  check(none.refused === 401, `no token: 401 (${none.refused})`);

  // 1. A change over HTTP from the second session reaches the first.
  const a = connect(session1);
  const ready = await a.wait((f) => f.type === 'ready', 5000);
  check(ready !== null, 'ready frame');
  let t = Date.now();
  await http('PATCH', '/v1/me', session2, {display_name: 'Alice Two'});
  let f = await a.wait((x) => x.topic === 'users.user' && x.type === 'updated', 1000);
  check(f && f.data.user.display_name === 'Alice Two', `account change notified in ${f ? f.at - t : '>1000'} ms`);
  t = Date.now();
  await http('PUT', `/v1/users/${aliceId}/tier`, adminToken, {tier: 'premium'});
  f = await a.wait((x) => x.type === 'tier_changed', 1000);
  check(f && f.data.user.tier === 'premium', `tier change notified in ${f ? f.at - t : '>1000'} ms`);

  // A playlist changed over HTTP: its owner hears of it with the new
  // snapshot id, and so does a user following it.
  const bobEmail = `bob-${Date.now()}@musicbus.test`;
  await http('POST', '/v1/auth/signup', null, {email: bobEmail, password, display_name: 'Bob', country: 'DE'});
  const bob = connect(await login(bobEmail, password));
  await bob.wait((x) => x.type === 'ready', 5000);
  const created = await http('POST', '/v1/me/playlists', session2, {name: 'Road trip', public: true});
  if (created.status === 404 || created.status === 405) {
    console.log('skip playlists over HTTP: no route for creating a playlist in schemas/openapi.json yet');
  } else {
    check(created.status === 201, `playlist created (${created.status})`);
    const pid = created.json.id;
    f = await a.wait((x) => x.topic === 'playlists.playlist' && x.type === 'created', 1000);
    check(f && f.data.id === pid, 'playlist creation notified to its owner');
    const fl = await http('PUT', `/v1/playlists/${pid}/followers`, bob.token, undefined);
    f = await bob.wait((x) => x.topic === 'playlists.follow' && x.type === 'followed', 1000);
    check(fl.status === 204 && f !== null, `the follow notified to the follower (${fl.status})`);
    t = Date.now();
    const ch = await http('PATCH', `/v1/playlists/${pid}`, session2, {name: 'Road trip 2'});
    f = await a.wait((x) => x.topic === 'playlists.playlist' && x.type === 'changed', 1000);
    check(ch.status < 300 && f && f.data.snapshot_id === ch.json.snapshot_id && f.data.name === 'Road trip 2',
          `playlist change notified to its owner with the new snapshot id in ${f ? f.at - t : '>1000'} ms`);
    const g = await bob.wait((x) => x.topic === 'playlists.playlist' && x.type === 'changed', 1000);
    check(g && g.data.snapshot_id === ch.json.snapshot_id,
          `and to its follower in ${g ? g.at - t : '>1000'} ms`);
  }
  bob.ws.close();

  // 2. A slow client (never reads) does not hold up a fast one.
  const slow = await slowClient(session1);
  const fast = connect(session1);
  await fast.wait((x) => x.type === 'ready', 5000);
  const n = 1000;
  let worst = 0, missing = 0;
  for (let i = 0; i < n; i++) {
    const name = `Alice ${i}`;
    const t0 = Date.now();
    await http('PATCH', '/v1/me', session2, {display_name: name});
    const g = await fast.wait((x) => x.type === 'updated' && x.data.user.display_name === name, 1000);
    if (!g) missing++;
    else worst = Math.max(worst, g.at - t0);
  }
  check(missing === 0 && worst < 1000, `fast client got all ${n} frames (worst ${worst} ms after the change)`);
  // Its close frame (1008) reaches it only if there was room for it in
  // the socket before the gateway gave up waiting (2 s): either way the
  // connection is gone, short of the last frames.
  const sc = await slowCloseCode(slow);
  check(sc.code === 1008 || (sc.code === null && sc.ended && sc.frames < n),
        `slow client cut off after ${sc.frames} frames (close code ${sc.code}, ended ${sc.ended})`);

  // 3. Resuming: frames missed while away come again, then ready.
  const last = fast.frames.filter((x) => x.seq !== undefined && x.topic).at(-1).seq;
  fast.ws.close(1000);
  await fast.waitClose(2000);
  check(fast.closed && fast.closed.code === 1000, `normal close (${fast.closed && fast.closed.code})`);
  for (const name of ['Away 1', 'Away 2', 'Away 3'])
    await http('PATCH', '/v1/me', session2, {display_name: name});
  const back = connect(session1, {since: last, query: true});
  const r2 = await back.wait((x) => x.type === 'ready', 5000);
  // The last change may reach the bus after the reconnection (the users
  // actor publishes through its outbox): then it comes live.
  await back.wait((x) => x.type === 'updated' && x.data.user.display_name === 'Away 3', 1000);
  const missed = back.frames.filter((x) => x.type === 'updated').map((x) => x.data.user.display_name);
  check(r2 && missed.join(',') === 'Away 1,Away 2,Away 3', `resumed with since (token in the query): ${missed.join(',')}`);
  const old = connect(session1, {since: 0});
  const rs = await old.wait((x) => x.type === 'resync', 5000);
  check(rs !== null, 'since older than the ring: resync');
  back.ws.close();
  old.ws.close();

  // 4. An access token that expires closes the socket with 4001.
  const soon = connect(sign(aliceId, 2));
  const c = await soon.waitClose(8000);
  check(c && c.code === 4001, `token expired: ${c && c.code} ${c && c.reason}`);

  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main().catch((e) => { console.log(`FAIL ${e.stack}`); console.log(`${passed} passed, ${failed + 1} failed`); process.exit(1); });
