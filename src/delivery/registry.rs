//! The run registry: a run registers itself on the campaign before it claims anything (runs on
//! this host whose process is gone, and runs whose heartbeat stopped, are forgotten first), so
//! that on SQLite only one run sends a campaign at a time and on PostgreSQL runs share it.

use chrono::Utc;

use super::Incomplete;
use crate::store::{Campaign, Store};

/// Register this run on the campaign. Runs on this host whose process is gone (killed) and runs
/// whose heartbeat stopped are forgotten first, so their in-flight sends are retaken at once. On
/// SQLite only one run may send a campaign at a time; on PostgreSQL runs share the work.
pub(super) async fn join_run(
    store: &Store,
    campaign: &Campaign,
    worker_id: &str,
    lease_seconds: u64,
) -> anyhow::Result<()> {
    let host = hostname();
    for w in store.workers(campaign).await? {
        if w.host == host && !process_alive(w.pid) {
            tracing::info!(run = %w.id, "forgetting a run whose process is gone");
            store.remove_worker(&w.id).await?;
        }
    }
    let alive_after = Utc::now() - chrono::Duration::seconds(lease_seconds as i64);
    store.remove_stale_workers(alive_after).await?;
    let exclusive = store.backend() == crate::store::Backend::Sqlite;
    let pid = i64::from(std::process::id());
    if store
        .register_worker(worker_id, campaign, &host, pid, exclusive, alive_after)
        .await?
    {
        return Ok(());
    }
    let others = store.workers(campaign).await?;
    let who = others
        .iter()
        .map(|w| format!("pid {} on {} (started {})", w.pid, w.host, w.started_at))
        .collect::<Vec<_>>()
        .join(", ");
    Err(Incomplete(format!(
        "another notify run is already sending {}: {who}. Wait for it to finish, or stop it and run the command again; nothing was sent by this run",
        campaign.key
    ))
    .into())
}

/// Is process `pid` on this machine still running? Where that cannot be told, assume it is
/// (the heartbeat then decides).
fn process_alive(pid: i64) -> bool {
    let proc_root = std::path::Path::new("/proc");
    if !proc_root.join("self").exists() {
        return true;
    }
    proc_root.join(pid.to_string()).exists()
}

pub(super) fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
