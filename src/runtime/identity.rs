//! The data directory remembers which node of which cluster wrote it (`identity`, written at
//! first start): a node started with another node id or cluster name refuses to start rather
//! than replay another node's log as its own.

use crate::config::Config;

const FILE_NAME: &str = "identity";

fn render(config: &Config) -> String {
    format!(
        "node_id = {}\ncluster = {:?}\n",
        config.node_id, config.cluster.name
    )
}

/// Checks the data directory's identity against the configuration, or records it.
pub fn check_or_write(config: &Config) -> Result<(), String> {
    let path = config.data_dir.join(FILE_NAME);
    let expected = render(config);
    match std::fs::read_to_string(&path) {
        Ok(found) if found == expected => Ok(()),
        Ok(found) => Err(format!(
            "data directory {} belongs to another node or cluster ({}), but this node is \
             configured as ({}); use that node's configuration or another data directory",
            config.data_dir.display(),
            found.trim().replace('\n', ", "),
            expected.trim().replace('\n', ", ")
        )),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            // Written once and synced, so a crash cannot leave a half identity behind.
            let temporary = config.data_dir.join("identity.new");
            std::fs::write(&temporary, &expected)
                .and_then(|_| std::fs::File::open(&temporary)?.sync_all())
                .and_then(|_| std::fs::rename(&temporary, &path))
                .and_then(|_| std::fs::File::open(&config.data_dir)?.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}
