'use strict';
// json-server 0.17 as a module (node json_server.js DB_JSON): the generated db served read-only
// from memory (never written back), on a free port of 127.0.0.1, optionally behind basic auth
// and/or an API key. Credentials come from the environment, never argv (argv is visible to
// every user of the machine):
//   JSON_SERVER_BASIC="user:password"  accepts  Authorization: Basic base64(user:password)
//   JSON_SERVER_API_KEY="key"          accepts  ?api_key=key  or the header  X-API-Key: key
// With either set, a request carrying none that matches gets 401 {"error": "unauthorized"}.
//   JSON_SERVER_SHORT="/posts/3/comments"  serves every page of that list one item short
//                                          (its first), while X-Total-Count still counts it all
// Prints "json-server listening on http://127.0.0.1:PORT" once it accepts connections.
const crypto = require('crypto');
const fs = require('fs');
const jsonServer = require('json-server');

const db = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const basic = process.env.JSON_SERVER_BASIC || '';
const apiKey = process.env.JSON_SERVER_API_KEY || '';
const short = process.env.JSON_SERVER_SHORT || '';

function same(given, secret) {
  const a = Buffer.from(String(given), 'utf8');
  const b = Buffer.from(secret, 'utf8');
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

function authorized(req) {
  if (basic) {
    const m = /^basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(req.get('authorization') || '');
    if (m && same(Buffer.from(m[1], 'base64').toString('utf8'), basic)) return true;
  }
  if (apiKey) {
    const key = req.query.api_key;
    if (typeof key === 'string' && same(key, apiKey)) return true;
    const header = req.get('x-api-key');
    if (header !== undefined && same(header, apiKey)) return true;
  }
  return false;
}

const app = jsonServer.create();
app.use(jsonServer.defaults({ logger: false, readOnly: true, noCors: true }));
if (basic || apiKey) {
  app.use((req, res, next) => {
    const ok = authorized(req);
    // Never a filter, even if an item had an api_key field (json-server filters on any
    // query parameter named after a field).
    // The Link header is built from the original URL, so next links keep the key.
    delete req.query.api_key;
    if (ok) return next();
    if (basic) res.set('WWW-Authenticate', 'Basic realm="json-server"');
    return res.status(401).json({ error: 'unauthorized' });
  });
}
const router = jsonServer.router(db);
if (short) {
  // A list that loses an item between the server's count and its pages: what a client that
  // checks the total must catch. originalUrl, since the nested route rewrites req.url.
  router.render = (req, res) => {
    const data = res.locals.data;
    const path = req.originalUrl.split('?')[0];
    res.jsonp(path === short && Array.isArray(data) ? data.slice(1) : data);
  };
}
app.use(router);

const server = app.listen(0, '127.0.0.1', () => {
  console.log(`json-server listening on http://127.0.0.1:${server.address().port}`);
});
