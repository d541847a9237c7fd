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
