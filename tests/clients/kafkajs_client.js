// kafkajs, a Kafka client written from scratch in JavaScript (its own protocol encoders,
// CRC and record batches), against a chronik broker: admin calls, an idempotent producer
// with and without gzip, offsets by time. kafkajs consumes only through consumer groups,
// so the Rust side (tests/js_clients.rs) reads the data back with librdkafka.
//
// Usage: node kafkajs_client.js <bootstrap,...> <topic> [replication factor, default 1].
// Prints `name=value` lines of what it saw.

const { Kafka, CompressionTypes, logLevel } = require('kafkajs');

const [bootstrap, topic, replication = '1'] = process.argv.slice(2);
const REPLICATION = Number(replication);
const PARTITIONS = 3;
const BATCHES = 10;
const PER_BATCH = 20;

async function main() {
  const kafka = new Kafka({
    clientId: 'chronik-kafkajs-test',
    brokers: bootstrap.split(','),
    logLevel: logLevel.WARN,
    retry: { retries: 5 },
  });
  const admin = kafka.admin();
  await admin.connect();
  const created = await admin.createTopics({
    topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: REPLICATION }],
    waitForLeaders: true,
  });
  const doomed = `${topic}-doomed`;
  await admin.createTopics({ topics: [{ topic: doomed, numPartitions: 1 }], waitForLeaders: true });
  await admin.deleteTopics({ topics: [doomed] });
  // Metadata reaches the other brokers of a cluster a moment after the deletion is
  // committed (as in Kafka): ask until the deleted topic is gone from the answer, bounded.
  let listed = await admin.listTopics();
  for (let tries = 0; tries < 50 && listed.includes(doomed); tries++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    listed = await admin.listTopics();
  }
  const metadata = await admin.fetchTopicMetadata({ topics: [topic] });

  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const startedAt = Date.now();
  for (let b = 0; b < BATCHES; b++) {
    const messages = [];
    for (let i = 0; i < PER_BATCH; i++) {
      const n = b * PER_BATCH + i;
      messages.push({
        key: `key-${n}`,
        value: `kafkajs-${n}`,
        partition: n % PARTITIONS,
        headers: { source: 'kafkajs', n: String(n) },
      });
    }
    await producer.send({
      topic,
      acks: -1,
      compression: b % 2 === 0 ? CompressionTypes.None : CompressionTypes.GZIP,
      messages,
    });
  }

  const offsets = await admin.fetchTopicOffsets(topic);
  const fromStart = await admin.fetchTopicOffsetsByTimestamp(topic, startedAt - 60_000);
  const groups = await consumeInGroups(kafka, admin, producer);
  const transactions = await transactional(kafka);
  await admin.disconnect();

  const report = {
    created,
    doomed_deleted: !listed.includes(doomed),
    partitions: metadata.topics[0].partitions.length,
    high_watermark_sum: offsets.reduce((sum, o) => sum + Number(o.high), 0),
    low_watermarks: offsets.map((o) => o.low).join(','),
    by_timestamp_from_start: fromStart.map((o) => o.offset).join(','),
    ...groups,
    ...transactions,
  };
  for (const [name, value] of Object.entries(report)) {
    console.log(`${name}=${value}`);
  }
}

// kafkajs's transactional producer: one committed and one aborted transaction; a
// read_committed consumer (kafkajs's default isolation) sees only the first.
async function transactional(kafka) {
  const txTopic = `${topic}-tx`;
  const producer = kafka.producer({
    transactionalId: `${topic}-tx-producer`, idempotent: true, maxInFlightRequests: 1,
  });
  await producer.connect();
  for (const outcome of ['commit', 'abort']) {
    const transaction = await producer.transaction();
    const messages = [];
    for (let i = 0; i < 10; i++) messages.push({ value: `${outcome}-${i}`, partition: 0 });
    await transaction.send({ topic: txTopic, messages });
    if (outcome === 'commit') await transaction.commit(); else await transaction.abort();
  }
  await producer.disconnect();
  const seen = [];
  const reader = kafka.consumer({ groupId: `${txTopic}-reader` });
  await reader.connect();
  await reader.subscribe({ topics: [txTopic], fromBeginning: true });
  await reader.run({ eachMessage: async ({ message }) => { seen.push(message.value.toString()); } });
  await waitUntil('the committed transaction', () => seen.length >= 10);
  await sleep(1000);
  await reader.disconnect();
  return {
    tx_read: seen.length,
    tx_only_committed: seen.every((v) => v.startsWith('commit-')),
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitUntil(what, condition, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

// Consumer groups with kafkajs defaults: one member reads everything and commits on
// disconnect; a new member of the group resumes after the commits; two members of another
// group split the partitions between them.
async function consumeInGroups(kafka, admin, producer) {
  const group = `${topic}-readers`;
  const seen = [];
  const first = kafka.consumer({ groupId: group });
  await first.connect();
  await first.subscribe({ topics: [topic], fromBeginning: true });
  await first.run({ eachMessage: async ({ message }) => { seen.push(message.value.toString()); } });
  await waitUntil('the first member to read everything', () => seen.length >= BATCHES * PER_BATCH);
  await first.disconnect();
  const committed = await admin.fetchOffsets({ groupId: group, topics: [topic] });
  const committedSum = committed[0].partitions.reduce((sum, p) => sum + Number(p.offset), 0);

  const more = [];
  for (let n = BATCHES * PER_BATCH; n < BATCHES * PER_BATCH + 30; n++) {
    more.push({ key: `key-${n}`, value: `kafkajs-${n}`, partition: n % PARTITIONS });
  }
  await producer.send({ topic, acks: -1, messages: more });
  await producer.disconnect();
  const resumed = [];
  const second = kafka.consumer({ groupId: group });
  await second.connect();
  await second.subscribe({ topics: [topic], fromBeginning: true });
  await second.run({ eachMessage: async ({ message }) => { resumed.push(message.value.toString()); } });
  await waitUntil('the second member to read the new messages', () => resumed.length >= 30);
  await sleep(500);
  await second.disconnect();

  const pair = `${topic}-pair`;
  const pairSeen = new Set();
  const members = [kafka.consumer({ groupId: pair }), kafka.consumer({ groupId: pair })];
  for (const member of members) {
    await member.connect();
    await member.subscribe({ topics: [topic], fromBeginning: true });
    await member.run({ eachMessage: async ({ message }) => { pairSeen.add(message.value.toString()); } });
  }
  let described;
  await waitUntil('two members sharing the partitions', async () => {
    described = (await admin.describeGroups([pair])).groups[0];
    return described.state === 'Stable' && described.members.length === 2;
  });
  await waitUntil('the pair to read everything', () => pairSeen.size >= BATCHES * PER_BATCH + 30);
  for (const member of members) await member.disconnect();

  return {
    group_first_read: seen.length,
    group_committed_sum: committedSum,
    group_resumed: resumed.length,
    group_resumed_first: resumed.map((v) => Number(v.split('-')[1])).sort((a, b) => a - b)[0],
    group_pair_members: described.members.length,
    group_pair_read: pairSeen.size,
  };
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
