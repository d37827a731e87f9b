//! OpenTelemetry export: spans and metrics for sent messages reach an OTLP/HTTP
//! receiver run by the test, decoded from protobuf; the spans of one
//! cross-node message share one trace id.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use common::*;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as Number;
use prost::Message;

/// A span as received: (instance, name, trace id).
type SpanRow = (String, String, String);

#[derive(Default)]
struct Received {
    spans: Vec<SpanRow>,
    metrics: BTreeMap<String, f64>,
}

type Shared = Arc<Mutex<Received>>;

fn instance(attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> String {
    attrs
        .iter()
        .find(|kv| kv.key == "service.instance.id")
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(AnyValue::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

async fn traces(State(shared): State<Shared>, body: Bytes) -> &'static str {
    let req = ExportTraceServiceRequest::decode(body).expect("valid OTLP traces protobuf");
    let mut r = shared.lock().unwrap();
    for rs in req.resource_spans {
        let inst = instance(&rs.resource.map(|r| r.attributes).unwrap_or_default());
        for ss in rs.scope_spans {
            for span in ss.spans {
                let trace: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                r.spans.push((inst.clone(), span.name, trace));
            }
        }
    }
    ""
}

async fn metrics(State(shared): State<Shared>, body: Bytes) -> &'static str {
    let req = ExportMetricsServiceRequest::decode(body).expect("valid OTLP metrics protobuf");
    let mut r = shared.lock().unwrap();
    for rm in req.resource_metrics {
        let inst = instance(&rm.resource.map(|r| r.attributes).unwrap_or_default());
        for sm in rm.scope_metrics {
            for m in sm.metrics {
                let points = match m.data {
                    Some(Data::Sum(s)) => s.data_points,
                    Some(Data::Gauge(g)) => g.data_points,
                    _ => Vec::new(),
                };
                for p in points {
                    let v = match p.value {
                        Some(Number::AsInt(i)) => i as f64,
                        Some(Number::AsDouble(d)) => d,
                        None => continue,
                    };
                    r.metrics.insert(format!("{inst}/{}", m.name), v);
                }
            }
        }
    }
    ""
}

#[tokio::test]
async fn spans_and_metrics_reach_an_otlp_receiver() {
    let shared: Shared = Arc::default();
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(metrics))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // The nodes inherit these from the test process (this file is its own binary).
    std::env::set_var(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://127.0.0.1:{port}"),
    );
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
    std::env::set_var("OTEL_METRIC_EXPORT_INTERVAL", "300");

    let dir = data_dir();
    let nodes = start_cluster(dir.path(), 2, &[]).await;
    let alice = user(&nodes[0], "alice").await;
    let bob = user(&nodes[1], "bob").await;
    let room = group(&nodes[0], &alice, "traced", &[&bob]).await;
    let room_id = room["room_id"].as_str().unwrap();
    let mut a = Client::connect(&nodes[0], &alice.token).await;
    let mut b = Client::connect(&nodes[1], &bob.token).await;
    // The room's owner is one of the two nodes, so one of these senders
    // crosses nodes to commit and the other's message crosses to be delivered.
    for i in 0..3 {
        assert_eq!(
            a.send_message(room_id, &format!("a{i}"), "hi").await["type"],
            "sent"
        );
        assert_eq!(
            b.send_message(room_id, &format!("b{i}"), "hi").await["type"],
            "sent"
        );
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (cross_traces, committed) = {
            let r = shared.lock().unwrap();
            let mut by_trace: BTreeMap<&str, BTreeSet<(&str, &str)>> = BTreeMap::new();
            for (inst, name, trace) in &r.spans {
                by_trace
                    .entry(trace.as_str())
                    .or_default()
                    .insert((inst.as_str(), name.as_str()));
            }
            // A trace that starts with a client's request and has spans on both nodes.
            let cross = by_trace
                .values()
                .filter(|spans| {
                    let nodes: BTreeSet<&str> = spans.iter().map(|(i, _)| *i).collect();
                    nodes.len() == 2 && spans.iter().any(|(_, n)| *n == "ws.request")
                })
                .count();
            let committed: f64 = r
                .metrics
                .iter()
                .filter(|(k, _)| k.ends_with("/parley.messages.committed"))
                .map(|(_, v)| *v)
                .sum();
            (cross, committed)
        };
        if cross_traces > 0 && committed >= 6.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no cross-node trace or metrics yet: {cross_traces} traces, {committed} committed; spans: {:?}",
            shared.lock().unwrap().spans
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = shared.lock().unwrap();
    let names: BTreeSet<&str> = r.spans.iter().map(|(_, n, _)| n.as_str()).collect();
    for expected in ["ws.request", "room.fanout", "room.commit", "http.request"] {
        assert!(
            names.contains(expected),
            "span {expected} missing: {names:?}"
        );
    }
    assert!(
        names.contains("peer.room_op") || names.contains("peer.deliver"),
        "{names:?}"
    );
}
