//! The cluster port over real sockets: connections that never authenticate
//! are closed, with or without TLS. Cluster TLS: nodes with certificates from the cluster
//! CA (made by `deploy/cluster-tls-certs.sh`, with openssl) form a full
//! cluster from one seed (while a connection that never says hello sits on
//! the seed's cluster port, and again after a node is killed and
//! restarted), and nodes without such a certificate, or without TLS, are
//! kept out.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Makes a CA in `dir` and certificates for `nodes` with the deploy script.
fn make_certs(dir: &Path, nodes: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cluster-tls-certs.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(dir)
        .args(nodes)
        .output()
        .expect("run deploy/cluster-tls-certs.sh (needs openssl)");
    assert!(
        out.status.success(),
        "cluster-tls-certs.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `--cluster-tls-*` flags of node `name` with certificates in `certs`
/// and the CA bundle `ca`.
fn tls_flags(certs: &Path, name: &str, ca: &Path) -> Vec<String> {
    let file = |f: String| certs.join(f).display().to_string();
    vec![
        "--cluster-tls-cert".into(),
        file(format!("{name}.pem")),
        "--cluster-tls-key".into(),
        file(format!("{name}.key")),
        "--cluster-tls-ca".into(),
        ca.display().to_string(),
        "--cluster-join-grace-ms".into(),
        "500".into(),
    ]
}

/// Starts node `name` on cluster port `port`, joining `seed`, with `flags`.
async fn start(dir: &Path, name: &str, port: u16, seed: u16, flags: &[String]) -> Node {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    start_cluster_node(dir, name, port, &format!("127.0.0.1:{seed}"), &flags).await
}

/// Live members `node` counts (itself included).
async fn live(node: &Node) -> usize {
    let r = call(node, "GET", "/api/v1/cluster", None, None).await;
    r.body["live"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn nodes_with_cluster_certificates_form_a_full_cluster_from_one_seed() {
    let dir = data_dir();
    let certs = tempfile::tempdir().expect("tempdir");
    make_certs(certs.path(), &["n1", "n2", "n3"]);
    let ca: PathBuf = certs.path().join("ca.pem");
    let ports = [free_port(), free_port(), free_port()];
    // n2 and n3 know only n1: they must find each other through n1's
    // heartbeats and dial each other over TLS.
    let mut nodes = Vec::new();
    let mut idle = Vec::new();
    for (i, name) in ["n1", "n2", "n3"].iter().enumerate() {
        let flags = tls_flags(certs.path(), name, &ca);
        nodes.push(start(dir.path(), name, ports[i], ports[0], &flags).await);
        if i == 0 {
            // A connection that never starts its handshake holds up no one.
            let addr = format!("127.0.0.1:{}", ports[0]);
            idle.push(TcpStream::connect(&addr).await.expect("tcp connect"));
        }
    }
    for node in &nodes {
        wait_members(node, 3).await;
    }
    // n2 and n3 are connected to each other: a direct room between users
    // on them carries messages both ways, live.
    let alice = user(&nodes[1], "alice").await;
    let bob = user(&nodes[2], "bob").await;
    let room = group(&nodes[1], &alice, "over-tls", &[&bob]).await;
    let room_id = room_id(&room);
    let mut a = Client::connect(&nodes[1], &alice.token).await;
    let mut b = Client::connect(&nodes[2], &bob.token).await;
    let sent = a.send_message(&room_id, "m1", "sealed").await;
    assert_eq!(sent["type"], "sent", "{sent}");
    let got = b.expect(|f| f["type"] == "message").await;
    assert_eq!(got["body"], "sealed");
    let reply = b.send_message(&room_id, "m2", "and back").await;
    assert_eq!(reply["seq"], 2, "{reply}");
    let got = a.expect(|f| f["type"] == "message" && f["seq"] == 2).await;
    assert_eq!(got["body"], "and back");

    // n3 is killed and comes back: it rejoins through n1, and n2 (which
    // knows it only from n1's heartbeats) dials it again.
    drop(b);
    nodes[2].kill().await;
    wait_members(&nodes[1], 2).await;
    nodes[2].restart().await;
    for node in &nodes {
        wait_members(node, 3).await;
    }
    let mut b = Client::connect(&nodes[2], &bob.token).await;
    let sent = a.send_message(&room_id, "m3", "welcome back").await;
    assert_eq!(sent["seq"], 3, "{sent}");
    let got = b.expect(|f| f["type"] == "message" && f["seq"] == 3).await;
    assert_eq!(got["body"], "welcome back");
}

#[tokio::test]
async fn a_node_without_a_certificate_from_the_cluster_ca_is_kept_out() {
    let dir = data_dir();
    let certs = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    make_certs(certs.path(), &["n1"]);
    make_certs(other.path(), &["n2"]);
    // n2 trusts both CAs, so it accepts n1's certificate; n1 must refuse
    // n2's, which its CA did not sign.
    let both = other.path().join("both.pem");
    let bundle = [certs.path().join("ca.pem"), other.path().join("ca.pem")]
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read ca"))
        .collect::<String>();
    std::fs::write(&both, bundle).expect("write bundle");
    let ports = [free_port(), free_port(), free_port()];
    let n1 = start(
        dir.path(),
        "n1",
        ports[0],
        ports[0],
        &tls_flags(certs.path(), "n1", &certs.path().join("ca.pem")),
    )
    .await;
    let n2 = start(
        dir.path(),
        "n2",
        ports[1],
        ports[0],
        &tls_flags(other.path(), "n2", &both),
    )
    .await;
    // n3 has no TLS at all.
    let n3 = start(
        dir.path(),
        "n3",
        ports[2],
        ports[0],
        &["--cluster-join-grace-ms".into(), "500".into()],
    )
    .await;
    // Both have been dialling n1 every second meanwhile; give them a few more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for node in [&n1, &n2, &n3] {
        assert_eq!(live(node).await, 1, "{} joined someone", node.addr);
    }
    // A node with the right certificate still joins n1.
    make_certs(certs.path(), &["n4"]);
    let n4 = start(
        dir.path(),
        "n4",
        free_port(),
        ports[0],
        &tls_flags(certs.path(), "n4", &certs.path().join("ca.pem")),
    )
    .await;
    wait_members(&n4, 2).await;
    wait_members(&n1, 2).await;
}

#[tokio::test]
async fn incomplete_or_unreadable_tls_settings_stop_the_node_with_a_clear_error() {
    let dir = data_dir();
    let certs = tempfile::tempdir().expect("tempdir");
    make_certs(certs.path(), &["n1"]);
    let file = |f: &str| certs.path().join(f).display().to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    let (cert, key, ca) = (file("n1.pem"), file("n1.key"), file("ca.pem"));
    let tls = |ca: &str| {
        vec![
            "--cluster-tls-cert".to_string(),
            cert.clone(),
            "--cluster-tls-key".into(),
            key.clone(),
            "--cluster-tls-ca".into(),
            ca.to_string(),
        ]
    };
    // (clustered, TLS flags, what the error must say)
    let cases = [
        // One file of three.
        (
            true,
            vec!["--cluster-tls-cert".to_string(), cert.clone()],
            "give all three or none",
        ),
        // TLS for a node that does not cluster.
        (false, tls(&ca), "needs --cluster-listen"),
        // A key where the CA should be: the file is named.
        (true, tls(&key), "n1.key"),
    ];
    for (clustered, flags, expected) in cases {
        let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
        if clustered {
            args.extend(["--cluster-listen", listen.as_str()]);
        }
        let err = refused(dir.path(), &args);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

/// Whether `s` is closed by the node within `wait` (EOF or reset).
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(wait, s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn a_silent_connection_to_the_cluster_port_is_closed_with_or_without_tls() {
    let certs = tempfile::tempdir().expect("tempdir");
    make_certs(certs.path(), &["n1", "n2"]);
    let ca = certs.path().join("ca.pem");
    for tls in [false, true] {
        let dir = data_dir();
        let flags = |name: &str| {
            let mut f: Vec<String> = vec!["--cluster-handshake-timeout-ms".into(), "1000".into()];
            if tls {
                f.extend(tls_flags(certs.path(), name, &ca));
            } else {
                f.extend(["--cluster-join-grace-ms".into(), "500".into()]);
            }
            f
        };
        let port = free_port();
        let n1 = start(dir.path(), "n1", port, port, &flags("n1")).await;
        // Connects and never says a word (no TLS hello, no cookie handshake).
        let mut silent = TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .expect("tcp connect");
        assert!(
            closed_within(&mut silent, Duration::from_secs(8)).await,
            "a silent connection was kept open (tls: {tls})"
        );
        // Real peers still join.
        let n2 = start(dir.path(), "n2", free_port(), port, &flags("n2")).await;
        wait_members(&n2, 2).await;
        wait_members(&n1, 2).await;
    }
}

/// Renewed certificates take effect on SIGHUP, without a restart. n1 runs
/// with certificates of one CA; files that do not load are refused on
/// SIGHUP and n1 keeps its certificates (a node of the old CA still joins);
/// then n1's files are replaced by ones of a new CA, and after SIGHUP a node
/// of the new CA, kept out until then, joins while the old session stays.
#[tokio::test]
async fn sighup_reloads_the_cluster_certificates() {
    let dir = data_dir();
    let (old, new, files) = (tempdir(), tempdir(), tempdir());
    make_certs(old.path(), &["n1", "n2"]);
    make_certs(new.path(), &["n1", "n3"]);
    let install = |from: &Path| {
        for f in ["n1.pem", "n1.key", "ca.pem"] {
            std::fs::copy(from.join(f), files.path().join(f)).expect("copy certificate");
        }
    };
    install(old.path());
    let ports = [free_port(), free_port(), free_port()];
    let flags = |certs: &Path, name: &str| tls_flags(certs, name, &certs.join("ca.pem"));
    // n1 on the files it reloads; n3 with the new CA's certificate.
    let mut started = Vec::new();
    for (name, port, certs) in [("n1", ports[0], files.path()), ("n3", ports[2], new.path())] {
        started.push(start(dir.path(), name, port, ports[0], &flags(certs, name)).await);
    }
    let (n1, n3) = (started.remove(0), started.remove(0));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(live(&n3).await, 1, "n3 joined before the renewal");

    // A renewal written half-way: refused, and n1 keeps what it has.
    std::fs::write(files.path().join("n1.pem"), "not a certificate\n").expect("write");
    n1.signal("HUP");
    wait_for_log(&n1, "cluster TLS files not reloaded").await;
    let n2 = start(
        dir.path(),
        "n2",
        ports[1],
        ports[0],
        &flags(old.path(), "n2"),
    )
    .await;
    wait_members(&n2, 2).await;

    // The new CA's files: n3 (dialling n1 every second) gets in, and n2's
    // session, opened with the old certificates, stays. (n2 and n3 trust
    // different CAs, so they do not connect to each other.)
    install(new.path());
    n1.signal("HUP");
    wait_members(&n3, 2).await;
    wait_members(&n1, 3).await;
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Waits until `node` has logged `text` (test nodes log warnings only).
async fn wait_for_log(node: &Node, text: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !node.stderr_log().contains(text) {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never logged {text:?}:\n{}",
            node.addr,
            node.stderr_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
