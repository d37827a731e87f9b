//! The web client is served by every node with a CSP that forbids inline script.

mod common;

use common::*;

#[tokio::test]
async fn web_client_is_served_with_a_strict_csp() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let resp = reqwest::get(node.url("/")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let csp = resp
        .headers()
        .get("content-security-policy")
        .expect("CSP header")
        .to_str()
        .unwrap()
        .to_string();
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = resp.text().await.unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert!(csp.contains("default-src 'self'"), "{csp}");
    // No inline script or inline event handlers in the page itself.
    for tag in html.split("<script").skip(1) {
        let head = tag.split('>').next().unwrap_or("");
        assert!(
            head.contains("src="),
            "inline <script> in index.html: <script{head}>"
        );
    }
    let lower = html.to_ascii_lowercase();
    for handler in [
        " onclick=",
        " onload=",
        " onerror=",
        " onsubmit=",
        " oninput=",
    ] {
        assert!(
            !lower.contains(handler),
            "inline handler {handler} in index.html"
        );
    }
    // Every module the page loads is served as JavaScript, with the same CSP.
    for file in ["app.js", "api.js", "ws.js", "ui.js"] {
        let r = reqwest::get(node.url(&format!("/{file}"))).await.unwrap();
        assert_eq!(r.status(), 200, "{file}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript"));
        assert!(r.headers().contains_key("content-security-policy"));
    }
    let css = reqwest::get(node.url("/style.css")).await.unwrap();
    assert!(css.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    let missing = call(&node, "GET", "/nope.js", None, None).await;
    assert_error(&missing, 404, "not_found");
}
