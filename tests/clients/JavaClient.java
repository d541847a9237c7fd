// The official Java client (Apache kafka-clients 3.9) against a chronik broker, every setting
// at its default except where noted: admin calls, the default producer (idempotent, acks=all)
// with every codec, consumer groups (commit, resume from the commits, two members sharing
// partitions), transactions (commit and abort, read_committed), and group administration.
//
// Run with the source launcher: java -cp 'JARS/*' JavaClient.java BOOTSTRAP TOPIC REPLICATION
// Prints `name=value` lines of what it saw; exits non-zero on an exception.

import java.time.Duration;
import java.util.*;
import java.util.concurrent.*;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class JavaClient {
    static final int PARTITIONS = 3;
    static final String[] CODECS = {"none", "gzip", "snappy", "lz4", "zstd"};
    static final int PER_CODEC = 60;

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = args[1];
        short replication = Short.parseShort(args[2]);
        Map<String, Object> report = new LinkedHashMap<>();
        try (Admin admin = Admin.create(Map.of("bootstrap.servers", bootstrap))) {
            admin.createTopics(List.of(new NewTopic(topic, PARTITIONS, replication))).all().get();
            report.put("brokers", admin.describeCluster().nodes().get().size());
            ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, topic);
            Config config = admin.describeConfigs(List.of(resource)).all().get().get(resource);
            report.put("cleanup_policy", config.get("cleanup.policy").value());
            admin.incrementalAlterConfigs(Map.of(resource, List.of(new AlterConfigOp(
                new ConfigEntry("retention.ms", "86400000"), AlterConfigOp.OpType.SET)))).all().get();
            config = admin.describeConfigs(List.of(resource)).all().get().get(resource);
            report.put("retention_ms", config.get("retention.ms").value());

            report.put("produced", produceWithEveryCodec(bootstrap, topic));
            int total = CODECS.length * PER_CODEC;
            String group = topic + "-readers";
            report.put("group_first_read", readInGroup(bootstrap, topic, group, total));
            produce(bootstrap, topic, "more", 10, "none");
            report.put("group_resumed", readInGroup(bootstrap, topic, group, 10));
            Map<TopicPartition, OffsetAndMetadata> offsets =
                admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
            report.put("group_committed_sum",
                offsets.values().stream().mapToLong(OffsetAndMetadata::offset).sum());
            report.put("pair_members", twoMembers(bootstrap, topic, topic + "-pair", total + 10, Map.of()));
            // KIP-848: the coordinator assigns (group.protocol=consumer, opt-in in 3.9).
            report.put("consumer_protocol_members", twoMembers(bootstrap, topic, topic + "-kip848",
                total + 10, Map.of("group.protocol", "consumer")));
            report.put("group_state", admin.describeConsumerGroups(List.of(group)).all().get()
                .get(group).state());
            report.put("groups_listed", admin.listConsumerGroups().all().get().stream()
                .anyMatch(g -> g.groupId().equals(group)));
            admin.deleteConsumerGroups(List.of(group)).all().get();
            report.put("group_deleted", !admin.listConsumerGroups().all().get().stream()
                .anyMatch(g -> g.groupId().equals(group)));

            report.put("read_committed", transactions(bootstrap, topic + "-tx"));
            TopicPartition first = new TopicPartition(topic, 0);
            report.put("low_watermark", admin.deleteRecords(Map.of(first, RecordsToDelete.beforeOffset(5)))
                .lowWatermarks().get(first).get().lowWatermark());
            admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(PARTITIONS + 1))).all().get();
            report.put("partitions_after_growth", partitionsOnceGrown(admin, topic, PARTITIONS + 1));
        }
        report.forEach((k, v) -> System.out.println(k + "=" + v));
    }

    /** The topic's partition count, once it reaches {@code wanted} or after 10 s. As with Kafka,
     *  brokers other than the one that answered CreatePartitions may learn of it a moment later,
     *  and the admin client asks any broker. */
    static int partitionsOnceGrown(Admin admin, String topic, int wanted) throws Exception {
        long deadline = System.currentTimeMillis() + 10_000;
        while (true) {
            int count = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic).partitions().size();
            if (count >= wanted || System.currentTimeMillis() > deadline) {
                return count;
            }
            Thread.sleep(50);
        }
    }

    static Properties producerProps(String bootstrap, String codec) {
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        props.put("key.serializer", StringSerializer.class.getName());
        props.put("value.serializer", StringSerializer.class.getName());
        props.put("compression.type", codec);
        return props;
    }

    static int produce(String bootstrap, String topic, String tag, int count, String codec) throws Exception {
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(producerProps(bootstrap, codec))) {
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            for (int i = 0; i < count; i++) {
                sent.add(producer.send(new ProducerRecord<>(topic, tag + "-" + i, tag + "-" + i)));
            }
            for (Future<RecordMetadata> f : sent) f.get();
        }
        return count;
    }

    static int produceWithEveryCodec(String bootstrap, String topic) throws Exception {
        int total = 0;
        for (String codec : CODECS) total += produce(bootstrap, topic, codec, PER_CODEC, codec);
        return total;
    }

    static KafkaConsumer<String, String> consumer(String bootstrap, String group, Map<String, String> extra) {
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        props.put("group.id", group);
        props.put("key.deserializer", StringDeserializer.class.getName());
        props.put("value.deserializer", StringDeserializer.class.getName());
        // The one non-default: a new group starts from the beginning, not the end.
        props.put("auto.offset.reset", "earliest");
        props.putAll(extra);
        return new KafkaConsumer<>(props);
    }

    /** Reads `count` records in the group, commits them and leaves. */
    static int readInGroup(String bootstrap, String topic, String group, int count) {
        Set<String> seen = new HashSet<>();
        try (KafkaConsumer<String, String> c = consumer(bootstrap, group, Map.of())) {
            c.subscribe(List.of(topic));
            long deadline = System.currentTimeMillis() + 60_000;
            while (seen.size() < count && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) seen.add(r.value());
            }
            // Nothing more than expected arrives.
            for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(500))) seen.add(r.value());
            c.commitSync();
        }
        return seen.size();
    }

    /** Two members of one group split the partitions; returns how many were assigned some. */
    static int twoMembers(String bootstrap, String topic, String group, int total,
            Map<String, String> extra) throws Exception {
        ConcurrentHashMap<String, Boolean> seen = new ConcurrentHashMap<>();
        AtomicBoolean stop = new AtomicBoolean();
        ConcurrentHashMap<Integer, Integer> assigned = new ConcurrentHashMap<>();
        ExecutorService pool = Executors.newFixedThreadPool(2);
        List<Future<?>> members = new ArrayList<>();
        for (int m = 0; m < 2; m++) {
            final int member = m;
            members.add(pool.submit(() -> {
                try (KafkaConsumer<String, String> c = consumer(bootstrap, group, extra)) {
                    c.subscribe(List.of(topic));
                    while (!stop.get()) {
                        for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) seen.put(r.value(), true);
                        assigned.put(member, c.assignment().size());
                    }
                }
                return null;
            }));
        }
        long deadline = System.currentTimeMillis() + 90_000;
        while (System.currentTimeMillis() < deadline
            && !(seen.size() >= total && assigned.size() == 2 && assigned.values().stream().allMatch(n -> n > 0))) {
            Thread.sleep(100);
        }
        stop.set(true);
        for (Future<?> f : members) f.get();
        pool.shutdown();
        return (int) assigned.values().stream().filter(n -> n > 0).count();
    }

    /** One committed and one aborted transaction; a read_committed consumer sees the first. */
    static int transactions(String bootstrap, String topic) throws Exception {
        Properties props = producerProps(bootstrap, "none");
        props.put("transactional.id", topic + "-producer");
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
            producer.initTransactions();
            producer.beginTransaction();
            for (int i = 0; i < 20; i++) producer.send(new ProducerRecord<>(topic, "commit-" + i));
            producer.commitTransaction();
            producer.beginTransaction();
            for (int i = 0; i < 20; i++) producer.send(new ProducerRecord<>(topic, "abort-" + i));
            producer.flush();
            producer.abortTransaction();
        }
        Set<String> seen = new HashSet<>();
        try (KafkaConsumer<String, String> c = consumer(bootstrap, topic + "-reader",
                Map.of("isolation.level", "read_committed"))) {
            c.subscribe(List.of(topic));
            long deadline = System.currentTimeMillis() + 30_000;
            while (seen.size() < 20 && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) seen.add(r.value());
            }
            for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(1000))) seen.add(r.value());
        }
        return seen.stream().allMatch(v -> v.startsWith("commit-")) ? seen.size() : -seen.size();
    }
}
