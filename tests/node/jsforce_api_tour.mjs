// A tour of the jsforce 3 API surface integrations use most, run UNMODIFIED against the
// tokenkeep Salesforce emulator (tests/fidelity/test_jsforce.py). jsforce builds every
// URL, header and body itself; the test compares what it got with the emulator's state.
//
// Config: one JSON document from argv[2] or TK_JSFORCE_CONFIG:
//   {"loginUrl", "clientId", "clientSecret", "redirectUri", "code", "version", "only"}
// "only" (a list of step names) runs just those steps.
// Output: one JSON line {"steps": {name: {"ok": true, "value": ...} | {"ok": false, ...}}}.
import jsforce from 'jsforce';

const raw = process.argv[2] ?? process.env.TK_JSFORCE_CONFIG;
if (!raw) {
  console.error('usage: node jsforce_api_tour.mjs <config JSON> (or TK_JSFORCE_CONFIG)');
  process.exit(2);
}
const cfg = JSON.parse(raw);
const oauth2 = new jsforce.OAuth2({
  loginUrl: cfg.loginUrl,
  clientId: cfg.clientId,
  clientSecret: cfg.clientSecret,
  redirectUri: cfg.redirectUri,
});
const conn = new jsforce.Connection({ oauth2, version: cfg.version ?? '60.0' });

const steps = {};
async function step(name, fn) {
  if (cfg.only && !cfg.only.includes(name)) return;
  try {
    steps[name] = { ok: true, value: await fn() };
  } catch (err) {
    steps[name] = { ok: false, errorCode: err?.errorCode ?? null, error: String(err?.message ?? err) };
  }
}

async function main() {
  await conn.authorize(cfg.code);
  const Account = conn.sobject('Account');

  await step('identity', async () => {
    const id = await conn.identity();
    return { user_id: id.user_id, organization_id: id.organization_id, username: id.username };
  });
  await step('limits', async () => (await conn.limits()).DailyApiRequests);
  await step('describeGlobal', async () => (await conn.describeGlobal()).sobjects.map((s) => s.name));
  await step('describe', async () => {
    const d = await conn.describe('Contact');
    return { name: d.name, fields: d.fields.map((f) => f.name) };
  });
  // jsforce's SOQL builder: WHERE, ORDER BY and LIMIT.
  await step('find', async () =>
    (await Account.find({ Industry: 'Energy' }, ['Id', 'Name', 'Industry']).sort({ Name: 1 }).limit(5)).map(
      (r) => ({ Id: r.Id, Name: r.Name, Industry: r.Industry }),
    ),
  );
  await step('count', () => conn.sobject('Contact').count());
  // queryAll with autoFetch: jsforce follows the locator under /query/ even for queryAll.
  await step('scanAll', async () => {
    const r = await conn.query('SELECT Id FROM Contact', { scanAll: true, autoFetch: true, maxFetch: 100000 });
    return { totalSize: r.totalSize, records: r.records.length };
  });
  // sObject Collections (API 42+): jsforce sends arrays through /composite/sobjects.
  await step('createMany', () => Account.create([{ Name: 'jsforce tour 1' }, { Name: 'jsforce tour 2' }]));
  const ids = (steps.createMany.value ?? []).map((r) => r.id);
  // sObject Collections retrieve: POST /composite/sobjects/{type} {"ids", "fields"}.
  await step('retrieveMany', async () =>
    (await Account.retrieve(ids, { fields: ['Id', 'Name'] })).map((r) => r.Name),
  );
  await step('updateMany', () => Account.update(ids.map((Id) => ({ Id, Description: 'toured' }))));
  await step('readBack', async () =>
    (await conn.query(`SELECT Id, Description FROM Account WHERE Name = 'jsforce tour 1'`)).records.map(
      (r) => r.Description,
    ),
  );
  await step('destroyMany', () => Account.destroy(ids));
  await step('composite', async () => {
    const v = conn.version;
    const res = await conn.requestPost(`/services/data/v${v}/composite`, {
      allOrNone: true,
      compositeRequest: [
        { method: 'POST', url: `/services/data/v${v}/sobjects/Account`, referenceId: 'acct', body: { Name: 'composite tour' } },
        { method: 'GET', url: `/services/data/v${v}/sobjects/Account/@{acct.id}`, referenceId: 'read' },
      ],
    });
    return res.compositeResponse.map((r) => ({ ref: r.referenceId, status: r.httpStatusCode, name: r.body?.Name ?? null }));
  });
  // Bulk API 2.0 ingest: create job, upload CSV, close, poll, fetch results.
  await step('bulk2', async () => {
    const res = await conn.bulk2.loadAndWaitForResults({
      object: 'Account',
      operation: 'insert',
      input: 'Name,Industry\nbulk tour 1,Energy\nbulk tour 2,Banking\n',
      pollInterval: 50,
      pollTimeout: 20000,
    });
    return {
      successful: res.successfulResults.map((r) => ({ created: r.sf__Created, name: r.Name, id: r.sf__Id })),
      failed: res.failedResults.length,
    };
  });
  await step('badField', () => conn.query('SELECT Nope FROM Account'));
  await step('badSyntax', () => conn.query('SELEC Id FROM Account'));
  await step('missingRecord', () => Account.retrieve('001000000000000AAA'));
  process.stdout.write(`${JSON.stringify({ steps })}\n`);
}

main().catch((err) => {
  process.stdout.write(`${JSON.stringify({ fatal: String(err?.stack ?? err) })}\n`);
  process.exit(1);
});
