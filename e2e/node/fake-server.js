'use strict';
/*
 * FAKE streamapi server -- FOR VALIDATING dcrf.test.js ONLY.
 *
 * This is NOT streamapi and is not used to test it. It is a tiny in-memory
 * imitation of the "polls" example protocol (streams `questions` and `choices`,
 * the `vote` detail action, subscribe_instance push events), written only so
 * dcrf.test.js itself can be run and checked without the real Go server.
 * Keep it in step with the protocol the test expects; never point CI at it.
 *
 *   node fake-server.js [PORT]     serve ws://127.0.0.1:PORT/ws (default: random port)
 *   node fake-server.js --selftest start on a random port, run dcrf.test.js against
 *                                  it, exit with the test's exit status
 *
 * FAKE_SERVER_FAULT=<name> deliberately breaks one behaviour, to check that the
 * test notices (it must then exit non-zero):
 *   delete-id      delete events carry data {"id": PK} instead of {"pk": PK}
 *   string-pk      push events carry the pk as a JSON string
 *   silent-sub     no push events are sent at all
 *   status-200     create replies 200 instead of 201
 *   hang-retrieve  retrieve requests are never answered
 *   drop           the connection is closed on the first list request
 */

const { WebSocketServer } = require('ws');

const FAULT = process.env.FAKE_SERVER_FAULT || '';
const PAGE_SIZE = 25;

function createFakeServer(port, onListening) {
  const db = { questions: new Map(), choices: new Map() };
  const nextId = { questions: 1, choices: 1 };
  const subs = new Map(); // "stream:pk" -> Set<{ws, requestId}>

  const now = () => new Date().toISOString();
  const required = () => ['This field is required.'];

  function validate(stream, input, partial, current) {
    const errors = {};
    const out = { ...(current || {}) };
    const has = (k) => Object.prototype.hasOwnProperty.call(input, k);
    const text = (k) => {
      if (!has(k)) {
        if (!partial) errors[k] = required();
        return;
      }
      const v = input[k];
      if (typeof v !== 'string' || v === '') errors[k] = typeof v === 'string' ? ['This field may not be blank.'] : ['Not a valid string.'];
      else if (v.length > 200) errors[k] = ['Ensure this field has no more than 200 characters.'];
      else out[k] = v;
    };
    if (stream === 'questions') {
      text('question_text');
      if (has('pub_date')) {
        if (typeof input.pub_date !== 'string' || Number.isNaN(Date.parse(input.pub_date))) errors.pub_date = ['Datetime has wrong format.'];
        else out.pub_date = input.pub_date;
      } else if (!current) out.pub_date = now();
    } else {
      text('choice_text');
      if (has('question')) {
        if (!db.questions.has(input.question)) errors.question = [`Invalid pk "${input.question}" - object does not exist.`];
        else out.question = input.question;
      } else if (!partial) errors.question = required();
      if (has('votes')) {
        if (!Number.isInteger(input.votes) || input.votes < 0) errors.votes = ['Ensure this value is greater than or equal to 0.'];
        else out.votes = input.votes;
      } else if (!current) out.votes = 0;
    }
    return Object.keys(errors).length ? { errors } : { obj: out };
  }

  function push(stream, pk, action, data) {
    if (FAULT === 'silent-sub') return;
    const key = `${stream}:${pk}`;
    for (const { ws, requestId } of subs.get(key) || []) {
      let d = data;
      if (FAULT === 'string-pk') d = action === 'delete' ? { pk: String(pk) } : { ...data, id: String(pk) };
      if (FAULT === 'delete-id' && action === 'delete') d = { id: pk };
      send(ws, stream, { action, data: d, errors: [], response_status: 200, request_id: requestId });
    }
    if (action === 'delete') subs.delete(key);
  }

  function remove(stream, pk) {
    if (stream === 'questions') {
      for (const [cid, c] of db.choices) if (c.question === pk) remove('choices', cid);
    }
    db[stream].delete(pk);
    push(stream, pk, 'delete', { pk });
  }

  function send(ws, stream, payload) {
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ stream, payload }));
  }

  function handle(ws, msg) {
    const { stream } = msg || {};
    const p = (msg && msg.payload) || {};
    const { action, request_id: requestId } = p;
    const data = p.data == null ? {} : p.data;
    const reply = (status, body, errors = []) =>
      send(ws, stream, { action, data: body, errors, response_status: status, request_id: requestId });

    if (!Object.prototype.hasOwnProperty.call(db, stream)) return reply(404, null, [`Unknown stream "${stream}".`]);
    const table = db[stream];
    const pk = typeof p.pk === 'string' && /^\d+$/.test(p.pk) ? Number(p.pk) : p.pk;
    const obj = table.get(pk);

    switch (action) {
      case 'create': {
        const r = validate(stream, data, false, null);
        if (r.errors) return reply(400, null, [r.errors]);
        const o = { id: nextId[stream]++, ...r.obj };
        table.set(o.id, o);
        return reply(FAULT === 'status-200' ? 200 : 201, o);
      }
      case 'list': {
        const page = data.page == null ? 1 : data.page;
        if (!Number.isInteger(page) || page < 1) return reply(404, null, ['Invalid page.']);
        const all = [...table.values()].sort((a, b) => a.id - b.id);
        const items = all.slice((page - 1) * PAGE_SIZE, page * PAGE_SIZE);
        if (page > 1 && items.length === 0) return reply(404, null, ['Invalid page.']);
        if (FAULT === 'drop') return ws.terminate();
        return reply(200, items);
      }
      case 'retrieve':
        if (FAULT === 'hang-retrieve') return undefined;
      // fall through
      case 'update':
      case 'patch':
      case 'delete':
      case 'subscribe_instance':
      case 'vote': {
        if (action === 'vote' && stream !== 'choices') break;
        if (!obj) return reply(404, null, ['Not found.']);
        if (action === 'retrieve') return reply(200, obj);
        if (action === 'delete') {
          remove(stream, pk);
          return reply(200, {});
        }
        if (action === 'subscribe_instance') {
          const key = `${stream}:${pk}`;
          if (!subs.has(key)) subs.set(key, new Set());
          subs.get(key).add({ ws, requestId });
          return reply(201, null);
        }
        let next;
        if (action === 'vote') {
          next = { ...obj, votes: obj.votes + 1 };
        } else {
          const r = validate(stream, data, action === 'patch', obj);
          if (r.errors) return reply(400, null, [r.errors]);
          next = { ...r.obj, id: obj.id };
        }
        table.set(pk, next);
        reply(200, next);
        return push(stream, pk, 'update', next);
      }
      default:
        break;
    }
    return reply(405, null, [`Method "${action}" not allowed.`]);
  }

  const wss = new WebSocketServer({ host: '127.0.0.1', port, path: '/ws' }, () => onListening(wss));
  wss.on('connection', (ws) => {
    ws.on('message', (raw, isBinary) => {
      let msg;
      try {
        msg = JSON.parse(raw.toString());
      } catch {
        return send(ws, null, { action: null, data: null, errors: ['Invalid JSON.'], response_status: 400, request_id: null });
      }
      return handle(ws, msg);
    });
    ws.on('close', () => {
      for (const set of subs.values()) for (const s of set) if (s.ws === ws) set.delete(s);
    });
  });
  return wss;
}

if (require.main === module) {
  const selftest = process.argv.includes('--selftest');
  const port = selftest ? 0 : Number(process.argv[2] || 0);
  createFakeServer(port, (wss) => {
    const url = `ws://127.0.0.1:${wss.address().port}/ws`;
    console.error(`# fake streamapi (validation only${FAULT ? `, FAULT=${FAULT}` : ''}) listening on ${url}`);
    if (!selftest) return;
    const { spawn } = require('node:child_process');
    const child = spawn(process.execPath, [require('node:path').join(__dirname, 'dcrf.test.js'), url], { stdio: 'inherit' });
    child.on('exit', (code) => {
      wss.close();
      process.exit(code == null ? 1 : code);
    });
  });
}

module.exports = { createFakeServer };
