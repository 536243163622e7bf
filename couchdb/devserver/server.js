'use strict';
// CouchDB-protocol server for development, tests and CI.
//
// Built on express-pouchdb 4.2.0 + PouchDB 7.3.1 (leveldown storage, or
// memdown with --in-memory). Stock express-pouchdb / pouchdb-server differ
// from Apache CouchDB in ways that break real clients; every deviation fixed
// here is marked "FIX n" with the reason (numbers follow the project's list):
//
//   1. database names kept verbatim (including "/"), validated like CouchDB
//   2. JSON answers always carry Content-Type: application/json
//   3. no response compression
//   4. PUT /db/docid stores the URL id, not the body's _id
//   5. document ETag is the quoted rev; _bulk_docs answers in request order
//   6. CouchDB-like GET / and GET /_up
//   7. no request can kill the process
//   8. --admin user:password, HTTP Basic auth required for everything else
//   9. view query values parsed like CouchDB: 400 query_parse_error
//  10. POST /db/_design/d/_view/v/queries (CouchDB 3's multi-query)
//  11. one copy of everything, said like a single CouchDB node: GET /db has
//      cluster {q:1, n:1, w:1, r:1}; a write asking for w > 1 copies answers 202
//  12. GET /_db_updates (normal and longpoll feeds): which databases changed,
//      one row per database with its latest change, as CouchDB 3 answers it
//
// Usage:
//   node server.js [--host 127.0.0.1] [--port 5984] [--data-dir ./var/couchdb]
//                  [--in-memory] [--admin user:password] [--log]
//                  [--exit-with-stdin]
// (env DEVSERVER_ADMIN=user:password works like --admin; --port 0 = any port)
// Prints exactly one line to stdout once listening:
//   {"ready": true, "url": "http://HOST:PORT"}
// Everything else (terse) goes to stderr.

const fs = require('fs');
const http = require('http');
const path = require('path');
const crypto = require('crypto');
const { AsyncLocalStorage } = require('async_hooks');

const VERSION = '3.3.0-pouchdb-devserver';
const MAX_BODY = 1024 * 1024 * 1024; // 1 GiB: large attachments must work
// CouchDB's rule for database names; "_"-names are system databases.
const DB_NAME_RE = /^[a-z][a-z0-9_$()+/-]*$/;
const SYSTEM_DBS = new Set(['_users', '_replicator', '_global_changes']);
// Secondary databases PouchDB creates for views/indexes ("<db>-mrview-<md5>").
const MRVIEW_RE = /-mrview-(temp|[0-9a-f]{32})$/;
const SECURITY_DOC_ID = '_local/_devserver_security';

function log(...args) {
  process.stderr.write('[couchdb-devserver] ' + args.join(' ') + '\n');
}

// --------------------------------------------------------------- CLI
function parseArgs(argv) {
  const opts = {
    host: '127.0.0.1', port: 5984, dataDir: './var/couchdb',
    inMemory: false, admin: null, log: false, exitWithStdin: false,
  };
  // The admin login may also come from the environment, so that it does not
  // show up in `ps` (the Python launcher uses this).
  const envAdmin = process.env.DEVSERVER_ADMIN;
  if (envAdmin) argv = ['--admin', envAdmin].concat(argv);
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value = null;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    const takeValue = () => {
      if (value !== null) return value;
      if (i + 1 >= argv.length) throw new Error(arg + ' needs a value');
      return argv[++i];
    };
    switch (arg) {
      case '--host': opts.host = takeValue(); break;
      case '--port': opts.port = Number(takeValue()); break;
      case '--data-dir': opts.dataDir = takeValue(); break;
      case '--in-memory': opts.inMemory = true; break;
      case '--log': opts.log = true; break;
      // Exit when stdin closes: a launcher keeps a pipe open, so the server
      // cannot outlive it even when the launcher is SIGKILLed.
      case '--exit-with-stdin': opts.exitWithStdin = true; break;
      case '--admin': {
        const v = takeValue();
        const colon = v.indexOf(':');
        if (colon <= 0) throw new Error('--admin expects user:password');
        opts.admin = { user: v.slice(0, colon), password: v.slice(colon + 1) };
        break;
      }
      case '-h': case '--help':
        process.stderr.write('usage: node server.js [--host H] [--port P] ' +
          '[--data-dir DIR] [--in-memory] [--admin user:password] [--log] ' +
          '[--exit-with-stdin]\n(env DEVSERVER_ADMIN=user:password works like --admin)\n');
        process.exit(0);
        break;
      default: throw new Error('unknown argument: ' + arg);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    throw new Error('invalid --port');
  }
  return opts;
}

let cli;
try {
  cli = parseArgs(process.argv.slice(2));
} catch (e) {
  log('error:', e.message);
  process.exit(2);
}
// stdout carries only the ready line; libraries that console.log (PouchDB
// warnings) go to stderr, so nothing can fill an undrained stdout pipe.
console.log = console.info = console.debug = console.error;

const dataDir = path.resolve(cli.dataDir);
if (!cli.inMemory) fs.mkdirSync(dataDir, { recursive: true });

// ------------------------------------------------- FIX 1: db name -> storage
// express-pouchdb runs every db name through sanitize-filename, which strips
// "/" ("account/3a/63/rest" silently becomes "account3a63rest"). We replace
// that module with the identity function *before* express-pouchdb loads it
// (its routes capture the function at require time). Names are validated
// against CouchDB's rule in our own routes instead, and the filesystem
// mapping is done in the storage adapter below.
const cleanFilenamePath = require.resolve('express-pouchdb/lib/clean-filename');
require(cleanFilenamePath);
require.cache[cleanFilenamePath].exports = (name) => name;

const express = require('express');
const PouchDB = require('pouchdb-core')
  .plugin(require('pouchdb-adapter-http'))
  .plugin(require('pouchdb-mapreduce'))
  .plugin(require('pouchdb-replication'))
  .plugin(require(cli.inMemory ? 'pouchdb-adapter-memory' : 'pouchdb-adapter-leveldb'));
// Large attachments: PouchDB's deterministic rev is md5(JSON.stringify(doc)),
// and JSON.stringify turns a Buffer into an array of numbers: a 60 MB
// attachment PUT took ~30 s and 1.2 GB of RAM. Hash each binary attachment's
// md5 in its place instead (revs stay deterministic). pouchdb-adapter-utils
// calls pouchdb-utils' rev through the module object, so patching works.
const pouchUtils = require('pouchdb-utils');
const originalRev = pouchUtils.rev;
pouchUtils.rev = function (doc, deterministic) {
  if (!deterministic || !doc || !doc._attachments) return originalRev(doc, deterministic);
  const atts = {};
  for (const name of Object.keys(doc._attachments)) {
    const att = doc._attachments[name];
    atts[name] = att && Buffer.isBuffer(att.data)
      ? Object.assign({}, att, { data: 'md5-' + crypto.createHash('md5').update(att.data).digest('base64') })
      : att;
  }
  return originalRev(Object.assign({}, doc, { _attachments: atts }), true);
};
const expressPouchDB = require('express-pouchdb');
const epUtils = require('express-pouchdb/lib/utils');
const { getOrCreateDB, deleteDB } = require('express-pouchdb/lib/create-or-delete-dbs');

// A thin adapter in front of leveldb/memory: db.name stays the real CouchDB
// name, while the storage location is <dataDir>/<encodeURIComponent(name)>,
// one flat directory per database (no nested dirs for "/", no collisions).
const baseAdapter = PouchDB.adapters[cli.inMemory ? 'memory' : 'leveldb'];
function DevStore(opts, callback) {
  const location = cli.inMemory ? opts.name
    : path.join(dataDir, encodeURIComponent(opts.name));
  baseAdapter.call(this, Object.assign({}, opts, { name: location }), callback);
}
DevStore.valid = () => true;
DevStore.use_prefix = false;
PouchDB.adapter('devstore', DevStore);
// Local names must go through DevStore only (http URLs still pick 'http').
PouchDB.preferredAdapters.splice(0, PouchDB.preferredAdapters.length, 'devstore');

// Registry of existing databases (real names). Seeded from the data dir and
// kept current through PouchDB's constructor events. This replaces
// pouchdb-all-dbs, which would keep its own bookkeeping database.
const knownDbs = new Set();
function isUserVisibleDb(name) {
  return typeof name === 'string' && !MRVIEW_RE.test(name) &&
    (DB_NAME_RE.test(name) || SYSTEM_DBS.has(name));
}
if (!cli.inMemory) {
  for (const entry of fs.readdirSync(dataDir, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue;
    let name;
    try { name = decodeURIComponent(entry.name); } catch (e) { continue; }
    if (isUserVisibleDb(name)) knownDbs.add(name);
  }
}
PouchDB.on('created', (name) => { if (isUserVisibleDb(name)) knownDbs.add(name); });
PouchDB.on('destroyed', (name) => { knownDbs.delete(name); });
// express-pouchdb only installs pouchdb-all-dbs when PouchDB.allDbs is
// missing; ours answers from the registry (callback or promise style).
PouchDB.allDbs = function (optsOrCb, maybeCb) {
  const cb = typeof optsOrCb === 'function' ? optsOrCb : maybeCb;
  const list = Array.from(knownDbs).sort();
  if (cb) process.nextTick(cb, null, list);
  return Promise.resolve(list);
};

function dbNameError(name) {
  if (DB_NAME_RE.test(name) || SYSTEM_DBS.has(name)) return null;
  return {
    error: 'illegal_database_name',
    reason: 'Name: \'' + name + '\'. Only lowercase characters (a-z), digits ' +
      '(0-9), and any of the characters _, $, (, ), +, -, and / are allowed. ' +
      'Must begin with a letter.',
  };
}

// ------------------------------------------------------- response helpers
const als = new AsyncLocalStorage();

// FIX 2: always application/json (express-pouchdb sends text/plain unless the
// Accept header names JSON, which breaks clients such as aiohttp's .json()).
function sendJSON(res, status, body) {
  if (res.headersSent) {
    // Only for streamed feeds whose headers went out early (see below):
    // finish the stream with the error object instead of hanging.
    if (!res.writableEnded) res.end(JSON.stringify(body) + '\n');
    return;
  }
  res.status(status);
  res.setHeader('Content-Type', 'application/json');
  const req = res.req;
  // FIX 5: a document GET/HEAD carries ETag "<rev>" like CouchDB (clients
  // HEAD a doc to learn its current rev). Express then answers a matching
  // If-None-Match with 304 by itself.
  if (req && req.devDocRead && status === 200 && body && !Array.isArray(body) &&
      typeof body._rev === 'string') {
    res.setHeader('ETag', '"' + body._rev + '"');
  }
  // A replicated document (PUT /db/doc?new_edits=false, as CouchDB's replicator writes
  // every document that has attachments): PouchDB answers its bulk result `[]`, CouchDB
  // {"ok", "id", "rev"} -- and the replicator crashes on anything else.
  if (req && req.devReplicatedDoc && status === 201 && Array.isArray(body)) {
    body = Object.assign({ ok: true }, req.devReplicatedDoc);
  }
  if (res.devBulk && status === 201 && Array.isArray(body)) {
    body = mergeBulkResults(body, res.devBulk);
  }
  // FIX 11: a write asking for more copies than the one kept is stored, and
  // answered 202 Accepted, as a single CouchDB node answers it.
  if (req && (status === 201 || (status === 200 && req.method === 'DELETE')) &&
      ['PUT', 'POST', 'DELETE'].includes(req.method)) {
    const w = Number((req.body && !Array.isArray(req.body) && Number.isInteger(req.body.w))
      ? req.body.w : (req.query && req.query.w));
    if (Number.isInteger(w) && w > 1) status = 202;
  }
  if (req && status === 200 && req.method === 'GET' && body && typeof body === 'object' &&
      typeof body.db_name === 'string' && body.doc_count !== undefined && !body.cluster) {
    body = Object.assign({}, body, { cluster: { q: 1, n: 1, w: 1, r: 1 } });
  }
  res.status(status);
  res.send(Buffer.from(JSON.stringify(body) + '\n', 'utf8'));
}
// Errors in CouchDB's shape {"error", "reason"}. Accepts PouchDB errors
// (name/message/reason), our own {status, error, reason} objects and plain JS
// errors (whose class names like "TypeError" are no CouchDB error codes).
function sendErrorJSON(res, err, fallbackStatus) {
  err = err || {};
  let status = Number.isInteger(err.status) && err.status >= 400
    ? err.status : (fallbackStatus || 500);
  let error = (typeof err.error === 'string' && err.error) || err.name || 'unknown_error';
  if (/Error$/.test(error)) error = status >= 500 ? 'unknown_error' : 'bad_request';
  // PouchDB reports these client mistakes as 500; CouchDB says 400.
  if (error === 'doc_validation' || error === 'badarg') status = 400;
  sendJSON(res, status, { error, reason: String(err.reason || err.message || error) });
}
// Patch express-pouchdb's shared helpers; its routes call them through the
// module object, so every route picks up the fixed behaviour.
epUtils.sendJSON = sendJSON;
epUtils.sendError = sendErrorJSON;
epUtils.setJsonOrPlaintext = (res) => {
  res.setHeader('Content-Type', 'application/json');
  // A continuous _changes feed must send its headers at once (CouchDB does):
  // otherwise clients wait for the first change or heartbeat to even get a
  // response object.
  if (res.req.query.feed === 'continuous' && !res.headersSent) {
    res.status(200);
    res.flushHeaders();
  }
};

// Replacement for utils.setDBOnReq: looks the db up in our registry (the
// original compared sanitized names, created stray directories for names
// containing "/" and had promise chains without error handling).
epUtils.setDBOnReq = function (dbName, dbWrapper, req, res, next) {
  const invalid = dbNameError(dbName);
  if (invalid && !dbName.startsWith('_')) return sendJSON(res, 400, invalid);
  if (!knownDbs.has(dbName)) {
    return sendJSON(res, 404, { error: 'not_found', reason: 'Database does not exist.' });
  }
  getOrCreateDB(req.PouchDB, dbName)
    .then((db) => dbWrapper.wrap(dbName, db))
    .then((db) => { req.db = db; next(); }, (err) => sendErrorJSON(res, err));
};

// Location headers: express-pouchdb builds them from the decoded db name
// ("/" unescaped). Point at the real, percent-encoded resource URL instead.
epUtils.setLocation = function (res, p) {
  const req = res.req;
  const db = (req.params && req.params.db) || '';
  const id = p.startsWith(db + '/') ? p.slice(db.length + 1) : p;
  const tail = req.method === 'PUT' ? req.path
    : '/' + encodeURIComponent(db) + '/' + encodeURIComponent(id).replace(/^_design%2F/, '_design/');
  res.location('http://' + (req.headers.host || req.socket.localAddress + ':' + req.socket.localPort) + tail);
};

function badRequest(reason, status) {
  return { status: status || 400, error: 'bad_request', reason };
}

function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > limit) {
        reject({ status: 413, error: 'too_large', reason: 'the request entity is too large' });
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

// CouchDB-style multipart/related document PUT (JSON doc first, then one part
// per attachment marked "follows": true). express-pouchdb hands this to
// multiparty, whose handlers throw outside any try/catch and kill the process
// (FIX 7). We parse it ourselves into a plain JSON doc with inline data.
function parseMultipartRelated(buf, contentType) {
  const m = /boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  if (!m) throw badRequest('multipart/related without boundary');
  const delim = Buffer.from('--' + (m[1] || m[2]));
  const parts = [];
  let pos = buf.indexOf(delim);
  if (pos < 0) throw badRequest('malformed multipart body');
  for (;;) {
    pos += delim.length;
    if (buf[pos] === 0x2d && buf[pos + 1] === 0x2d) break; // closing "--"
    if (buf[pos] === 0x0d && buf[pos + 1] === 0x0a) pos += 2;
    const next = buf.indexOf(delim, pos);
    if (next < 0) throw badRequest('unterminated multipart body');
    let end = next;
    if (buf[end - 2] === 0x0d && buf[end - 1] === 0x0a) end -= 2;
    const part = buf.subarray(pos, end);
    let headerText = '';
    let body;
    if (part[0] === 0x0d && part[1] === 0x0a) {
      body = part.subarray(2);
    } else {
      const hEnd = part.indexOf('\r\n\r\n');
      if (hEnd < 0) throw badRequest('malformed multipart part');
      headerText = part.subarray(0, hEnd).toString('latin1');
      body = part.subarray(hEnd + 4);
    }
    const headers = {};
    for (const line of headerText.split('\r\n')) {
      const c = line.indexOf(':');
      if (c > 0) headers[line.slice(0, c).trim().toLowerCase()] = line.slice(c + 1).trim();
    }
    parts.push({ headers, body });
    pos = next;
  }
  if (!parts.length) throw badRequest('empty multipart body');
  let doc;
  try {
    doc = JSON.parse(parts[0].body.toString('utf8'));
  } catch (e) {
    throw badRequest('invalid UTF-8 JSON in multipart document part');
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) {
    throw badRequest('Document must be a JSON object');
  }
  const atts = doc._attachments || {};
  const following = Object.keys(atts).filter((k) => atts[k] && atts[k].follows);
  let idx = 0;
  for (const part of parts.slice(1)) {
    const disp = part.headers['content-disposition'] || '';
    const fm = /filename="([^"]*)"/i.exec(disp);
    const name = fm && atts[fm[1]] ? fm[1] : following[idx];
    idx++;
    if (!name || !atts[name]) throw badRequest('attachment part without matching stub');
    const att = atts[name];
    atts[name] = {
      content_type: att.content_type || part.headers['content-type'] ||
        'application/octet-stream',
      data: Buffer.from(part.body),
    };
  }
  for (const name of following) {
    if (atts[name].follows) throw badRequest('missing multipart part for ' + name);
  }
  return doc;
}

// CouchDB's [couchdb] max_document_size (8 MB by default since 3.0): the JSON body
// of a document, attachments not counted, is refused with 413 above that.
const MAX_DOCUMENT_SIZE = 8000000;
function jsonSizeWithoutAttachments(doc) {
  const body = Object.assign({}, doc);
  delete body._attachments;
  return Buffer.byteLength(JSON.stringify(body), 'utf8');
}

// Splits the raw path into decoded segments; null when undecodable.
function pathSegments(req) {
  try {
    return req.path.split('/').slice(1).map(decodeURIComponent);
  } catch (e) {
    return null;
  }
}
// Document id addressed by /db/<id>, /db/_design/<x>, /db/_local/<x>, else null.
function docIdOf(segs) {
  if (!segs || segs.length < 2 || !segs[0]) return null;
  let id = null;
  if (segs.length === 2) id = segs[1];
  else if (segs.length === 3 && (segs[1] === '_design' || segs[1] === '_local')) {
    id = segs[1] + '/' + segs[2];
  }
  if (!id) return null;
  if (id.startsWith('_') && !id.startsWith('_design/') && !id.startsWith('_local/')) {
    return null;
  }
  return id;
}

async function openKnownDb(req, name) {
  const invalid = dbNameError(name);
  if (invalid) throw Object.assign({ status: 400 }, invalid);
  if (!knownDbs.has(name)) {
    throw { status: 404, error: 'not_found', reason: 'Database does not exist.' };
  }
  return getOrCreateDB(PouchDB, name);
}

// ------------------------------------------------------------------ app
const app = express();
app.disable('x-powered-by');
app.set('etag', false);
app.enable('case sensitive routing');

// Per-request async context so the process-level guards (FIX 7) can answer
// the request whose callback blew up.
app.use((req, res, next) => als.run({ req, res }, next));

if (cli.log) {
  app.use((req, res, next) => {
    const t0 = Date.now();
    res.on('finish', () => log(req.method, req.originalUrl, res.statusCode,
      (Date.now() - t0) + 'ms'));
    next();
  });
}

// FIX 3: never compress. express-pouchdb's 'compression' part is excluded
// below; dropping Accept-Encoding also keeps any other layer from gzipping
// (a gzip stream buffers a continuous _changes feed forever).
app.use((req, res, next) => { delete req.headers['accept-encoding']; next(); });

// FIX 6: CouchDB-like welcome and health endpoints (no auth, like CouchDB).
app.get('/', (req, res) => sendJSON(res, 200, {
  couchdb: 'Welcome',
  version: VERSION,
  vendor: { name: 'piston-vm devserver (express-pouchdb ' +
    require('express-pouchdb/package.json').version + ', PouchDB ' + PouchDB.version + ')' },
  features: [],
}));
app.get('/_up', (req, res) => sendJSON(res, 200, { status: 'ok' }));

// FIX 8: with --admin, every other request needs valid Basic credentials
// (CouchDB 3 makes db creation admin-only anyway; clients always log in).
function safeEqual(a, b) {
  const ha = crypto.createHash('sha256').update(a).digest();
  const hb = crypto.createHash('sha256').update(b).digest();
  return crypto.timingSafeEqual(ha, hb);
}
// Cookie login (POST /_session), as CouchDB's replicator uses it against its
// targets: the session is a random token kept in memory for SESSION_TIMEOUT_MS
// (CouchDB's [chttpd_auth] timeout default, 600 s), renewed on use.
const SESSION_TIMEOUT_MS = 600 * 1000;
const sessions = new Map();
function sessionUser(req) {
  const m = /(?:^|;\s*)AuthSession=([^;]+)/.exec(req.headers.cookie || '');
  const session = m && sessions.get(m[1]);
  if (!session || session.expires < Date.now()) return null;
  session.expires = Date.now() + SESSION_TIMEOUT_MS;
  return session.user;
}
app.post('/_session', express.urlencoded({ extended: false, limit: '64kb' }),
  express.json({ limit: '64kb', type: ['application/json'] }), (req, res) => {
    const body = req.body || {};
    const name = typeof body.name === 'string' ? body.name : (typeof body.username === 'string' ? body.username : '');
    const password = typeof body.password === 'string' ? body.password : '';
    if (cli.admin && !(safeEqual(name, cli.admin.user) && safeEqual(password, cli.admin.password))) {
      return sendJSON(res, 401, { error: 'unauthorized', reason: 'Name or password is incorrect.' });
    }
    const token = crypto.randomBytes(24).toString('hex');
    sessions.set(token, { user: name, expires: Date.now() + SESSION_TIMEOUT_MS });
    for (const [key, value] of sessions) if (value.expires < Date.now()) sessions.delete(key);
    res.setHeader('Set-Cookie', 'AuthSession=' + token + '; Version=1; Path=/; HttpOnly; Max-Age=' +
      (SESSION_TIMEOUT_MS / 1000));
    sendJSON(res, 200, { ok: true, name: name || null, roles: ['_admin'] });
  });
app.delete('/_session', (req, res) => {
  const m = /(?:^|;\s*)AuthSession=([^;]+)/.exec(req.headers.cookie || '');
  if (m) sessions.delete(m[1]);
  res.setHeader('Set-Cookie', 'AuthSession=; Version=1; Path=/; HttpOnly; Max-Age=0');
  sendJSON(res, 200, { ok: true });
});

if (cli.admin) {
  app.use((req, res, next) => {
    const header = req.headers.authorization || '';
    const m = /^Basic\s+(\S+)\s*$/i.exec(header);
    const cookieUser = !m && sessionUser(req);
    if (cookieUser) {
      req.devUser = cookieUser;
      return next();
    }
    if (!m) {
      return sendJSON(res, 401, { error: 'unauthorized', reason: 'Authentication required.' });
    }
    const decoded = Buffer.from(m[1], 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    const user = colon >= 0 ? decoded.slice(0, colon) : decoded;
    const pass = colon >= 0 ? decoded.slice(colon + 1) : '';
    if (!(safeEqual(user, cli.admin.user) && safeEqual(pass, cli.admin.password))) {
      return sendJSON(res, 401, { error: 'unauthorized', reason: 'Name or password is incorrect.' });
    }
    req.devUser = user;
    next();
  });
}

// ------------------------------------------------------ FIX 12: _db_updates
// CouchDB 3 answers GET /_db_updates with one row per database that changed
// (created, updated, deleted; its latest change only) in sequence order.
// express-pouchdb has no such feed. Every successful write request (and every
// document a replication writes) notes its database here; with --data-dir the
// rows survive a restart, so a follower's stored `since` stays meaningful.
const DB_UPDATES_FILE = cli.inMemory ? null : path.join(dataDir, '_db_updates.json');
const dbUpdates = { seq: 0, rows: new Map(), waiters: new Set(), saveTimer: null };
(function loadDbUpdates() {
  if (!DB_UPDATES_FILE) return;
  try {
    const saved = JSON.parse(fs.readFileSync(DB_UPDATES_FILE, 'utf8'));
    dbUpdates.seq = saved.seq || 0;
    for (const [name, row] of saved.rows || []) dbUpdates.rows.set(name, row);
  } catch (err) {
    if (err.code !== 'ENOENT') log('ignoring unreadable', DB_UPDATES_FILE + ':', err.message);
  }
}());
function saveDbUpdatesSoon() {
  if (!DB_UPDATES_FILE || dbUpdates.saveTimer) return;
  dbUpdates.saveTimer = setTimeout(() => {
    dbUpdates.saveTimer = null;
    const tmp = DB_UPDATES_FILE + '.tmp';
    const body = JSON.stringify({ seq: dbUpdates.seq, rows: Array.from(dbUpdates.rows) });
    fs.writeFile(tmp, body, (err) => {
      if (err) return log('could not save', DB_UPDATES_FILE + ':', err.message);
      fs.rename(tmp, DB_UPDATES_FILE, (e) => { if (e) log('could not save', DB_UPDATES_FILE + ':', e.message); });
    });
  }, 50);
}
function noteDbUpdate(name, type) {
  if (!name || MRVIEW_RE.test(name)) return;
  dbUpdates.seq += 1;
  // Map order is insertion order: delete first so the row moves to the end.
  dbUpdates.rows.delete(name);
  dbUpdates.rows.set(name, { type, seq: dbUpdates.seq });
  saveDbUpdatesSoon();
  for (const wake of dbUpdates.waiters) wake();
}
function seqString(n) { return n + '-devserver'; }
function dbUpdatesSince(since, limit) {
  const results = [];
  for (const [name, row] of dbUpdates.rows) {
    if (row.seq > since) results.push({ db_name: name, type: row.type, seq: seqString(row.seq) });
  }
  // Rows are in sequence order already (each change moves its row to the end).
  return limit > 0 ? results.slice(0, limit) : results;
}
// A POST to these paths reads; every other non-GET request on a database writes.
const READ_ONLY_DB_POST = /^\/(_all_docs|_bulk_get|_find|_explain|_changes|_revs_diff|_missing_revs|_ensure_full_commit|_design\/[^/]+\/_view\/.*|_design\/[^/]+\/_list\/.*|_local\/.*)$/;
app.use((req, res, next) => {
  if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS') return next();
  const segment = req.path.split('/')[1] || '';
  let name;
  try { name = decodeURIComponent(segment); } catch (e) { return next(); }
  if (!name || name.startsWith('_')) return next();
  const rest = req.path.slice(segment.length + 1);
  if (READ_ONLY_DB_POST.test(rest)) return next();
  const wholeDb = rest === '' || rest === '/';
  res.on('finish', () => {
    if (res.statusCode < 200 || res.statusCode >= 300) return;
    if (wholeDb && req.method === 'PUT') noteDbUpdate(name, 'created');
    else if (wholeDb && req.method === 'DELETE') noteDbUpdate(name, 'deleted');
    else noteDbUpdate(name, 'updated');
  });
  next();
});
app.get('/_db_updates', (req, res) => {
  const feed = req.query.feed || 'normal';
  if (feed !== 'normal' && feed !== 'longpoll') {
    return sendJSON(res, 400, { error: 'bad_request', reason: 'feed must be normal or longpoll here' });
  }
  const raw = req.query.since;
  const since = raw === undefined ? 0 : raw === 'now' ? dbUpdates.seq : parseInt(String(raw), 10);
  if (!Number.isFinite(since) || since < 0) {
    return sendJSON(res, 400, { error: 'bad_request', reason: 'invalid since: ' + raw });
  }
  const limit = parseInt(String(req.query.limit || '0'), 10) || 0;
  const answer = () => {
    const results = dbUpdatesSince(since, limit);
    const last = results.length ? results[results.length - 1].seq : seqString(Math.max(since, 0));
    sendJSON(res, 200, { results, last_seq: last });
  };
  if (feed === 'normal' || dbUpdatesSince(since, 1).length) return answer();
  const timeoutMs = Math.min(Math.max(parseInt(String(req.query.timeout || '60000'), 10) || 60000, 0), 600000);
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    dbUpdates.waiters.delete(wake);
    if (!res.writableEnded && !res.destroyed) answer();
  };
  const wake = () => { if (dbUpdatesSince(since, 1).length) finish(); };
  const timer = setTimeout(finish, timeoutMs);
  dbUpdates.waiters.add(wake);
  req.on('close', () => { done = true; clearTimeout(timer); dbUpdates.waiters.delete(wake); });
});

app.get('/_session', (req, res) => sendJSON(res, 200, {
  ok: true,
  userCtx: { name: req.devUser || null, roles: ['_admin'] },
  info: { authentication_handlers: ['default'], authenticated: 'default' },
}));

// FIX 1: list real names (with "/"), sorted like CouchDB.
// Ranges as CouchDB takes them: start_key/end_key (or startkey/endkey) as JSON strings,
// descending, limit and skip.
app.get('/_all_dbs', (req, res) => {
  const q = req.query;
  const key = (name) => {
    const raw = q[name] !== undefined ? q[name] : q[name.replace('_', '')];
    if (raw === undefined) return undefined;
    try { const value = JSON.parse(String(raw)); return typeof value === 'string' ? value : undefined; } catch (e) { return undefined; }
  };
  const descending = q.descending === 'true';
  const start = key('start_key');
  const end = key('end_key');
  let names = Array.from(knownDbs).sort();
  if (descending) names.reverse();
  names = names.filter((n) => {
    if (start !== undefined && (descending ? n > start : n < start)) return false;
    if (end !== undefined && (descending ? n < end : n > end)) return false;
    return true;
  });
  const skip = parseInt(String(q.skip || '0'), 10) || 0;
  const limit = q.limit !== undefined ? parseInt(String(q.limit), 10) : undefined;
  names = names.slice(skip, limit !== undefined && limit >= 0 ? skip + limit : undefined);
  sendJSON(res, 200, names);
});

// FIX 13: POST /_dbs_info (CouchDB 2.2+): the info of several databases in one
// request, {"key": name, "info": {...}} or {"key": name, "error": "not_found"}
// each, in request order. The service validates its count cache with it.
app.post('/_dbs_info', express.json({ limit: '1mb', type: () => true }), async (req, res) => {
  try {
    const keys = req.body && Array.isArray(req.body.keys) ? req.body.keys : null;
    if (!keys) throw badRequest('`keys` member must exist.');
    if (keys.length > 100) throw badRequest('`keys` member exceeds limit of 100');
    const rows = [];
    for (const key of keys) {
      if (typeof key !== 'string' || !knownDbs.has(key)) {
        rows.push({ key, error: 'not_found' });
        continue;
      }
      const info = await (await openKnownDb(req, key)).info();
      rows.push({ key, info: Object.assign({}, info, { db_name: key }) });
    }
    sendJSON(res, 200, rows);
  } catch (err) {
    sendErrorJSON(res, err);
  }
});

app.get('/_uuids', (req, res) => {
  const count = Math.min(Math.max(parseInt(req.query.count || '1', 10) || 1, 1), 1000);
  const uuids = [];
  for (let i = 0; i < count; i++) uuids.push(crypto.randomBytes(16).toString('hex'));
  res.setHeader('Cache-Control', 'must-revalidate, no-cache');
  sendJSON(res, 200, { uuids });
});

app.get('/_active_tasks', (req, res) => sendJSON(res, 200, []));

// POST /_replicate. express-pouchdb's version logs full error objects and
// can create empty local dbs for mistyped names; failures here become
// CouchDB-style JSON errors (FIX 7).
const continuousReplications = new Map();
function replicationEndpoint(spec, isTarget, createTarget) {
  let url = spec;
  let headers = null;
  if (spec && typeof spec === 'object') {
    url = spec.url;
    headers = spec.headers || null;
  }
  if (typeof url !== 'string' || !url) throw badRequest('source and target must be names or URLs');
  if (/^https?:\/\//i.test(url)) {
    const opts = { skip_setup: !(isTarget && createTarget) };
    if (headers) {
      opts.fetch = (u, o) => {
        for (const k of Object.keys(headers)) o.headers.set(k, headers[k]);
        return PouchDB.fetch(u, o);
      };
    }
    return Promise.resolve(new PouchDB(url, opts));
  }
  if (dbNameError(url)) return Promise.reject(Object.assign({ status: 400 }, dbNameError(url)));
  if (!knownDbs.has(url) && !(isTarget && createTarget)) {
    return Promise.reject({ status: 404, error: 'db_not_found',
      reason: 'could not open ' + url });
  }
  return getOrCreateDB(PouchDB, url).then((db) => db.info().then(() => db));
}
app.post('/_replicate', express.json({ limit: '16mb' }), async (req, res) => {
  try {
    const body = req.body;
    if (!body || typeof body !== 'object' || Array.isArray(body)) {
      throw badRequest('Request body must be a JSON object');
    }
    const key = JSON.stringify([body.source, body.target]);
    if (body.cancel) {
      const rep = continuousReplications.get(key);
      if (!rep) throw { status: 404, error: 'not_found', reason: 'replication not found' };
      rep.cancel();
      continuousReplications.delete(key);
      return sendJSON(res, 200, { ok: true });
    }
    // The source first: a replication whose source does not exist must not create its
    // target (CouchDB answers db_not_found and leaves everything as it was).
    const source = await replicationEndpoint(body.source, false, false);
    await source.info().catch((err) => {
      throw { status: 404, error: 'db_not_found', reason: 'could not open source: ' +
        String((err && (err.reason || err.message)) || err) };
    });
    const target = await replicationEndpoint(body.target, true, !!body.create_target);
    // FIX 12: a replication writes through PouchDB, not through HTTP requests.
    const localTarget = typeof body.target === 'string' && !/^https?:\/\//i.test(body.target)
      ? body.target : null;
    const opts = {};
    for (const k of ['filter', 'query_params', 'doc_ids', 'selector', 'since_seq']) {
      if (body[k] !== undefined) opts[k === 'since_seq' ? 'since' : k] = body[k];
    }
    if (body.continuous) {
      const rep = PouchDB.replicate(source, target, Object.assign(opts, { live: true, retry: true }));
      rep.on('change', (info) => {
        if (localTarget && info && info.docs_written) noteDbUpdate(localTarget, 'updated');
      });
      rep.on('error', (err) => { log('replication error:', err && err.message); continuousReplications.delete(key); });
      continuousReplications.set(key, rep);
      return sendJSON(res, 202, { ok: true, _local_id: crypto.createHash('md5').update(key).digest('hex') });
    }
    const started = new Date().toUTCString();
    const result = await PouchDB.replicate(source, target, opts);
    if (result && result.ok === false) throw { status: 500, error: 'replication_failed', reason: 'replication failed' };
    if (localTarget && result.docs_written) noteDbUpdate(localTarget, 'updated');
    sendJSON(res, 200, {
      ok: true,
      no_changes: result.docs_written === 0,
      history: [{
        start_time: started, end_time: new Date().toUTCString(),
        docs_read: result.docs_read, docs_written: result.docs_written,
        doc_write_failures: result.doc_write_failures,
        start_last_seq: result.start_last_seq, end_last_seq: result.last_seq,
      }],
    });
  } catch (err) {
    sendErrorJSON(res, err && err.status ? err : {
      status: 500, error: 'replication_failed', reason: String((err && (err.reason || err.message)) || err),
    });
  }
});

// Database create / delete (FIX 1 validation, 412 on existing db, no stray
// directories; FIX 8 auth already enforced above).
const creating = new Set();
app.put('/:db', async (req, res) => {
  const name = req.params.db;
  const invalid = dbNameError(name);
  if (invalid) return sendJSON(res, 400, invalid);
  if (knownDbs.has(name) || creating.has(name)) {
    return sendJSON(res, 412, { error: 'file_exists',
      reason: 'The database could not be created, the file already exists.' });
  }
  creating.add(name);
  try {
    const db = await getOrCreateDB(PouchDB, name);
    try {
      await db.info();
    } catch (err) {
      if (PouchDB.__dbCacheMap) PouchDB.__dbCacheMap.delete(name);
      throw err;
    }
    knownDbs.add(name);
    res.location('/' + encodeURIComponent(name));
    sendJSON(res, 201, { ok: true });
  } catch (err) {
    sendErrorJSON(res, err);
  } finally {
    creating.delete(name);
  }
});
app.delete('/:db', async (req, res) => {
  const name = req.params.db;
  const invalid = dbNameError(name);
  if (invalid) return sendJSON(res, 400, invalid);
  if (req.query.rev) {
    return sendJSON(res, 400, { error: 'bad_request', reason: 'You tried to DELETE a ' +
      'database with a ?rev= parameter. Did you mean to DELETE a document instead?' });
  }
  if (!knownDbs.has(name)) {
    return sendJSON(res, 404, { error: 'not_found', reason: 'Database does not exist.' });
  }
  try {
    await deleteDB(PouchDB, name);
    knownDbs.delete(name);
    sendJSON(res, 200, { ok: true });
  } catch (err) {
    sendErrorJSON(res, err);
  }
});

// _security: stored in a _local doc (persisted with the db, never
// replicated). Not enforced: the only user is the admin.
app.get('/:db/_security', async (req, res) => {
  try {
    const db = await openKnownDb(req, req.params.db);
    const doc = await db.get(SECURITY_DOC_ID).catch((e) => {
      if (e.status === 404) return { security: {} };
      throw e;
    });
    sendJSON(res, 200, doc.security);
  } catch (err) {
    sendErrorJSON(res, err);
  }
});
app.put('/:db/_security', express.json({ limit: '16mb', type: () => true }), async (req, res) => {
  try {
    const db = await openKnownDb(req, req.params.db);
    if (!req.body || typeof req.body !== 'object' || Array.isArray(req.body)) {
      throw badRequest('Security object must be a JSON object');
    }
    for (;;) {
      const cur = await db.get(SECURITY_DOC_ID).catch(() => ({ _id: SECURITY_DOC_ID }));
      try {
        await db.put({ _id: SECURITY_DOC_ID, _rev: cur._rev, security: req.body });
        break;
      } catch (e) {
        if (e.status !== 409) throw e;
      }
    }
    sendJSON(res, 200, { ok: true });
  } catch (err) {
    sendErrorJSON(res, err);
  }
});

const docJsonParser = express.json({ limit: MAX_BODY, type: () => true, strict: false });
app.use(async (req, res, next) => {
  const segs = pathSegments(req);
  const docId = docIdOf(segs);
  if (docId && (req.method === 'GET' || req.method === 'HEAD')) {
    req.devDocRead = true; // FIX 5 (see sendJSON)
    return next();
  }
  if (docId && req.method === 'PUT') {
    const ctype = String(req.headers['content-type'] || '');
    const finish = (doc) => {
      if (!doc || typeof doc !== 'object' || Array.isArray(doc)) {
        return sendJSON(res, 400, { error: 'bad_request', reason: 'Document must be a JSON object' });
      }
      if (jsonSizeWithoutAttachments(doc) > MAX_DOCUMENT_SIZE) {
        return sendJSON(res, 413, { error: 'document_too_large', reason: docId });
      }
      // FIX 4: the id in the URL wins over the body's _id (CouchDB behaviour;
      // express-pouchdb did the opposite and silently wrote another doc).
      doc._id = docId;
      if (req.query.new_edits === 'false' && typeof doc._rev === 'string') {
        req.devReplicatedDoc = { id: docId, rev: doc._rev };
      }
      req.body = doc;
      req._body = true; // tells body-parser in express-pouchdb it is parsed
      req.headers['content-type'] = 'application/json';
      next();
    };
    if (/^multipart\/related/i.test(ctype)) {
      try {
        finish(parseMultipartRelated(await readBody(req, MAX_BODY), ctype));
      } catch (err) {
        sendErrorJSON(res, err, 400);
      }
      return;
    }
    if (/^multipart\//i.test(ctype)) {
      return sendJSON(res, 415, { error: 'bad_content_type',
        reason: 'Content-Type must be application/json or multipart/related' });
    }
    return docJsonParser(req, res, (err) => {
      if (err) {
        return sendJSON(res, err.status === 413 ? 413 : 400, err.status === 413
          ? { error: 'too_large', reason: 'the request entity is too large' }
          : { error: 'bad_request', reason: 'invalid UTF-8 JSON' });
      }
      finish(req.body === undefined ? {} : req.body); // no body: empty doc
    });
  }
  // POST /db/_changes with {"selector": ...}: express-pouchdb ignores the
  // body's selector, so feed it through the query like PouchDB expects.
  if (segs && segs.length === 2 && segs[1] === '_changes') {
    const filter = req.query.filter;
    if (filter === '_selector') {
      return express.json({ limit: '16mb', type: () => true })(req, res, (err) => {
        if (err) return sendJSON(res, 400, { error: 'bad_request', reason: 'invalid UTF-8 JSON' });
        const sel = req.body && req.body.selector;
        if (!sel || typeof sel !== 'object') {
          return sendJSON(res, 400, { error: 'bad_request',
            reason: 'Selector must be specified in POST payload' });
        }
        req.query.selector = sel;
        next();
      });
    }
  }
  next();
});

// FIX 5: _bulk_docs results in request order. PouchDB sorts the docs by
// id/rev when new_edits=false (so its error list comes back sorted), and one
// doc with an illegal _id or special member fails the WHOLE request, where
// CouchDB reports that doc's error in its own slot. We take such docs out,
// let PouchDB handle the rest, and merge the answer back in request order
// (see mergeBulkResults, called from sendJSON).
const SPECIAL_MEMBERS = new Set(['_id', '_rev', '_attachments', '_deleted',
  '_revisions', '_revs_info', '_conflicts', '_deleted_conflicts', '_local_seq',
  '_rev_tree', '_replication_id', '_replication_state', '_replication_state_time',
  '_replication_state_reason', '_replication_stats', '_removed']);
function bulkDocError(doc) {
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) {
    return { error: 'bad_request', reason: 'Document must be a JSON object' };
  }
  if ('_id' in doc) {
    const id = doc._id;
    if (typeof id !== 'string') {
      return { id, error: 'illegal_docid', reason: 'Document id must be a string' };
    }
    if (id.startsWith('_') && !id.startsWith('_design/') && !id.startsWith('_local/')) {
      return { id, error: 'illegal_docid', reason: 'Only reserved document ids may start with underscore.' };
    }
  }
  for (const key of Object.keys(doc)) {
    if (key.startsWith('_') && !SPECIAL_MEMBERS.has(key)) {
      return { id: doc._id, error: 'doc_validation', reason: 'Bad special document member: ' + key };
    }
  }
  return null;
}
app.post('/:db/_bulk_docs', express.json({ limit: MAX_BODY, type: () => true }), (req, res, next) => {
  const body = req.body;
  if (!body || typeof body !== 'object' || !Array.isArray(body.docs)) return next();
  const tooLarge = body.docs.find((doc) => doc && typeof doc === 'object' &&
    jsonSizeWithoutAttachments(doc) > MAX_DOCUMENT_SIZE);
  if (tooLarge) return sendJSON(res, 413, { error: 'document_too_large', reason: String(tooLarge._id) });
  const newEdits = body.new_edits !== false;
  const plan = { newEdits, ids: [], errors: [] };
  const kept = [];
  body.docs.forEach((doc, i) => {
    const err = bulkDocError(doc);
    plan.ids.push(doc && typeof doc === 'object' ? doc._id : undefined);
    plan.errors.push(err);
    if (!err) kept.push(doc);
  });
  body.docs = kept;
  res.devBulk = plan;
  next();
});
function mergeBulkResults(results, plan) {
  if (plan.newEdits) {
    // PouchDB keeps order for new_edits=true: refill the removed slots.
    const out = [];
    let j = 0;
    plan.errors.forEach((err) => out.push(err || results[j++]));
    while (j < results.length) out.push(results[j++]);
    return out;
  }
  // new_edits=false: only errors are returned; order them by request position.
  const firstIndex = new Map();
  plan.ids.forEach((id, i) => { if (!firstIndex.has(id)) firstIndex.set(id, i); });
  const all = results.map((r) => ({ r, i: firstIndex.has(r.id) ? firstIndex.get(r.id) : Infinity }));
  plan.errors.forEach((err, i) => { if (err) all.push({ r: err, i }); });
  return all.sort((a, b) => a.i - b.i).map((x) => x.r);
}

// FIX 9: CouchDB refuses view query values it cannot parse (400
// query_parse_error); express-pouchdb guessed (a key that is not JSON became
// a string). Clients must see the same refusal on both servers.
const JSON_QUERY_PARAMS = ['key', 'keys', 'startkey', 'endkey', 'start_key', 'end_key'];
const COUNT_QUERY_PARAMS = ['limit', 'skip', 'group_level'];
function queryParseError(query) {
  for (const name of JSON_QUERY_PARAMS) {
    if (typeof query[name] !== 'string') continue;
    try {
      JSON.parse(query[name]);
    } catch (e) {
      return 'Invalid JSON value for ' + name + ': ' + JSON.stringify(query[name]);
    }
  }
  for (const name of COUNT_QUERY_PARAMS) {
    if (typeof query[name] !== 'string') continue;
    if (!/^[0-9]+$/.test(query[name]) || !Number.isSafeInteger(Number(query[name]))) {
      return 'Invalid value for positive integer: ' + JSON.stringify(query[name]);
    }
  }
  return null;
}
app.use((req, res, next) => {
  const segs = pathSegments(req);
  const isView = segs && ((segs.length === 5 && segs[1] === '_design' && segs[3] === '_view') ||
    (segs.length === 2 && segs[1] === '_all_docs'));
  if (isView && (req.method === 'GET' || req.method === 'POST')) {
    const reason = queryParseError(req.query);
    if (reason) return sendJSON(res, 400, { error: 'query_parse_error', reason });
  }
  next();
});

// FIX 10: the multi-query endpoint of CouchDB 2.2+ (POST .../_view/NAME/queries
// with {"queries": [...]}, answered {"results": [...]}, one per query in
// order). Each query's values are JSON already, not query-string text.
const QUERY_OPTION_NAMES = {
  key: 'key', keys: 'keys', startkey: 'startkey', start_key: 'startkey',
  endkey: 'endkey', end_key: 'endkey', startkey_docid: 'startkey_docid',
  start_key_doc_id: 'startkey_docid', endkey_docid: 'endkey_docid',
  end_key_doc_id: 'endkey_docid', limit: 'limit', skip: 'skip', descending: 'descending',
  group: 'group', group_level: 'group_level', reduce: 'reduce', include_docs: 'include_docs',
  inclusive_end: 'inclusive_end', update_seq: 'update_seq',
};
app.post('/:db/_design/:ddoc/_view/:view/queries', express.json({ limit: '16mb', type: () => true }),
  async (req, res) => {
    try {
      const body = req.body;
      if (!body || typeof body !== 'object' || !Array.isArray(body.queries)) {
        throw badRequest('Request body must be a JSON object with a "queries" array');
      }
      const db = await openKnownDb(req, req.params.db);
      const results = [];
      for (const query of body.queries) {
        if (!query || typeof query !== 'object' || Array.isArray(query)) {
          throw { status: 400, error: 'query_parse_error', reason: 'each query must be a JSON object' };
        }
        const opts = {};
        for (const name of Object.keys(query)) {
          const option = QUERY_OPTION_NAMES[name];
          if (!option) continue;
          opts[option] = query[name];
        }
        for (const name of ['limit', 'skip', 'group_level']) {
          if (opts[name] !== undefined && !(Number.isSafeInteger(opts[name]) && opts[name] >= 0)) {
            throw { status: 400, error: 'query_parse_error',
              reason: 'Invalid value for positive integer: ' + JSON.stringify(opts[name]) };
          }
        }
        const answer = await db.query(req.params.ddoc + '/' + req.params.view, opts);
        results.push(answer);
      }
      sendJSON(res, 200, { results });
    } catch (err) {
      sendErrorJSON(res, err);
    }
  });

const pouchApp = expressPouchDB(PouchDB, {
  mode: 'minimumForPouchDB',
  overrideMode: {
    // FIX 3: no compression. session-stub/all-dbs/root are answered above.
    exclude: ['compression', 'routes/root', 'routes/session-stub', 'routes/all-dbs'],
    include: ['routes/find'],
  },
});
pouchApp.disable('x-powered-by');
pouchApp.set('etag', false);
app.use(pouchApp);

// Errors that reach express (sync throws in handlers, body parser errors)
// become CouchDB-style JSON instead of an HTML stack trace (FIX 7).
// eslint-disable-next-line no-unused-vars
app.use((err, req, res, next) => {
  if (err && (err.type === 'entity.parse.failed')) {
    return sendJSON(res, 400, { error: 'bad_request', reason: 'invalid UTF-8 JSON' });
  }
  if (err && err.status === 413) {
    return sendJSON(res, 413, { error: 'too_large', reason: 'the request entity is too large' });
  }
  log('request error:', req.method, req.originalUrl, (err && err.stack) || err);
  sendErrorJSON(res, err, 500);
});

// FIX 7: process-level guards. An exception thrown from an async callback
// (PouchDB/leveldown/multiparty internals) must not kill the server: log it
// and, when we know which request it belongs to, answer that request.
function guard(kind) {
  return (err) => {
    log(kind + ':', (err && err.stack) || err);
    const store = als.getStore();
    if (store && store.res && !store.res.headersSent && !store.res.writableEnded) {
      try {
        sendJSON(store.res, 500, { error: 'unknown_error',
          reason: String((err && err.message) || err) });
      } catch (e) { /* the socket may be gone already */ }
    }
  };
}
process.on('uncaughtException', guard('uncaught exception'));
process.on('unhandledRejection', guard('unhandled rejection'));

// ------------------------------------------------------------ listen
const server = http.createServer(app);
server.requestTimeout = 0; // multi-MB uploads and long feeds are fine
server.listen(cli.port, cli.host, () => {
  const addr = server.address();
  const host = addr.family === 'IPv6' ? '[' + addr.address + ']' : addr.address;
  const url = 'http://' + host + ':' + addr.port;
  process.stdout.write('{"ready": true, "url": ' + JSON.stringify(url) + '}\n');
  log('listening on', url, cli.inMemory ? '(in memory)' : '(data: ' + dataDir + ')',
    cli.admin ? '(admin: ' + cli.admin.user + ')' : '(no admin: open access)');
});
server.on('error', (err) => {
  log('server error:', err.message);
  process.exit(1);
});

// Quick, clean shutdown: stop accepting, drop open connections (continuous
// feeds would otherwise keep us alive), close databases, exit 0 within
// ~0.3 s whatever happens.
let stopping = false;
function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  log('received', signal + ', shutting down');
  setTimeout(() => process.exit(0), 300).unref();
  server.close();
  server.closeAllConnections();
  const dbs = PouchDB.__dbCacheMap ? Array.from(PouchDB.__dbCacheMap.values()) : [];
  Promise.all(dbs.map((db) => db.close().catch(() => null)))
    .then(() => process.exit(0), () => process.exit(0));
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
if (cli.exitWithStdin) {
  process.stdin.on('end', () => shutdown('stdin EOF'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.resume();
}
process.on('SIGINT', () => shutdown('SIGINT'));
