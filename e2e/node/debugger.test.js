'use strict';
/*
 * Browser test of the debugger page: headless Chromium (driven by
 * playwright-core, with the system's chromium) opens /channels-api/, waits
 * for window.ws to be open, sends the original README's frames from the
 * "console" (page.evaluate) and through the form, and checks that the frame
 * log shows each frame sent and received.
 *
 *   node debugger.test.js http://127.0.0.1:PORT/channels-api/ /usr/bin/chromium
 *
 * Prints "N passed, N failed" and exits non-zero on any failure.
 */
const { chromium } = require('playwright-core');

const [url, executablePath] = process.argv.slice(2);
if (!url || !executablePath) {
  console.error('usage: node debugger.test.js PAGE_URL CHROMIUM_PATH');
  process.exit(2);
}
setTimeout(() => { console.error('FATAL: timed out after 60 s'); process.exit(124); }, 60_000).unref();

let passed = 0, failed = 0;
function check(what, ok, detail) {
  if (ok) { passed++; console.log(`ok - ${what}`); }
  else { failed++; console.log(`not ok - ${what}${detail ? ': ' + detail : ''}`); }
}

(async () => {
  const browser = await chromium.launch({
    executablePath,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    const resp = await page.goto(url);
    check('page answers 200', resp.status() === 200, String(resp.status()));
    await page.waitForFunction(() => window.ws && window.ws.readyState === 1, null, { timeout: 10_000 });
    check('window.ws is an open WebSocket', true);

    // From the console, as the README's tour does.
    await page.evaluate(() => {
      ws.send(JSON.stringify({ stream: 'questions', payload: { action: 'subscribe', data: { action: 'create' }, request_id: 'sub-1' } }));
      ws.send(JSON.stringify({ stream: 'questions', payload: { action: 'create', data: { question_text: 'What is your favorite python package?' }, request_id: 'some-guid' } }));
    });
    const log = async (re) => {
      try {
        await page.waitForFunction((src) => new RegExp(src).test(document.body.innerText), re.source, { timeout: 5000 });
        return true;
      } catch { return false; }
    };
    check('the console frames are logged as sent', await log(/"request_id": "some-guid"[\s\S]*"request_id": "some-guid"/));
    check('the 201 reply is logged', await log(/"response_status": 201/));
    check('the create event is logged', await log(/"model": "polls\.question"/));

    // Through the form.
    await page.fill('#f-stream', 'questions');
    await page.selectOption('#f-action', 'list');
    await page.fill('#f-data', '{"page": 1}');
    await page.fill('#f-rid', '4242');
    await page.click('button[type=submit]');
    check('the form request and its reply are logged', await log(/"request_id": 4242[\s\S]*"response_status": 200,\s*"request_id": 4242/));
    // A pasted token goes in the subprotocols ["bearer", TOKEN], not the
    // URL; the server selects "bearer" and the socket opens.
    await page.fill('#token', 'header.payload.signature');
    await page.click('#reconnect');
    let proto = '';
    try {
      await page.waitForFunction(() => window.ws && window.ws.readyState === 1 && window.ws.protocol === 'bearer', null, { timeout: 10_000 });
      proto = await page.evaluate(() => window.ws.protocol + ' ' + window.ws.url);
    } catch (e) { proto = String(e); }
    check('a pasted token is sent as the bearer subprotocol', proto.startsWith('bearer ') && !proto.includes('signature'), proto);
    check('no script errors', errors.length === 0, JSON.stringify(errors));
  } finally {
    await browser.close();
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})().catch((e) => { console.error(e); console.log(`${passed} passed, ${failed + 1} failed`); process.exit(1); });
