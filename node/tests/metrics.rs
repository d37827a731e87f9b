//! `/metrics` after real traffic: the documented metrics move.

mod common;

use std::collections::HashMap;

use common::*;

/// Reads `/metrics` into name{labels} -> value.
async fn scrape(node: &Node) -> HashMap<String, f64> {
    let text = reqwest::get(node.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn get(m: &HashMap<String, f64>, name: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.split('{').next() == Some(name))
        .map(|(_, v)| *v)
        .sum()
}

#[tokio::test]
async fn metrics_move_with_traffic() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let before = scrape(&node).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let room = group(&node, &alice, "metrics", &[&bob]).await;
    let room_id = room["room_id"].as_str().unwrap();
    let mut a = Client::connect(&node, &alice.token).await;
    let mut b = Client::connect(&node, &bob.token).await;
    for i in 0..10 {
        a.send_message(room_id, &format!("m{i}"), "x").await;
    }
    a.send_message(room_id, "m0", "x").await; // a duplicate
    b.messages_until(room_id, 10).await;
    let nowhere = "01900000-0000-7000-8000-000000000000";
    let err = a.send_message(nowhere, "z", "x").await;
    assert_eq!(err["code"], "not_found");
    a.send_text("{nope").await;
    a.expect(|f| f["code"] == "invalid_json").await;

    let after = scrape(&node).await;
    let delta = |name: &str| get(&after, name) - get(&before, name);
    assert_eq!(get(&after, "parley_sessions"), 2.0);
    assert_eq!(delta("parley_messages_committed_total"), 10.0);
    assert_eq!(delta("parley_messages_duplicate_total"), 1.0);
    assert!(
        delta("parley_deliveries_total") >= 20.0,
        "each message to both sessions"
    );
    assert!(delta("parley_commit_batch_size_count") >= 1.0);
    assert_eq!(delta("parley_send_to_ack_seconds_count"), 11.0);
    assert!(delta("parley_commit_seconds_sum") > 0.0);
    // The embedded store's group transactions: at least one (message commits
    // and receipt flushes share them, so their number depends on timing),
    // each with at least one request.
    let txns = delta("parley_storage_txn_seconds_count");
    assert!(txns >= 1.0, "{txns} transactions");
    assert!(delta("parley_storage_txn_batches_sum") >= txns);
    assert!(delta("parley_storage_txn_seconds_sum") > 0.0);
    assert!(delta("parley_ws_connections_total") >= 2.0);
    assert!(delta("parley_ws_bad_frames_total") >= 1.0);
    assert!(delta("parley_http_requests_total") >= 5.0);
    assert_eq!(get(&after, "parley_cluster_members"), 1.0);
    assert!(after
        .keys()
        .any(|k| k.starts_with("parley_errors_total{") && k.contains("code=\"not_found\"")));
    let nf: f64 = after
        .iter()
        .filter(|(k, _)| k.starts_with("parley_errors_total{") && k.contains("not_found"))
        .map(|(_, v)| *v)
        .sum();
    assert!(nf >= 1.0, "the not_found answer is counted");
    // So is an error the gateway answers itself (the malformed frame).
    let code = |c: &str| {
        after
            .iter()
            .filter(|(k, _)| {
                k.starts_with("parley_errors_total{") && k.contains(&format!("code=\"{c}\""))
            })
            .map(|(_, v)| *v)
            .sum::<f64>()
            - before
                .iter()
                .filter(|(k, _)| {
                    k.starts_with("parley_errors_total{") && k.contains(&format!("code=\"{c}\""))
                })
                .map(|(_, v)| *v)
                .sum::<f64>()
    };
    assert_eq!(code("invalid_json"), 1.0, "the malformed frame is counted");
    // Queue-depth gauges exist and drain to zero once everything is written.
    assert!(after
        .keys()
        .any(|k| k.starts_with("parley_room_pending_sends{")));
    assert!(after
        .keys()
        .any(|k| k.starts_with("parley_outbound_queued_frames{")));
    assert_eq!(get(&after, "parley_room_pending_sends"), 0.0);
    assert_eq!(get(&after, "parley_outbound_queued_frames"), 0.0);
    assert!(after
        .keys()
        .any(|k| k.starts_with("parley_presence_waiting{")));
}
