// Drives UNMODIFIED jsforce 3 against the tokenkeep Salesforce emulator, for
// tests/fidelity/test_jsforce.py.
//
// Config: one JSON document, from argv[2] or the TK_JSFORCE_CONFIG environment variable:
//   {"loginUrl", "clientId", "clientSecret", "redirectUri", "code", "version",
//    "soql", "batchSize"}
// With "code" the script exchanges the authorization code through jsforce's own
// Connection.authorize(). With "username" and "password" it logs in with
// Connection.login(), which jsforce does through the OAuth2 password grant when the
// oauth2 config has a client secret (and repeats on expiry). Otherwise it takes
// "accessToken", "refreshToken" and "instanceUrl" and lets jsforce refresh with the
// oauth2 config, like a stored session. With "browserFlow" jsforce builds the authorize
// URL itself (PKCE on: useVerifier), prints {"authorizeUrl"}, and reads the code the test
// got by walking the emulator's HTML login and approval pages from one stdin line.
//
// Protocol: every "round" runs a paginated query (autoFetch and manual queryMore) and a
// create/retrieve/update/delete cycle, then prints ONE JSON line on stdout. After a round
// the script reads one line on stdin: "next" runs another round (the test advances the
// emulator clock in between), anything else (or EOF) ends the script. A round that fails
// prints {"ok": false, "error": ...} instead of throwing, so the test sees jsforce's error.
import readline from 'node:readline';
import jsforce from 'jsforce';

const raw = process.argv[2] ?? process.env.TK_JSFORCE_CONFIG;
if (!raw) {
  console.error('usage: node jsforce_session.mjs <config JSON> (or TK_JSFORCE_CONFIG)');
  process.exit(2);
}
const cfg = JSON.parse(raw);

const oauth2 = new jsforce.OAuth2({
  loginUrl: cfg.loginUrl,
  clientId: cfg.clientId,
  clientSecret: cfg.clientSecret,
  redirectUri: cfg.redirectUri,
  useVerifier: Boolean(cfg.browserFlow),
});
const conn = new jsforce.Connection({
  oauth2,
  version: cfg.version ?? '60.0',
  ...(cfg.code || cfg.username || cfg.browserFlow
    ? {}
    : {
        accessToken: cfg.accessToken,
        refreshToken: cfg.refreshToken,
        instanceUrl: cfg.instanceUrl,
      }),
});

// jsforce emits 'refresh' after every successful session refresh; count them to compare
// with the emulator's request log.
let refreshEvents = 0;
conn.on('refresh', () => {
  refreshEvents += 1;
});

const emit = (doc) => process.stdout.write(`${JSON.stringify(doc)}\n`);

async function round() {
  const tokenBefore = conn.accessToken;
  const headers = cfg.batchSize ? { 'Sforce-Query-Options': `batchSize=${cfg.batchSize}` } : {};

  // autoFetch follows nextRecordsUrl itself (one request per page).
  let fetches = 0;
  const query = conn.query(cfg.soql, { headers, autoFetch: true, maxFetch: 100000 });
  query.on('fetch', () => {
    fetches += 1;
  });
  const all = await query;

  // Manual pagination with queryMore(nextRecordsUrl).
  const pages = [];
  let page = await conn.query(cfg.soql, { headers, autoFetch: false });
  pages.push(page.records.length);
  for (let i = 0; i < 1000 && !page.done; i += 1) {
    page = await conn.queryMore(page.nextRecordsUrl, { headers });
    pages.push(page.records.length);
  }

  // CRUD on Account.
  const name = `jsforce ${Date.now()}`;
  const created = await conn.sobject('Account').create({ Name: name });
  const fetched = await conn.sobject('Account').retrieve(created.id);
  const updated = await conn.sobject('Account').update({ Id: created.id, Name: `${name} v2` });
  const refetched = await conn.sobject('Account').retrieve(created.id);
  const destroyed = await conn.sobject('Account').destroy(created.id);
  let afterDelete = null;
  try {
    await conn.sobject('Account').retrieve(created.id);
    afterDelete = 'found';
  } catch (err) {
    afterDelete = err.errorCode ?? err.name ?? String(err);
  }

  return {
    ok: true,
    totalSize: all.totalSize,
    autoFetchRecords: all.records.length,
    autoFetchRequests: fetches,
    pages,
    created: { id: created.id, success: created.success },
    fetchedName: fetched.Name,
    updated: { id: updated.id, success: updated.success },
    refetchedName: refetched.Name,
    destroyed: { id: destroyed.id, success: destroyed.success },
    afterDelete,
    tokenChanged: conn.accessToken !== tokenBefore,
  };
}

async function runRound(n) {
  let result;
  try {
    result = await round();
  } catch (err) {
    result = { ok: false, error: String(err?.message ?? err), errorCode: err?.errorCode ?? null };
  }
  emit({
    round: n,
    ...result,
    refreshEvents,
    instanceUrl: conn.instanceUrl,
    hasRefreshToken: Boolean(conn.refreshToken),
  });
}

async function main() {
  const rl = readline.createInterface({ input: process.stdin });
  const lines = rl[Symbol.asyncIterator]();
  let code = cfg.code;
  if (cfg.browserFlow) {
    emit({ authorizeUrl: oauth2.getAuthorizationUrl({ scope: 'api refresh_token', state: cfg.state }) });
    const line = await lines.next();
    code = line.done ? '' : line.value.trim();
  }
  if (code) {
    // jsforce's own authorization-code exchange (POST /services/oauth2/token), with the
    // PKCE code_verifier when useVerifier is on.
    const userInfo = await conn.authorize(code);
    emit({
      authorized: true,
      userId: userInfo.id,
      organizationId: userInfo.organizationId,
      instanceUrl: conn.instanceUrl,
      hasRefreshToken: Boolean(conn.refreshToken),
    });
  }
  if (cfg.username) {
    const userInfo = await conn.login(cfg.username, cfg.password);
    emit({
      authorized: true,
      userId: userInfo.id,
      organizationId: userInfo.organizationId,
      instanceUrl: conn.instanceUrl,
      hasRefreshToken: Boolean(conn.refreshToken),
    });
  }
  for (let n = 1; n <= 20; n += 1) {
    await runRound(n);
    const next = await lines.next();
    if (next.done || next.value.trim() !== 'next') break;
  }
  rl.close();
}

main().catch((err) => {
  emit({ fatal: String(err?.stack ?? err) });
  process.exit(1);
});
