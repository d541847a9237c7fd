//! DescribeLogDirs: one log directory (the data directory: every partition of a shard lives
//! in its write-ahead log there) with the bytes each partition holds on this node, and the
//! file system's size and free space (v4).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::runtime::context::ShardContext;
use crate::runtime::frame::{ShardReply, ShardRequest};

pub const VERSIONS: RangeInclusive<i16> = 1..=4;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    version: i16,
    request: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let view = ctx.metadata();
    let me = ctx.config.node_id;
    // (topic, partition, shard, group) of every wanted partition with a replica here.
    let mut wanted = Vec::new();
    let requested: Vec<(String, Option<Vec<i32>>)> = match request.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.topic.to_string(), Some(t.partitions)))
            .collect(),
        None => view
            .topics
            .keys()
            .map(|name| (name.clone(), None))
            .collect(),
    };
    for (name, partitions) in requested {
        let Some(topic) = view.topic(&name) else {
            continue;
        };
        for (index, partition) in topic.partitions.iter().enumerate() {
            let index = index as i32;
            let asked = partitions.as_ref().is_none_or(|p| p.contains(&index));
            let here = partition.replicas.is_empty() || partition.replicas.contains(&me);
            if asked && here {
                wanted.push((
                    name.clone(),
                    index,
                    partition.shard as usize,
                    partition.group_id,
                ));
            }
        }
    }
    let sizes = partition_sizes(ctx, &wanted).await;
    let mut topics: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for (name, index, _, group) in wanted {
        topics.entry(name).or_default().push(
            DescribeLogDirsPartition::default()
                .with_partition_index(index)
                .with_partition_size(sizes.get(&group).copied().unwrap_or(0) as i64),
        );
    }
    let topics = topics
        .into_iter()
        .map(|(name, partitions)| {
            DescribeLogDirsTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(partitions)
        })
        .collect();
    let mut result = DescribeLogDirsResult::default()
        .with_log_dir(StrBytes::from_string(
            ctx.config.data_dir.display().to_string(),
        ))
        .with_topics(topics);
    if version >= 4 {
        let (total, usable) = file_system_space(&ctx.config.data_dir).unwrap_or((-1, -1));
        result = result.with_total_bytes(total).with_usable_bytes(usable);
    }
    DescribeLogDirsResponse::default().with_results(vec![result])
}

/// Bytes held here by each wanted (topic, partition, shard, group), by group.
async fn partition_sizes(
    ctx: &Rc<ShardContext>,
    wanted: &[(String, i32, usize, u64)],
) -> BTreeMap<u64, u64> {
    let mut by_shard: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for (_, _, shard, group) in wanted {
        by_shard.entry(*shard).or_default().push(*group);
    }
    let mut sizes = BTreeMap::new();
    for (shard, group_ids) in by_shard {
        let request = ShardRequest::PartitionSizes {
            group_ids: group_ids.clone(),
        };
        if let Ok(ShardReply::Sizes(found)) = ctx.call(shard, request).await {
            for (group, size) in group_ids.into_iter().zip(found) {
                if let Some(size) = size {
                    sizes.insert(group, size);
                }
            }
        }
    }
    sizes
}

/// (size, bytes available) of the file system holding `dir`.
fn file_system_space(dir: &std::path::Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a statvfs the call fills in.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return None;
    }
    let block = stats.f_frsize as i64;
    Some((stats.f_blocks as i64 * block, stats.f_bavail as i64 * block))
}
