'use strict';
/*
 * End-to-end test: drives the UNMODIFIED npm package dcrf-client@0.3.0 (with the
 * npm `ws` package as its WebSocket constructor) against a running streamapi
 * server that serves the "polls" example app.
 *
 *   node dcrf.test.js ws://127.0.0.1:PORT/ws      (or set STREAMAPI_WS_URL)
 *
 * Exit status 0 only when every check passes. Output is node:test TAP, ending
 * with the standard "# pass N" / "# fail N" summary lines. A hard 30 s overall
 * timeout guarantees the process never hangs.
 *
 * The client is used only through its public API and documented options
 * ({websocket: {WebSocket, maxRetries}, pkField}). For diagnostics the script
 * additionally *listens* (read-only) to the client's transport 'message' events
 * (to check exact response_status codes such as 201) and to the underlying
 * socket's 'close'/'error' events (to fail fast with a clear message when the
 * server is unreachable or drops the connection).
 */

const HARD_TIMEOUT_MS = 30_000;
const CONNECT_TIMEOUT_MS = 5_000;
const REQUEST_TIMEOUT_MS = 5_000;
const EVENT_TIMEOUT_MS = 5_000;
const PAGE_SIZE = 25;
const MAX_LIST_PAGES = 40;

const WS_URL = process.argv[2] || process.env.STREAMAPI_WS_URL;

// node:test picks its reporter from the command line only, and its default
// differs between Node versions / TTYs. To always print the standard TAP
// summary ("# pass N" / "# fail N"), re-run this file in a child process with
// --test-reporter=tap unless a reporter was already chosen (or we are already
// running under `node --test`).
const reporterChosen = process.execArgv.some(
  (a) => a === '--test-reporter' || a.startsWith('--test-reporter='),
);

if (!WS_URL) {
  console.error('usage: node dcrf.test.js ws://HOST:PORT/ws   (or set STREAMAPI_WS_URL)');
  process.exitCode = 2;
} else if (!reporterChosen && !process.env.NODE_TEST_CONTEXT) {
  reexecWithTap();
} else {
  main();
}

function reexecWithTap() {
  const { spawn } = require('node:child_process');
  const child = spawn(
    process.execPath,
    ['--test-reporter=tap', ...process.execArgv, __filename, ...process.argv.slice(2)],
    { stdio: 'inherit' },
  );
  const killer = setTimeout(() => {
    console.error(`FATAL: e2e run did not finish within ${HARD_TIMEOUT_MS + 2000} ms; killing it`);
    child.kill('SIGKILL');
    process.exit(124);
  }, HARD_TIMEOUT_MS + 2000);
  child.on('error', (err) => {
    clearTimeout(killer);
    console.error(`FATAL: could not start test process: ${err.message}`);
    process.exit(1);
  });
  child.on('exit', (code, signal) => {
    clearTimeout(killer);
    if (signal) console.error(`FATAL: test process killed by ${signal}`);
    process.exit(code == null ? 1 : code);
  });
}

function main() {
  const { randomUUID } = require('node:crypto');
  const { describe, it, beforeEach, after } = require('node:test');
  const assert = require('node:assert/strict');
  const WebSocket = require('ws');
  const dcrf = require('dcrf-client').default;

  // Hard overall timeout: never hang, whatever the server does.
  setTimeout(() => {
    console.error(`# FATAL: hard timeout: e2e run exceeded ${HARD_TIMEOUT_MS} ms against ${WS_URL}`);
    process.exit(124);
  }, HARD_TIMEOUT_MS).unref();

  // Every wait is capped by a deadline a little before the hard timeout, so
  // that when the server stalls the remaining checks fail fast and node:test
  // still prints its summary before the hard timeout fires.
  const DEADLINE = Date.now() + HARD_TIMEOUT_MS - 3_000;

  const RUN = `${Date.now()}-${process.pid}`;
  const TEXT = {
    created: `e2e ${RUN} created`,
    updated: `e2e ${RUN} updated`,
    patched: `e2e ${RUN} patched`,
    pushed: `e2e ${RUN} patched by second client`,
    voteQ: `e2e ${RUN} vote question`,
    choice: `e2e ${RUN} choice`,
  };

  const short = (v) => {
    const s = JSON.stringify(v);
    return s && s.length > 300 ? `${s.slice(0, 300)}...` : s;
  };

  function timeout(ms, message) {
    let timer;
    const left = Math.max(0, DEADLINE - Date.now());
    const p = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(
        left < ms ? `overall time budget exhausted: ${message()}` : message(),
      )), Math.min(ms, left));
    });
    return { p, cancel: () => clearTimeout(timer) };
  }

  /** One dcrf-client connection plus read-only wire observation. */
  class Peer {
    constructor(name) {
      this.name = name;
      this.closing = false;
      this.replies = new Map(); // request_id -> first payload received for it
      this.recent = []; // last few raw frames (for failure messages)
      this.lastError = null;
      this.client = dcrf.connect(WS_URL, {
        websocket: { WebSocket, maxRetries: 0 },
        pkField: 'id',
      });
      this.lost = new Promise((_, reject) => {
        this.rejectLost = reject;
      });
      this.lost.catch(() => {});

      this.client.transport.on('message', (ev) => {
        const raw = typeof ev.data === 'string' ? ev.data : String(ev.data);
        this.recent.push(raw.length > 400 ? `${raw.slice(0, 400)}...` : raw);
        if (this.recent.length > 5) this.recent.shift();
        let msg;
        try {
          msg = JSON.parse(raw);
        } catch {
          return;
        }
        const rid = msg && msg.payload && msg.payload.request_id;
        if (rid != null && !this.replies.has(rid)) this.replies.set(rid, msg.payload);
      });

      const sock = this.client.transport.socket;
      if (sock && typeof sock.addEventListener === 'function') {
        sock.addEventListener('error', (ev) => {
          this.lastError = (ev && (ev.message || (ev.error && ev.error.message))) || 'error';
        });
        sock.addEventListener('close', (ev) => {
          if (this.closing) return;
          // Error listeners run after close listeners on a failed connect.
          setImmediate(() => {
            const why = this.lastError ? `: ${this.lastError}` : '';
            this.rejectLost(new Error(
              `${this.name}: WebSocket to ${WS_URL} closed unexpectedly (code ${ev && ev.code})${why}`,
            ));
          });
        });
      }
    }

    async waitConnected() {
      if (this.client.transport.isConnected()) return;
      const t = timeout(CONNECT_TIMEOUT_MS, () =>
        `${this.name}: could not connect to ${WS_URL} within ${CONNECT_TIMEOUT_MS} ms` +
        (this.lastError ? ` (${this.lastError})` : ''));
      try {
        await Promise.race([
          new Promise((resolve) => this.client.transport.once('connect', resolve)),
          this.lost.catch(() => {
            throw new Error(`${this.name}: could not connect to ${WS_URL}: ${this.lastError || 'connection closed'}`);
          }),
          t.p,
        ]);
      } finally {
        t.cancel();
      }
    }

    /** Race a client promise against the request timeout and connection loss. */
    async settle(label, requestId, promise) {
      const t = timeout(REQUEST_TIMEOUT_MS, () =>
        `${this.name}: no reply to "${label}" within ${REQUEST_TIMEOUT_MS} ms ` +
        `(request_id ${requestId}); last frames received: ${this.recent.join(' | ') || '(none)'}`);
      try {
        return await Promise.race([promise, this.lost, t.p]);
      } finally {
        t.cancel();
      }
    }

    /** Expect success; returns {data, status}. fn(client, requestId) issues the request. */
    async ok(label, fn) {
      const rid = randomUUID();
      let data;
      try {
        data = await this.settle(label, rid, fn(this.client, rid));
      } catch (err) {
        if (err instanceof Error) throw err;
        throw new Error(`${this.name}: "${label}" was rejected by the server: ${short(err)}`);
      }
      const reply = this.replies.get(rid);
      return { data, status: reply && reply.response_status, reply };
    }

    /** Expect the client promise to reject; returns the rejection (the reply payload). */
    async fails(label, fn) {
      const rid = randomUUID();
      let data;
      try {
        data = await this.settle(label, rid, fn(this.client, rid));
      } catch (err) {
        if (err instanceof Error) throw err;
        return err;
      }
      throw new assert.AssertionError({
        message: `${this.name}: "${label}" unexpectedly succeeded ` +
          `(status ${this.replies.get(rid) && this.replies.get(rid).response_status}): ${short(data)}`,
      });
    }

    close() {
      this.closing = true;
      try {
        this.client.close();
      } catch (err) {
        console.error(`# ${this.name}: close failed: ${err.message}`);
      }
    }
  }

  /** Collects subscription callback invocations for awaiting in order. */
  class EventQueue {
    constructor() {
      this.items = [];
      this.waiters = [];
      this.all = [];
    }
    push(item) {
      this.all.push(item);
      const w = this.waiters.shift();
      if (w) w(item);
      else this.items.push(item);
    }
    async next(label, peer) {
      if (this.items.length) return this.items.shift();
      let waiter;
      const t = timeout(EVENT_TIMEOUT_MS, () =>
        `no subscription callback (${label}) within ${EVENT_TIMEOUT_MS} ms; ` +
        `callbacks so far: ${short(this.all)}; last frames received by ${peer.name}: ` +
        `${peer.recent.join(' | ') || '(none)'}`);
      try {
        return await Promise.race([
          new Promise((resolve) => {
            waiter = resolve;
            this.waiters.push(resolve);
          }),
          peer.lost,
          t.p,
        ]);
      } finally {
        t.cancel();
        this.waiters = this.waiters.filter((w) => w !== waiter);
      }
    }
  }

  function isRFC3339(s) {
    return typeof s === 'string' &&
      /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/i.test(s) &&
      !Number.isNaN(Date.parse(s));
  }

  function need(value, what) {
    if (value == null) throw new Error(`precondition failed: ${what} (an earlier test failed)`);
    return value;
  }

  let A; // main client
  let B; // second client, used to change objects A is subscribed to
  let connected = false;
  let question; // created by the first test
  let subscription; // SubscriptionPromise from A.subscribe
  const events = new EventQueue();
  const leftovers = []; // [stream, id] to delete best-effort in after()

  const forget = (stream, id) => {
    const i = leftovers.findIndex(([s, x]) => s === stream && x === id);
    if (i >= 0) leftovers.splice(i, 1);
  };

  describe(`streamapi polls via dcrf-client@0.3.0 at ${WS_URL}`, () => {
    // A test, not a before() hook: a failing hook makes node:test report the
    // tests as "cancelled" with "# fail 0"; this way they count as failures.
    it('connect two dcrf-client connections', async () => {
      A = new Peer('client A');
      B = new Peer('client B');
      await A.waitConnected();
      await B.waitConnected();
      connected = true;
    });

    beforeEach(() => {
      if (A && !connected) need(null, `connected to ${WS_URL}`);
    });

    after(async () => {
      // Best-effort cleanup of anything an earlier failure left behind.
      for (const [stream, id] of leftovers.slice().reverse()) {
        try {
          await A.ok(`cleanup delete ${stream} ${id}`, (c, rid) => c.delete(stream, id, {}, rid));
        } catch (err) {
          console.error(`# cleanup: could not delete ${stream} ${id}: ${err.message}`);
        }
      }
      if (subscription) subscription.cancel();
      if (A) A.close();
      if (B) B.close();
    });

    it('create a question -> 201 with numeric id, text and pub_date', async () => {
      const { data, status } = await A.ok('create question', (c, rid) =>
        c.create('questions', { question_text: TEXT.created }, rid));
      assert.equal(status, 201, `create should reply response_status 201, got ${status}`);
      assert.equal(typeof data, 'object', `create should resolve with an object, got ${short(data)}`);
      assert.ok(Number.isInteger(data.id) && data.id > 0, `id should be a positive integer (JSON number), got ${short(data.id)}`);
      assert.equal(data.question_text, TEXT.created);
      assert.ok(isRFC3339(data.pub_date), `pub_date should default to an RFC3339 timestamp, got ${short(data.pub_date)}`);
      question = data;
      leftovers.push(['questions', data.id]);
    });

    it('retrieve the question -> 200 with the same object', async () => {
      const q = need(question, 'question was created');
      const { data, status } = await A.ok('retrieve question', (c, rid) =>
        c.retrieve('questions', q.id, {}, rid));
      assert.equal(status, 200);
      assert.deepEqual(data, q);
    });

    it('update the question (full) -> 200 with new text', async () => {
      const q = need(question, 'question was created');
      const { data, status } = await A.ok('update question', (c, rid) =>
        c.update('questions', q.id, { question_text: TEXT.updated }, rid));
      assert.equal(status, 200);
      assert.equal(data.id, q.id);
      assert.equal(data.question_text, TEXT.updated);
      const again = await A.ok('retrieve after update', (c, rid) => c.retrieve('questions', q.id, {}, rid));
      assert.equal(again.data.question_text, TEXT.updated, 'update was not persisted');
      question = data;
    });

    it('patch the question -> 200 with new text, other fields kept', async () => {
      const q = need(question, 'question was created');
      const { data, status } = await A.ok('patch question', (c, rid) =>
        c.patch('questions', q.id, { question_text: TEXT.patched }, rid));
      assert.equal(status, 200);
      assert.equal(data.id, q.id);
      assert.equal(data.question_text, TEXT.patched);
      assert.equal(data.pub_date, q.pub_date, 'patch must not change pub_date');
      question = data;
    });

    it('list questions -> 200 with an array containing the question', async () => {
      const q = need(question, 'question was created');
      let found;
      let prevIds;
      for (let page = 1; page <= MAX_LIST_PAGES && !found; page++) {
        let res;
        try {
          res = await A.ok(`list questions page ${page}`, (c, rid) =>
            c.list('questions', page === 1 ? {} : { page }, rid));
        } catch (err) {
          // Past the last page the server may answer 404 ("Invalid page.").
          if (page > 1 && /\b404\b/.test(err.message)) break;
          throw err;
        }
        assert.equal(res.status, 200, `list should reply 200, got ${res.status}`);
        assert.ok(Array.isArray(res.data), `list should resolve with a JSON array, got ${short(res.data)}`);
        assert.ok(res.data.length <= PAGE_SIZE, `a page holds at most ${PAGE_SIZE} items, got ${res.data.length}`);
        found = res.data.find((x) => x && x.id === q.id);
        const ids = res.data.map((x) => x && x.id).join(',');
        assert.notEqual(ids, prevIds, `page ${page} repeats page ${page - 1}: is data.page ignored?`);
        prevIds = ids;
        if (res.data.length < PAGE_SIZE) break;
      }
      assert.ok(found, `question ${q.id} not found in any list page`);
      assert.deepEqual(found, q);
    });

    it('create without question_text -> rejected with 400 field error', async () => {
      const err = await A.fails('create invalid question', (c, rid) =>
        c.create('questions', { pub_date: new Date().toISOString() }, rid));
      assert.equal(err.response_status, 400, `expected 400, got ${short(err)}`);
      assert.ok(Array.isArray(err.errors), `errors should be an array: ${short(err)}`);
      assert.ok(err.errors[0] && Array.isArray(err.errors[0].question_text), `errors[0].question_text missing: ${short(err)}`);
      assert.equal(err.errors[0].question_text[0], 'This field is required.');
    });

    it('retrieve a missing id -> rejected with 404 ["Not found."]', async () => {
      const err = await A.fails('retrieve missing question', (c, rid) =>
        c.retrieve('questions', 999999999, {}, rid));
      assert.equal(err.response_status, 404, `expected 404, got ${short(err)}`);
      assert.deepEqual(err.errors, ['Not found.']);
    });

    it('subscribe; a patch from a second client is pushed as (obj, "update")', async () => {
      const q = need(question, 'question was created');
      const rid = randomUUID();
      subscription = A.client.subscribe('questions', q.id, (data, action) => events.push({ data, action }), rid);
      try {
        await A.settle('subscribe_instance', rid, subscription);
      } catch (err) {
        if (err instanceof Error) throw err;
        throw new Error(`subscribe_instance was rejected: ${short(err)}`);
      }
      const reply = A.replies.get(rid);
      assert.ok(reply && Math.floor(reply.response_status / 100) === 2, `subscribe reply should be 2xx: ${short(reply)}`);

      const { data: patched } = await B.ok('patch from client B', (c, r) =>
        c.patch('questions', q.id, { question_text: TEXT.pushed }, r));
      assert.equal(patched.question_text, TEXT.pushed);

      const ev = await events.next('update after patch by client B', A);
      assert.equal(ev.action, 'update', `expected an "update" callback, got ${short(ev)}`);
      assert.equal(ev.data.id, q.id);
      assert.equal(ev.data.question_text, TEXT.pushed);
      question = patched;
    });

    it('a delete from the second client is pushed as ("delete", data.id)', async () => {
      const q = need(question, 'question was created');
      need(subscription, 'subscription was set up');
      const { data, status } = await B.ok('delete from client B', (c, r) => c.delete('questions', q.id, {}, r));
      assert.equal(status, 200);
      assert.deepEqual(data, {});
      forget('questions', q.id);

      const ev = await events.next('delete by client B', A);
      assert.equal(ev.action, 'delete', `expected a "delete" callback, got ${short(ev)}`);
      assert.equal(ev.data.id, q.id, `delete callback data.id should be ${q.id}: ${short(ev.data)}`);

      const err = await A.fails('retrieve deleted question', (c, r) => c.retrieve('questions', q.id, {}, r));
      assert.equal(err.response_status, 404);
      assert.equal(events.items.length, 0, `unexpected extra callbacks: ${short(events.items)}`);
    });

    let voteQuestion;
    let choice;

    it('custom action: vote on a choice -> votes becomes 1', async () => {
      const qres = await A.ok('create vote question', (c, rid) =>
        c.create('questions', { question_text: TEXT.voteQ }, rid));
      assert.equal(qres.status, 201);
      voteQuestion = qres.data;
      leftovers.push(['questions', voteQuestion.id]);

      const cres = await A.ok('create choice', (c, rid) =>
        c.create('choices', { question: voteQuestion.id, choice_text: TEXT.choice }, rid));
      assert.equal(cres.status, 201);
      choice = cres.data;
      leftovers.push(['choices', choice.id]);
      assert.ok(Number.isInteger(choice.id), `choice id should be an integer: ${short(choice)}`);
      assert.equal(choice.question, voteQuestion.id);
      assert.equal(choice.choice_text, TEXT.choice);
      assert.equal(choice.votes, 0, 'votes should default to 0');

      const vres = await A.ok('vote', (c, rid) => c.request('choices', { action: 'vote', pk: choice.id }, rid));
      assert.ok(Math.floor(vres.status / 100) === 2, `vote should reply 2xx, got ${vres.status}`);
      assert.equal(vres.data.id, choice.id);
      assert.equal(vres.data.votes, 1);

      const again = await A.ok('retrieve choice after vote', (c, rid) => c.retrieve('choices', choice.id, {}, rid));
      assert.equal(again.data.votes, 1, 'vote was not persisted');
    });

    it('delete the test objects -> 200 {} and then 404', async () => {
      const ch = need(choice, 'choice was created');
      const q = need(voteQuestion, 'vote question was created');
      const d1 = await A.ok('delete choice', (c, rid) => c.delete('choices', ch.id, {}, rid));
      assert.equal(d1.status, 200);
      assert.deepEqual(d1.data, {});
      forget('choices', ch.id);
      const d2 = await A.ok('delete vote question', (c, rid) => c.delete('questions', q.id, {}, rid));
      assert.equal(d2.status, 200);
      assert.deepEqual(d2.data, {});
      forget('questions', q.id);
      const err = await A.fails('retrieve deleted choice', (c, rid) => c.retrieve('choices', ch.id, {}, rid));
      assert.equal(err.response_status, 404);
    });
  });
}
