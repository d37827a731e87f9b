//! Protection limits that need special node settings: slow consumers and
//! configuration files.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn a_client_that_cannot_keep_up_is_closed_with_1013() {
    let dir = data_dir();
    let node = Node::start_with(dir.path(), &["--outbound-queue", "256", "--ws-rate", "0"]).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let room = group(&node, &alice, "firehose", &[&bob]).await;
    let room_id = room["room_id"].as_str().unwrap().to_string();
    let mut a = Client::connect(&node, &alice.token).await;
    // Bob connects and then reads nothing while alice sends far more than
    // his socket buffers and his queue can hold.
    let mut b = Client::connect(&node, &bob.token).await;
    let body = "x".repeat(4000);
    let total = 4000u64;
    let batch = 50u64;
    let mut seq = 0;
    while seq < total {
        for i in 0..batch {
            let id = format!("f{}", seq + i);
            a.send(json!({"type": "send", "room_id": room_id, "client_msg_id": id, "body": body}))
                .await;
        }
        seq += batch;
        a.messages_until(&room_id, seq).await;
    }
    assert_eq!(b.expect_close().await, Some(1013));
    // Alice, who kept up, is still served.
    a.send(json!({"type": "ping", "ref": "alive"})).await;
    a.expect(|f| f["type"] == "pong").await;
}

#[tokio::test]
async fn settings_come_from_a_toml_file() {
    let dir = data_dir();
    let file = dir.path().join("parley.toml");
    std::fs::write(
        &file,
        "node-name = \"from-the-file\"\nheartbeat-ms = 12345\n",
    )
    .unwrap();
    let node = Node::start_with(dir.path(), &["--config", file.to_str().unwrap()]).await;
    let alice = user(&node, "alice").await;
    let ws = Client::connect(&node, &alice.token).await;
    assert_eq!(ws.hello["node"], "from-the-file");
    assert_eq!(ws.hello["heartbeat_ms"], 12345);
}

#[tokio::test]
async fn a_misspelled_setting_in_the_toml_file_stops_the_node() {
    let dir = data_dir();
    let file = dir.path().join("parley.toml");
    std::fs::write(&file, "node-name = \"n1\"\nheartbeat-msec = 5000\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_parley-node"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--config",
            file.to_str().unwrap(),
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown setting `heartbeat-msec`"),
        "stderr: {stderr}"
    );
}
