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
  await producer.disconnect();

  const offsets = await admin.fetchTopicOffsets(topic);
  const fromStart = await admin.fetchTopicOffsetsByTimestamp(topic, startedAt - 60_000);
  await admin.disconnect();

  const report = {
    created,
    doomed_deleted: !listed.includes(doomed),
    partitions: metadata.topics[0].partitions.length,
    high_watermark_sum: offsets.reduce((sum, o) => sum + Number(o.high), 0),
    low_watermarks: offsets.map((o) => o.low).join(','),
    by_timestamp_from_start: fromStart.map((o) => o.offset).join(','),
  };
  for (const [name, value] of Object.entries(report)) {
    console.log(`${name}=${value}`);
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
