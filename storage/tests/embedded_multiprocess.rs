//! Two real processes share one embedded file and commit to the same room,
//! each as if it owned it (the split-owner case of a local cluster). The
//! parent re-runs this test binary as the second process.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parley_storage::embedded::EmbeddedStore;
use parley_storage::{HistoryRange, NewMessage, RoomRecord, StorageError, Store};

const DIR_VAR: &str = "PARLEY_STORAGE_TEST_CHILD_DIR";
const START_VAR: &str = "PARLEY_STORAGE_TEST_START_MS";
const ROOM: &str = "r-multiprocess";
const BATCHES: usize = 100;
const BATCH: usize = 3;

fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    u64::try_from(since.as_millis()).expect("ms fit u64")
}

/// Sleeps until the agreed start time, so both processes commit at once.
async fn wait_until(start_ms: u64) {
    let now = now_ms();
    if start_ms > now {
        tokio::time::sleep(Duration::from_millis(start_ms - now)).await;
    }
}

/// Commits `BATCHES` batches tagged `tag`, each on the head it just read,
/// retrying on `HeadMoved`/`Unavailable`; returns how many commits lost.
async fn committer(store: &EmbeddedStore, tag: &str) -> usize {
    let mut lost = 0;
    for b in 0..BATCHES {
        let batch: Vec<NewMessage> = (0..BATCH)
            .map(|i| NewMessage {
                message_id: format!("{tag}-m-{b}-{i}"),
                sender_id: tag.into(),
                sender_name: tag.into(),
                body: format!("{tag} {b}.{i}"),
                sent_at: 0,
                client_msg_id: format!("{tag}-{b}-{i}"),
            })
            .collect();
        loop {
            let head = store
                .room(ROOM)
                .await
                .expect("room read")
                .expect("room exists")
                .last_seq;
            match store.commit_messages(ROOM, head, &batch).await {
                Ok(out) => {
                    assert!(
                        out.iter()
                            .all(|o| matches!(o, parley_storage::CommitOutcome::Committed(_))),
                        "{tag}: a fresh batch must commit, got {out:?}"
                    );
                    break;
                }
                Err(StorageError::HeadMoved { .. }) => lost += 1,
                Err(StorageError::Unavailable(_)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                Err(e) => panic!("{tag}: commit failed: {e}"),
            }
        }
    }
    lost
}

/// The second process (does nothing unless started by the parent test).
#[tokio::test]
async fn child_committer() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    let start: u64 = std::env::var(START_VAR)
        .expect("start time")
        .parse()
        .expect("start time is a number");
    let store = EmbeddedStore::open(Path::new(&dir)).expect("child open");
    wait_until(start).await;
    let lost = committer(&store, "child").await;
    eprintln!("child lost {lost} races");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_commit_to_one_room_without_overwrites() {
    if std::env::var_os(DIR_VAR).is_some() {
        return; // we are the child; only child_committer runs
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("parent open");
    let room = RoomRecord {
        room_id: ROOM.into(),
        kind: "group".into(),
        name: "shared".into(),
        created_at: 0,
        last_seq: 0,
    };
    store.create_room(&room, &[]).await.expect("create_room");

    let exe = std::env::current_exe().expect("test binary path");
    // Both start committing at the same moment, well after the child is up.
    let start = now_ms() + 1_000;
    let child = tokio::process::Command::new(exe)
        .args([
            "child_committer",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_VAR, dir.path())
        .env(START_VAR, start.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn child process");

    wait_until(start).await;
    let lost = committer(&store, "parent").await;
    let out = child.wait_with_output().await.expect("wait for child");
    assert!(
        out.status.success(),
        "child process failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("parent lost {lost} races");

    let total = (2 * BATCHES * BATCH) as u64;
    let mut history = Vec::new();
    loop {
        let after_seq = history
            .last()
            .map_or(0, |m: &parley_storage::StoredMessage| m.seq);
        let page = store
            .messages(
                ROOM,
                HistoryRange::After {
                    after_seq,
                    before_seq: None,
                    limit: 200,
                },
            )
            .await
            .expect("history");
        if page.is_empty() {
            break;
        }
        history.extend(page);
    }
    let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "gapless, no extra seqs"
    );
    let cids: HashSet<&str> = history.iter().map(|m| m.client_msg_id.as_str()).collect();
    assert_eq!(cids.len() as u64, total, "every message exactly once");
    for tag in ["parent", "child"] {
        let order: Vec<&str> = history
            .iter()
            .filter(|m| m.sender_id == tag)
            .map(|m| m.client_msg_id.as_str())
            .collect();
        let want: Vec<String> = (0..BATCHES)
            .flat_map(|b| (0..BATCH).map(move |i| format!("{tag}-{b}-{i}")))
            .collect();
        assert_eq!(order, want, "{tag}'s messages in its commit order");
    }
    let head = store
        .room(ROOM)
        .await
        .expect("room")
        .expect("room")
        .last_seq;
    assert_eq!(head, total, "head matches history");
}
