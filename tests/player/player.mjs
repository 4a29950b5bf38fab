// player.mjs — a real HLS player against a running musicbus gateway:
// hls.js in headless Debian Chromium (/usr/bin/chromium), driven by
// playwright-core. Run by test_player.c, which starts the stack, uploads a
// track and hands over the signed master playlist URLs:
//
//   node player.mjs LISTENER=URL=RUNGS [LISTENER=URL=RUNGS...]
//     LISTENER  a name for the log ("premium", "free")
//     URL       the grant's master playlist (absolute, on the gateway)
//     RUNGS     the rungs of that master playlist, in its order, as
//               name:BANDWIDTH,... (e.g. a64:71234,a128:139876)
//
// Each listener gets a browser context of its own, loads a page (served
// here on 127.0.0.1, another origin than the gateway's, so the gateway's
// CORS headers are what lets hls.js read the media), plays the track
// muted, and checks:
//   - the levels hls.js parsed are exactly the master's rungs (the FLAC
//     rung only when MSE takes fLaC in MP4; the log says which);
//   - currentTime advances past PLAY_S seconds;
//   - switches forced with hls.nextLevel (at the next fragment) and then
//     hls.currentLevel (at once, buffer flushed; to FLAC for premium) each
//     load fragments of the new rung (FRAG_LOADED with that level and gateway requests below
//     that rung's folder), reach LEVEL_SWITCHED, and playback goes on
//     AFTER_S seconds past the switch;
//   - every request the player made answered 200, and a rung the master
//     does not list answers 403 (a free grant fetching a192/).
// What it saw goes to stderr as lines "player: ..." and, as one JSON
// document, to stdout. Exit 0 when every check passed, 1 otherwise.
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const PLAY_S = 3; // played before the first switch
const AFTER_S = 2; // played after each switch
const WAIT_MS = 40000; // any one condition; generous for a loaded 2-core machine
const WATCHDOG_MS = 150000; // the whole run

const say = (...a) => process.stderr.write(`player: ${a.join(' ')}\n`);
const failures = [];
const check = (ok, what) => {
  if (!ok) failures.push(what);
  say(ok ? 'ok  ' : 'FAIL', what);
  return ok;
};

const listeners = process.argv.slice(2).map((arg) => {
  const [name, url, rungs] = arg.split('=');
  if (!name || !url || !rungs) throw new Error(`bad argument ${arg}: want LISTENER=URL=RUNGS`);
  return {
    name,
    url,
    rungs: rungs.split(',').map((r) => {
      const [rung, bw] = r.split(':');
      return { rung, bandwidth: Number(bw) };
    }),
  };
});
if (!listeners.length) {
  say('usage: node player.mjs LISTENER=URL=RUNGS...');
  process.exit(2);
}

// The page and hls.js, from a server of our own on a port the OS picks.
const require = createRequire(import.meta.url);
const hlsSource = readFileSync(require.resolve('hls.js/dist/hls.min.js'));
const hlsVersion = JSON.parse(readFileSync(require.resolve('hls.js/package.json'))).version;
const PAGE = `<!doctype html><meta charset="utf-8"><title>musicbus player</title>
<link rel="icon" href="data:,">
<audio id="audio" muted preload="auto"></audio><script src="/hls.min.js"></script>`;
const server = http.createServer((req, res) => {
  if (req.url === '/') res.writeHead(200, { 'content-type': 'text/html' }).end(PAGE);
  else if (req.url === '/hls.min.js')
    res.writeHead(200, { 'content-type': 'text/javascript' }).end(hlsSource);
  else res.writeHead(404).end();
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const pageUrl = `http://127.0.0.1:${server.address().port}/`;

let browser;
const watchdog = setTimeout(() => {
  say(`FAIL the run took more than ${WATCHDOG_MS} ms`);
  process.exit(1);
}, WATCHDOG_MS);

// In the page: hls.js on the <audio>, every event of interest kept in
// window.st for the waits below.
function startInPage(url) {
  const audio = document.getElementById('audio');
  const E = Hls.Events;
  const st = (window.st = { parsed: false, levels: [], frags: [], switched: [], errors: [] });
  // No automatic start: the level is chosen below, so ABR never moves the
  // player on its own (on loopback its estimate would soon pick FLAC).
  const hls = (window.hls = new Hls({ enableWorker: true, autoStartLoad: false }));
  const now = () => performance.now();
  hls.on(E.MANIFEST_PARSED, (_, d) => {
    st.levels = d.levels.map((l) => ({
      url: l.url[0] ?? l.uri,
      bitrate: l.bitrate,
      codecs: l.audioCodec ?? l.attrs?.CODECS ?? null,
    }));
    // Start on the highest AAC level, as a listener on a good line would,
    // in manual mode (setting currentLevel turns ABR off).
    const aac = st.levels.map((l, i) => [l, i]).filter(([l]) => /mp4a/.test(l.codecs ?? ''));
    st.start = aac.length ? aac[aac.length - 1][1] : 0;
    hls.currentLevel = st.start;
    hls.startLoad();
    st.parsed = true;
  });
  hls.on(E.FRAG_LOADED, (_, d) => {
    if (d.frag.type === 'main')
      st.frags.push({ level: d.frag.level, sn: d.frag.sn, url: d.frag.url, at: now() });
  });
  hls.on(E.LEVEL_SWITCHED, (_, d) =>
    st.switched.push({ level: d.level, at: now(), t: audio.currentTime }));
  hls.on(E.ERROR, (_, d) =>
    st.errors.push({ type: d.type, details: d.details, fatal: d.fatal,
                     status: d.response?.code ?? null }));
  hls.attachMedia(audio);
  hls.loadSource(url);
}

const rungOf = (url) => (url.match(/\/([A-Za-z0-9_-]+)\/[^/]+$/) || [])[1] ?? '?';

async function listen(who) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const requests = []; // gateway requests: {rung, file, status}
  page.on('response', (r) => {
    const u = new URL(r.url());
    if (u.pathname.startsWith('/media/'))
      requests.push({ rung: rungOf(u.pathname), file: u.pathname.split('/').pop(),
                      status: r.status(), at: Date.now() });
  });
  page.on('requestfailed', (r) => say(`${who.name}: request failed ${r.url()}: ${r.failure()?.errorText}`));
  page.on('pageerror', (e) => say(`${who.name}: page error ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') say(`${who.name}: console ${m.type()}: ${m.text()}`);
  });
  const wait = (fn, arg, what) =>
    page.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 100 }).catch(async (e) => {
      const st = await page.evaluate(() => ({ t: document.getElementById('audio').currentTime,
        errors: window.st?.errors, switched: window.st?.switched })).catch(() => null);
      throw new Error(`${who.name}: ${what} within ${WAIT_MS} ms: ${e.message.split('\n')[0]} ` +
                      `(state ${JSON.stringify(st)})`);
    });
  const currentTime = () => page.evaluate(() => document.getElementById('audio').currentTime);

  await page.goto(pageUrl);
  const mse = await page.evaluate(() => ({
    hls: Hls.isSupported(),
    aac: MediaSource.isTypeSupported('audio/mp4; codecs="mp4a.40.2"'),
    flac: MediaSource.isTypeSupported('audio/mp4; codecs="fLaC"') ||
          MediaSource.isTypeSupported('audio/mp4; codecs="flac"'),
  }));
  say(`${who.name}: MSE supports AAC in fMP4: ${mse.aac}, FLAC in fMP4: ${mse.flac}; ` +
      `Hls.isSupported ${mse.hls}`);
  check(mse.hls && mse.aac, `${who.name}: hls.js and AAC in fMP4 are supported`);
  const obs = { listener: who.name, mse, levels: [], switches: [], requests: {}, errors: [] };

  // Levels: what the master lists, less FLAC when MSE cannot play it.
  await page.evaluate(startInPage, who.url);
  await wait(() => window.st.parsed, null, 'MANIFEST_PARSED');
  const levels = await page.evaluate(() => window.st.levels);
  obs.levels = levels.map((l) => ({ rung: rungOf(l.url), bitrate: l.bitrate, codecs: l.codecs }));
  say(`${who.name}: hls.js ${hlsVersion} parsed ${levels.length} levels: ` +
      obs.levels.map((l, i) => `${i}=${l.rung} ${l.bitrate} b/s ${l.codecs}`).join(', '));
  const expected = who.rungs.filter((r) => r.rung !== 'flac' || mse.flac);
  const bySort = (a, b) => a.bandwidth - b.bandwidth || a.rung.localeCompare(b.rung);
  const want = [...expected].sort(bySort).map((r) => `${r.rung}:${r.bandwidth}`).join(',');
  const got = obs.levels.map((l) => ({ rung: l.rung, bandwidth: l.bitrate })).sort(bySort)
    .map((r) => `${r.rung}:${r.bandwidth}`).join(',');
  check(want === got, `${who.name}: levels are the master's rungs (want ${want}, got ${got})`);

  // Play.
  await page.evaluate(() => document.getElementById('audio').play());
  await wait((s) => document.getElementById('audio').currentTime > s, PLAY_S, `currentTime past ${PLAY_S} s`);
  obs.played_s = await currentTime();
  say(`${who.name}: playing, currentTime ${obs.played_s.toFixed(2)} s`);

  // Switches: first with hls.nextLevel to the lowest other level (at the
  // next fragment), then with hls.currentLevel (at once, buffer flushed)
  // to the FLAC rung when MSE plays it, else the highest level. In this
  // order because of hls.js 1.7.4: once its SourceBuffer went from AAC to
  // FLAC it never changes the type back (README.md), so AAC -> FLAC -> AAC
  // fails in the player, not in what the gateway serves.
  const current = await page.evaluate(() => window.hls.currentLevel);
  const start = await page.evaluate(() => window.st.start);
  const before = await page.evaluate(() => window.st.switched.map((s) => s.level));
  say(`${who.name}: started on level ${start} (${obs.levels[start]?.rung}), ABR off; ` +
      `LEVEL_SWITCHED so far: ${before.join(',')}`);
  check(current === start && before.every((l) => l === start),
    `${who.name}: the player stayed on its start level until told otherwise`);
  const low = current === 0 ? 1 : 0;
  const flacLevel = obs.levels.findIndex((l) => l.rung === 'flac');
  const top = flacLevel >= 0 ? flacLevel : obs.levels.length - 1;
  const plan = [
    { how: 'nextLevel', to: low },
    { how: 'currentLevel', to: top === low ? current : top },
  ];
  for (const step of plan) {
    const from = await page.evaluate(() => window.hls.currentLevel);
    const t0 = await currentTime();
    const at = await page.evaluate(({ how, to }) => {
      window.hls[how] = to;
      return performance.now();
    }, step);
    const sw = { how: step.how, from, from_rung: obs.levels[from]?.rung, to: step.to,
                 to_rung: obs.levels[step.to].rung, at_s: t0 };
    const since = Date.now();
    await wait(({ to, at }) => window.st.frags.some((f) => f.level === to && f.at >= at),
      { to: step.to, at }, `a fragment of level ${step.to} after hls.${step.how}`);
    await wait(({ to, at }) => window.st.switched.some((s) => s.level === to && s.at >= at),
      { to: step.to, at }, `LEVEL_SWITCHED to ${step.to} after hls.${step.how}`);
    const landed = await page.evaluate(({ to, at }) =>
      window.st.switched.find((s) => s.level === to && s.at >= at), { to: step.to, at });
    await wait(({ t, add }) => document.getElementById('audio').currentTime > t + add,
      { t: Math.max(t0, landed.t), add: AFTER_S }, `playback ${AFTER_S} s past the switch`);
    const segs = requests.filter((r) => r.at >= since && r.rung === sw.to_rung &&
                                        /^seg-.*\.m4s$/.test(r.file) && r.status === 200);
    Object.assign(sw, { switched_at_s: landed.t, fragments: await page.evaluate(({ to, at }) =>
      window.st.frags.filter((f) => f.level === to && f.at >= at).map((f) => f.sn), { to: step.to, at }),
      segment_requests: segs.length, then_s: await currentTime() });
    obs.switches.push(sw);
    say(`${who.name}: hls.${sw.how} ${sw.from_rung} -> ${sw.to_rung} at ${t0.toFixed(2)} s: ` +
        `fragments ${sw.fragments.join(',')} loaded (${segs.length} segment requests below ` +
        `${sw.to_rung}/), LEVEL_SWITCHED at ${sw.switched_at_s.toFixed(2)} s, ` +
        `currentTime now ${sw.then_s.toFixed(2)} s`);
    check(segs.length > 0, `${who.name}: segments of ${sw.to_rung} fetched from the gateway`);
    check(sw.then_s > sw.switched_at_s, `${who.name}: playback continues on ${sw.to_rung}`);
  }

  // The player itself saw no error answer.
  const refusals = requests.filter((r) => r.status !== 200 && r.status !== 206);
  check(refusals.length === 0,
    `${who.name}: every player request to /media/ answered 200 (${JSON.stringify(refusals)})`);
  // A rung this grant does not list must be refused (403, readable
  // cross-origin).
  const listed = new Set(who.rungs.map((r) => r.rung));
  const other = ['a64', 'a128', 'a192', 'a256', 'flac'].find((r) => !listed.has(r));
  if (other) {
    const status = await page.evaluate((u) => fetch(u).then((r) => r.status, (e) => `${e}`),
      who.url.replace(/master\.m3u8$/, `${other}/index.m3u8`));
    say(`${who.name}: GET ${other}/index.m3u8 answered ${status}`);
    check(status === 403, `${who.name}: a rung outside the grant (${other}) is refused with 403`);
    obs.refused = { rung: other, status };
  }
  obs.errors = await page.evaluate(() => window.st.errors);
  for (const r of requests) {
    const k = r.file === 'master.m3u8' ? `master.m3u8 ${r.status}`
      : `${r.rung}/${r.file.startsWith('seg-') ? 'seg' : r.file} ${r.status}`;
    obs.requests[k] = (obs.requests[k] ?? 0) + 1;
  }
  say(`${who.name}: gateway requests ${JSON.stringify(obs.requests)}`);
  if (obs.errors.length) say(`${who.name}: hls.js errors ${JSON.stringify(obs.errors)}`);
  check(!obs.errors.some((e) => e.fatal), `${who.name}: no fatal hls.js error`);
  obs.final_s = await currentTime();
  await context.close();
  return obs;
}

const result = { chromium: null, hls_js: hlsVersion, listeners: [] };
let code = 1;
try {
  browser = await chromium.launch({
    executablePath: process.env.PLAYER_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    timeout: WAIT_MS,
    // Nothing but 127.0.0.1: no component updates, no metrics, no field
    // trials; a sandbox needs user namespaces that containers often lack;
    // /dev/shm is small in containers; audio plays muted without a gesture.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
           '--disable-background-networking', '--disable-component-update',
           '--disable-default-apps', '--disable-sync', '--metrics-recording-only',
           '--no-first-run', '--disable-breakpad', '--disable-domain-reliability',
           '--autoplay-policy=no-user-gesture-required', '--mute-audio'],
  });
  result.chromium = browser.version();
  say(`Chromium ${result.chromium}, hls.js ${hlsVersion}, page ${pageUrl}`);
  // The listeners play at the same time, as two people would.
  const settled = await Promise.allSettled(listeners.map((who) => listen(who)));
  for (const s of settled) {
    if (s.status === 'fulfilled') result.listeners.push(s.value);
    else check(false, `${s.reason?.message ?? s.reason}`);
  }
  code = failures.length ? 1 : 0;
} catch (e) {
  check(false, `${e.stack ?? e}`);
} finally {
  if (browser) await browser.close().catch(() => {});
  server.close();
  clearTimeout(watchdog);
}
result.failures = failures;
process.stdout.write(`${JSON.stringify(result)}\n`);
say(failures.length ? `${failures.length} check(s) failed` : 'every check passed');
process.exit(code);
