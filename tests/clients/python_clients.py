"""Produce and consume with the two common Python clients, each with its defaults (kafka-python
3.x enables idempotence), consuming back by assigning partitions, then in a consumer group: a
member reads half and commits, a new member of the group resumes exactly there. Exits
non-zero on any mismatch. Usage: python_clients.py BOOTSTRAP"""
import sys

from confluent_kafka import Consumer, Producer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaTopicPartition

bootstrap = sys.argv[1]
COUNT = 200


def check(name, got, want):
    if got != want:
        print(f"{name}: got {len(got)} values, want {len(want)}; first got {got[:3]}", file=sys.stderr)
        sys.exit(1)
    print(f"{name}: {len(got)} messages round-tripped")


want = [f"ck-{i}".encode() for i in range(COUNT)]
producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
for value in want:
    producer.produce("py-confluent", value=value, key=b"k", partition=0)
if producer.flush(30) != 0:
    sys.exit("confluent-kafka: messages left unflushed")
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
consumer.assign([TopicPartition("py-confluent", 0, 0)])
got = []
while len(got) < COUNT:
    message = consumer.poll(10)
    if message is None:
        break
    if message.error():
        sys.exit(f"confluent-kafka consume error: {message.error()}")
    got.append(message.value())
consumer.close()
check("confluent-kafka", got, want)


def confluent_group_read(count):
    """Reads `count` messages as a member of group ck-group and commits exactly them."""
    member = Consumer({"bootstrap.servers": bootstrap, "group.id": "ck-group",
                       "auto.offset.reset": "earliest", "enable.auto.commit": False})
    member.subscribe(["py-confluent"])
    read = []
    while len(read) < count:
        message = member.poll(30)
        if message is None:
            sys.exit(f"confluent-kafka group: nothing more after {len(read)}")
        if message.error():
            sys.exit(f"confluent-kafka group error: {message.error()}")
        read.append(message.value())
        if len(read) == count:
            member.commit(message=message, asynchronous=False)
    member.close()
    return read


got = confluent_group_read(COUNT // 2)
got += confluent_group_read(COUNT // 2)
check("confluent-kafka group", got, want)

want = [f"kp-{i}".encode() for i in range(COUNT)]
producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
futures = [producer.send("py-kafka-python", value, partition=0) for value in want]
offsets = [f.get(timeout=30).offset for f in futures]
producer.close()
if offsets != list(range(COUNT)):
    sys.exit(f"kafka-python: acknowledged offsets {offsets[:5]}... are not 0..{COUNT}")
consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=10000)
partition = KafkaTopicPartition("py-kafka-python", 0)
consumer.assign([partition])
consumer.seek_to_beginning()
got = []
for message in consumer:
    got.append(message.value)
    if len(got) == COUNT:
        break
consumer.close()
check("kafka-python", got, want)


def kafka_python_group_read(count):
    """Reads `count` messages as a member of group kp-group and commits exactly them."""
    member = KafkaConsumer("py-kafka-python", bootstrap_servers=bootstrap, group_id="kp-group",
                           auto_offset_reset="earliest", enable_auto_commit=False,
                           consumer_timeout_ms=30000)
    read = []
    for message in member:
        read.append(message.value)
        if len(read) == count:
            break
    member.commit()
    member.close()
    return read


got = kafka_python_group_read(COUNT // 2)
got += kafka_python_group_read(COUNT // 2)
check("kafka-python group", got, want)


async def aiokafka_round_trip():
    """aiokafka (asyncio, its own protocol code): produce with every codec it has, then a group
    member reads half and commits, and a new member resumes exactly there."""
    import asyncio
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = "py-aiokafka"
    sent = []
    for codec in [None, "gzip", "snappy", "lz4", "zstd"]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=codec,
                                    enable_idempotence=True)
        await producer.start()
        try:
            for i in range(COUNT // 5):
                value = f"aio-{codec}-{i}".encode()
                await producer.send_and_wait(topic, value, partition=0)
                sent.append(value)
        finally:
            await producer.stop()

    async def member(count):
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="aio-group",
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        read = []
        try:
            while len(read) < count:
                batches = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
                for records in batches.values():
                    for record in records:
                        if len(read) < count:
                            read.append(record.value)
                            last = record
            from aiokafka import TopicPartition as AioTopicPartition
            from aiokafka.structs import OffsetAndMetadata
            await consumer.commit({AioTopicPartition(topic, 0): OffsetAndMetadata(last.offset + 1, "")})
        finally:
            await consumer.stop()
        return read

    got = await member(COUNT // 2)
    got += await member(COUNT // 2)
    return sent, got


try:
    import aiokafka  # noqa: F401
except ImportError:
    sys.exit("aiokafka is missing (tools/test.sh installs it)")
import asyncio

want, got = asyncio.run(aiokafka_round_trip())
check("aiokafka group", got, want)


def confluent_transactions():
    """confluent-kafka's transactional producer: one committed and one aborted transaction;
    a read_committed consumer sees only the first."""
    topic = "py-confluent-tx"
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "py-confluent-tx"})
    producer.init_transactions(30)
    for outcome in ["commit", "abort"]:
        producer.begin_transaction()
        for i in range(COUNT // 10):
            producer.produce(topic, value=f"{outcome}-{i}".encode(), partition=0)
        producer.flush(30)
        if outcome == "commit":
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "py-tx-reader",
                       "isolation.level": "read_committed", "enable.auto.commit": False})
    reader.assign([TopicPartition(topic, 0, 0)])
    read = []
    while True:
        message = reader.poll(3)
        if message is None:
            break
        if message.error():
            sys.exit(f"confluent-kafka read_committed error: {message.error()}")
        read.append(message.value())
    reader.close()
    return [f"commit-{i}".encode() for i in range(COUNT // 10)], read


want, got = confluent_transactions()
check("confluent-kafka transactions", got, want)
