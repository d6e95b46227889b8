//! Building a real Tariff app for tests: real rules on disk, a real store, the real router.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{Request, Response};
use base64::Engine;
use serde_json::Value;
use tariff::config::Config;
use tariff::http::{AppState, app};
use tariff::server::{BuildOptions, build_state};
use tariff::time::Clock;
use tower::ServiceExt;

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("tariff-{tag}-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// A config file with `text`, and the variable that names it; keep the dir alive while the app
/// runs.
pub fn config_file(text: &str) -> (TempDir, (&'static str, String)) {
    let dir = TempDir::new("config");
    let file = dir.write("tariff.toml", text);
    (dir, ("TARIFF_CONFIG", file.display().to_string()))
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Serves `router` on a free loopback port (a stand-in upstream, pricer, …); returns its base
/// URL and the task (abort it to stop serving).
pub async fn serve(router: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, task)
}

/// The repository's own rules directory (the demo prices).
pub fn repo_rules() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pricing-rules")
}

/// Config from a map of TARIFF_* variables (nothing read from the process environment).
pub fn config(vars: &[(&str, String)]) -> Config {
    let map: std::collections::HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    Config::load(None, &move |k| map.get(k).cloned()).expect("test config is valid")
}

pub struct TestApp {
    pub state: AppState,
    pub _data: TempDir,
}

impl TestApp {
    /// An app over `rules_dir`, the given env vars, an embedded SQLite in a temp dir.
    pub async fn start(rules_dir: &Path, vars: &[(&str, String)]) -> TestApp {
        Self::start_with(rules_dir, vars, Clock::System).await
    }

    pub async fn start_with(rules_dir: &Path, vars: &[(&str, String)], clock: Clock) -> TestApp {
        let mut all = vec![("TARIFF_RULES", rules_dir.display().to_string())];
        all.extend(vars.iter().cloned());
        let data = TempDir::new("data");
        let state = build_state(
            config(&all),
            BuildOptions {
                clock,
                data_dir: Some(data.path().to_path_buf()),
                without_db: false,
            },
        )
        .await
        .expect("app builds");
        TestApp { state, _data: data }
    }

    /// The ledger's audit: every balance recomputes and the sums are zero.
    pub async fn assert_ledger_clean(&self) {
        let report = self
            .state
            .accounts
            .as_ref()
            .unwrap()
            .ledger()
            .check()
            .await
            .unwrap();
        assert!(report.is_clean(), "{report:?}");
    }

    pub async fn send(&self, req: Request<Body>) -> Response<Body> {
        app(self.state.clone()).oneshot(req).await.unwrap()
    }

    pub async fn get(&self, uri: &str) -> Reply {
        Reply::read(
            self.send(Request::get(uri).body(Body::empty()).unwrap())
                .await,
        )
        .await
    }

    pub async fn post_json(&self, uri: &str, json: &str) -> Reply {
        let req = Request::post(uri)
            .header("content-type", "application/json")
            .body(Body::from(json.to_string()))
            .unwrap();
        Reply::read(self.send(req).await).await
    }
}

/// A response read whole.
pub struct Reply {
    pub status: u16,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub async fn read(resp: Response<Body>) -> Reply {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    /// The `PAYMENT-REQUIRED` header decoded with plain base64 + serde_json::Value, independent
    /// of Tariff's own wire types.
    pub fn payment_required(&self) -> Value {
        let b64 = self
            .header("payment-required")
            .expect("PAYMENT-REQUIRED header");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("standard base64");
        serde_json::from_slice(&bytes).expect("header is JSON")
    }

    /// The quote id from the v2 header.
    pub fn quote_id(&self) -> String {
        self.payment_required()["accepts"][0]["extra"]["quoteId"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The quoted amount (base units) from the v2 header.
    pub fn amount(&self) -> u64 {
        self.payment_required()["accepts"][0]["amount"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    pub fn error_code(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}
