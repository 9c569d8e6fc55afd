// The Node `etcd3` client's coordination helpers (npm) against a Flotilla
// router: its Lock, its Election and its STM. Run by
// tests/compat/test_node_etcd3.py:
//
//     node recipes.js <host:port> lock <name> <clients> <rounds> <hold ms>
//     node recipes.js <host:port> election <name>
//     node recipes.js <host:port> stm-swap <key a> <key b>
//     node recipes.js <host:port> stm-increments <clients> <txns per client> <key>...
//     node recipes.js <host:port> header-covers <key a> <key b> <rounds>
//
// Prints one JSON line per step and "ok" at the end; exits 1 on the first
// failure (with the reason on stderr). Every wait has a deadline and every
// retry loop a bound on its count and its time.
'use strict';

const { Etcd3, EtcdLockFailedError, STMConflictError } = require('etcd3');
const { performance } = require('perf_hooks');

const [endpoint, command, ...args] = process.argv.slice(2);
if (!endpoint || !command) {
  console.error('usage: node recipes.js <host:port> lock|election|stm-swap|stm-increments ...');
  process.exit(2);
}

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

function step(name, data) {
  console.log(JSON.stringify({ step: name, ...data }));
}

function client() {
  return new Etcd3({ hosts: `http://${endpoint}`, dialTimeout: 5000 });
}

// The held work of a lock holder and a retry's pace: time passing on purpose, not a wait for something.
function pause(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// A promise, or an error after ms.
function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Resolves when cond() holds, polling every 50 ms; rejects after ms.
async function until(cond, ms, what) {
  const deadline = Date.now() + ms;
  for (let i = 0; Date.now() < deadline && i < 10000; i++) {
    if (await cond()) return;
    await pause(50);
  }
  throw new Error(`${what}: not within ${ms} ms`);
}

// -- lock: `client.lock(name).do(fn)` from several clients at once ------------------------------
//
// etcd3's Lock does not wait: acquire() is one Txn, If(create(name) = 0) Then(put name --lease=L),
// and when that fails it revokes its own lease L and throws EtcdLockFailedError; the caller
// retries. Each holder records when its held section began and ended (one process, one
// monotonic clock): the test checks that no two sections overlap.
async function lockCommand(name, clients, rounds, holdMs) {
  const spans = [];
  let refused = 0;
  const deadline = Date.now() + 60000;
  const cs = Array.from({ length: clients }, client);
  try {
    await Promise.all(
      cs.map(async (c, who) => {
        for (let round = 0; round < rounds; round++) {
          for (let attempt = 0; ; attempt++) {
            check(attempt < 5000 && Date.now() < deadline, `client ${who} took the lock ${round} times, then no more within 60 s`);
            try {
              await c.lock(name).ttl(30).do(async () => {
                const start = performance.now();
                await pause(holdMs);
                spans.push({ who, start, end: performance.now() });
              });
              break;
            } catch (err) {
              if (!(err instanceof EtcdLockFailedError)) throw err;
              refused += 1;
              await pause(5 + Math.random() * 20);
            }
          }
        }
      }),
    );
    const left = await cs[0].getAll().prefix(name).keys();
    check(left.length === 0, `the lock key is gone after the last release (left: ${left})`);
  } finally {
    cs.forEach((c) => c.close());
  }
  step('lock', { spans, refused });
}

// -- election: campaign, leader, observe, proclaim, resign hand-over ----------------------------
async function electionCommand(name) {
  const [a, b, o] = [client(), client(), client()];
  try {
    const ea = a.election(name, 30);
    const eb = b.election(name, 30);
    check((await o.election(name).leader()) === undefined, 'no leader before the first campaign');

    const alpha = ea.campaign('alpha');
    await within(alpha.wait(), 20000, 'alpha elected');
    check((await o.election(name).leader()) === 'alpha', 'leader() is alpha');
    step('elected', { leader: 'alpha' });

    const observer = await within(o.election(name).observe(), 20000, 'observe');
    const seen = [observer.leader()];
    observer.on('change', (v) => seen.push(v));
    check(seen[0] === 'alpha', `the observer starts at alpha (saw ${seen})`);

    const beta = eb.campaign('beta');
    let betaElected = false;
    beta.on('elected', () => {
      betaElected = true;
    });
    const betaWaits = beta.wait();
    // beta's key is queued behind alpha's: two keys under the election's prefix.
    await until(async () => (await o.getAll().prefix(`election/${name}/`).keys()).length === 2, 20000, 'beta queued');
    check(!betaElected, 'beta is not elected while alpha leads');
    check((await o.election(name).leader()) === 'alpha', 'alpha still leads with beta queued');

    await alpha.proclaim('alpha-2');
    await until(() => seen.includes('alpha-2'), 20000, `the observer sees alpha's proclamation (saw ${seen})`);

    await alpha.resign();
    await within(betaWaits, 20000, 'beta elected after alpha resigned');
    check(betaElected, 'beta elected');
    await until(() => seen[seen.length - 1] === 'beta', 20000, `the observer sees beta (saw ${JSON.stringify(seen)})`);
    check((await o.election(name).leader()) === 'beta', 'leader() is beta');
    check(JSON.stringify(seen) === JSON.stringify(['alpha', 'alpha-2', 'beta']), `the observer saw ${JSON.stringify(seen)}`);
    step('handed_over', { seen });

    await observer.cancel();
    await beta.resign();
    check((await o.election(name).leader()) === undefined, 'no leader after beta resigned');
  } finally {
    [a, b, o].forEach((c) => c.close());
  }
}

// -- STM: reads and writes of keys on different shards ----------------------------------------
//
// etcd3's STM at its Serializable isolation reads its first key as usual and every later key at
// that first read's header revision: a key written before the transaction began must be there.
// Its commit is one Txn comparing the mod revisions of what it read and putting what it wrote.
// (Not the package's default, SerializableSnapshot: etcd3 1.1.2 compares each written key's mod
// revision with the *oldest mod revision it read* + 1, not with its read revision as Go's STM
// does, so a transaction that writes two keys last written at different revisions conflicts for
// ever, against etcd itself too.)
const SERIALIZABLE = 1; // etcd3's Isolation.Serializable (a TypeScript const enum: not exported at run time)

// tx.get(key).string(), refusing null: every key these transactions read was written first.
async function present(tx, key) {
  const v = await tx.get(key).string();
  check(
    v !== null,
    `the STM read ${key} as absent, though it was written before the transaction began ` +
      "(its reads after the first are at the first read's header revision: that header must cover every earlier write)",
  );
  return v;
}
// Waits until a get of each key has a header revision >= rev: Flotilla's header may lag a write
// acknowledged on another shard until the key's shard closes that revision (DESIGN.md, Reads;
// header-covers below shows what that does to an STM), so the STM commands start once it has.
async function covered(c, keys, rev) {
  const t0 = Date.now();
  for (const k of keys) {
    await until(async () => BigInt((await c.get(k).exec()).header.revision) >= rev, 10000, `a get of ${k} covering revision ${rev}`);
  }
  return Date.now() - t0;
}

async function stmSwapCommand(ka, kb) {
  const c = client();
  try {
    await c.put(ka).value('A');
    const put = await c.put(kb).value('B');
    step('covered', { waited_ms: await covered(c, [ka, kb], BigInt(put.header.revision)) });
    const got = await within(
      c.stm({ isolation: SERIALIZABLE }).transact(async (tx) => {
        const [va, vb] = await Promise.all([present(tx, ka), present(tx, kb)]);
        await tx.put(ka).value(vb);
        await tx.put(kb).value(va);
        return [va, vb];
      }),
      20000,
      'the swap',
    );
    check(JSON.stringify(got) === '["A","B"]', `the transaction read ${got}`);
    const after = [await c.get(ka).string(), await c.get(kb).string()];
    check(JSON.stringify(after) === '["B","A"]', `after the swap: ${after}`);
    const [ra, rb] = await Promise.all([c.get(ka).exec(), c.get(kb).exec()]);
    check(ra.kvs[0].mod_revision === rb.kvs[0].mod_revision, `both writes at one revision (${ra.kvs[0].mod_revision}, ${rb.kvs[0].mod_revision})`);
    step('swap', { revision: ra.kvs[0].mod_revision });
  } finally {
    c.close();
  }
}

// Several STM clients, each running transactions that read two of the keys (on different
// shards) and increment both. Every transaction that committed counts once for each key it
// incremented: each key's final value is that count, and the sum twice the committed
// transactions. A conflict (STMConflictError after its retries) committed nothing.
async function stmIncrementsCommand(clients, perClient, keys) {
  check(keys.length >= 2, 'at least two keys');
  const cs = Array.from({ length: clients }, client);
  const counted = Object.fromEntries(keys.map((k) => [k, 0]));
  let committed = 0;
  let conflicts = 0;
  let attempts = 0; // runs of a transaction's body: each retry after a conflict runs it again
  try {
    const puts = await Promise.all(keys.map((k) => cs[0].put(k).value('0')));
    const last = puts.map((r) => BigInt(r.header.revision)).reduce((a, b) => (a > b ? a : b));
    step('covered', { waited_ms: await covered(cs[0], keys, last) });
    await within(
      Promise.all(
        cs.map(async (c, who) => {
          for (let i = 0; i < perClient; i++) {
            const x = keys[(who + i) % keys.length];
            const y = keys[(who + i + 1 + (i % (keys.length - 1))) % keys.length];
            try {
              await c.stm({ retries: 20, isolation: SERIALIZABLE }).transact(async (tx) => {
                attempts += 1;
                const [vx, vy] = (await Promise.all([present(tx, x), present(tx, y)])).map(Number);
                await tx.put(x).value(String(vx + 1));
                await tx.put(y).value(String(vy + 1));
              });
            } catch (err) {
              if (!(err instanceof STMConflictError)) throw err;
              conflicts += 1;
              continue;
            }
            committed += 1;
            counted[x] += 1;
            counted[y] += 1;
          }
        }),
      ),
      90000,
      'the increments',
    );
    const final = {};
    for (const k of keys) final[k] = await cs[0].get(k).number();
    const sum = Object.values(final).reduce((s, v) => s + v, 0);
    step('increments', { committed, conflicts, attempts, final, counted });
    check(committed > 0, 'some transactions committed');
    check(sum === 2 * committed, `the sum ${sum} is twice the ${committed} committed transactions`);
    for (const k of keys) check(final[k] === counted[k], `${k} = ${final[k]}, incremented by ${counted[k]} committed transactions`);
  } finally {
    cs.forEach((c) => c.close());
  }
}

// etcd's guarantee that the STM's later reads rely on: a get's header revision is at least the
// revision of every write acknowledged before the get began, whatever key it wrote. Each round
// puts b, then gets a (another shard), then gets b at a's header revision: b must be there.
async function headerCoversCommand(ka, kb, rounds) {
  const c = client();
  const stale = [];
  try {
    await c.put(ka).value('a');
    for (let i = 0; i < rounds; i++) {
      const put = await c.put(kb).value(`b${i}`);
      const got = await c.get(ka).exec();
      const atHeader = await c.get(kb).revision(got.header.revision).string();
      if (atHeader !== `b${i}`) {
        stale.push({ put_revision: put.header.revision, header_revision: got.header.revision, read: atHeader });
      }
    }
  } finally {
    c.close();
  }
  step('header_covers', { rounds, stale: stale.length });
  check(
    stale.length === 0,
    `${stale.length} of ${rounds} gets of ${ka} had a header revision below the put of ${kb} acknowledged before them; ` +
      `${kb} read at that revision: ${JSON.stringify(stale.slice(0, 3))}`,
  );
}

async function main() {
  switch (command) {
    case 'lock':
      return lockCommand(args[0], Number(args[1]), Number(args[2]), Number(args[3]));
    case 'election':
      return electionCommand(args[0]);
    case 'stm-swap':
      return stmSwapCommand(args[0], args[1]);
    case 'stm-increments':
      return stmIncrementsCommand(Number(args[0]), Number(args[1]), args.slice(2));
    case 'header-covers':
      return headerCoversCommand(args[0], args[1], Number(args[2]));
    default:
      throw new Error(`unknown command ${command}`);
  }
}

main().then(
  () => {
    console.log('ok');
    process.exit(0);
  },
  (err) => {
    console.error(err && err.stack ? err.stack : String(err));
    process.exit(1);
  },
);
