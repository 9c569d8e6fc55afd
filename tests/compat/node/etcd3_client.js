// The Node `etcd3` client (npm) against a Flotilla router: reads and watches
// from revisions it received from Flotilla. Run by tests/compat/test_node_etcd3.py:
//
//     node etcd3_client.js <host:port> <key prefix>
//
// Prints one JSON line per step and "ok" at the end; exits 1 on the first
// failure (with the reason on stderr). Revisions are int64 strings in this
// client: arithmetic here is BigInt, never Number.
'use strict';

const { Etcd3 } = require('etcd3');

const [endpoint, prefix] = process.argv.slice(2);
if (!endpoint || !prefix) {
  console.error('usage: node etcd3_client.js <host:port> <key prefix>');
  process.exit(2);
}

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

function step(name, data) {
  console.log(JSON.stringify({ step: name, ...data }));
}

// The next `put` event of a watcher, within a deadline.
function nextPut(watcher, ms) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no put event within ${ms} ms`)), ms);
    watcher.once('put', (kv) => {
      clearTimeout(timer);
      resolve(kv);
    });
    watcher.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

async function main() {
  const client = new Etcd3({ hosts: `http://${endpoint}`, dialTimeout: 5000 });
  try {
    const a = `${prefix}a`;
    const b = `${prefix}b`;

    // put, then get: the header revision covers the put.
    const put1 = await client.put(a).value('v1').exec();
    const r1 = BigInt(put1.header.revision);
    check(r1 > 0n, `put revision ${put1.header.revision} > 0`);
    const got = await client.get(a).exec();
    const h = BigInt(got.header.revision);
    check(got.kvs.length === 1 && got.kvs[0].value.toString() === 'v1', 'get returns v1');
    check(BigInt(got.kvs[0].mod_revision) === r1, 'mod_revision is the put revision');
    check(h >= r1, `get header revision ${h} >= put revision ${r1}`);
    step('get', { put_revision: put1.header.revision, header_revision: got.header.revision });

    // watch from header.revision + 1: the next put, and nothing before it.
    const watcher = await client.watch().key(a).startRevision((h + 1n).toString()).create();
    const event = nextPut(watcher, 20000);
    const put2 = await client.put(a).value('v2').exec();
    const kv = await event;
    check(kv.value.toString() === 'v2', `watch saw ${kv.value.toString()}, want v2`);
    check(kv.mod_revision === put2.header.revision, `event revision ${kv.mod_revision} = put revision ${put2.header.revision}`);
    check(BigInt(kv.mod_revision) > h, 'event after the read');
    await watcher.cancel();
    step('watch', { from: (h + 1n).toString(), event_revision: kv.mod_revision });

    // get at a past revision: the value as it was.
    const past = await client.get(a).revision(put1.header.revision).string();
    check(past === 'v1', `get at revision ${put1.header.revision} = ${past}, want v1`);
    step('get_at_revision', { revision: put1.header.revision, value: past });

    // a prefix (all shards): header revision, then a prefix watch from it + 1 sees a put to another key.
    const all = await client.getAll().prefix(prefix).exec();
    const ph = BigInt(all.header.revision);
    check(ph > 0n, `prefix get header revision ${ph} > 0`);
    const keys = all.kvs.map((x) => x.key.toString());
    check(JSON.stringify(keys) === JSON.stringify([a]), `prefix get keys ${keys}`);
    const pw = await client.watch().prefix(prefix).startRevision((ph + 1n).toString()).create();
    const pevent = nextPut(pw, 20000);
    const put3 = await client.put(b).value('w').exec();
    const pkv = await pevent;
    check(pkv.key.toString() === b && pkv.mod_revision === put3.header.revision, `prefix watch saw ${pkv.key.toString()}@${pkv.mod_revision}`);
    await pw.cancel();
    step('prefix_watch', { from: (ph + 1n).toString(), event_revision: pkv.mod_revision });

    // a watch with no start revision: waits for the next put.
    const nw = await client.watch().key(b).create();
    const nevent = nextPut(nw, 20000);
    await client.put(b).value('w2').exec();
    check((await nevent).value.toString() === 'w2', 'watch from now saw w2');
    await nw.cancel();
    step('watch_from_now', {});
    console.log('ok');
  } finally {
    client.close();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err && err.stack ? err.stack : String(err));
    process.exit(1);
  },
);
