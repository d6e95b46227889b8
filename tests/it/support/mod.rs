//! Test support: where the services started by `scripts/test` live, and a throwaway anvil node.
//!
//! Every accessor panics when its variable is missing: a test that needs Redis, PostgreSQL or a
//! chain must fail loudly outside `scripts/test`, never skip and pass.

// Shared by many test modules; not every build uses every helper.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn env_var(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: run scripts/test (it starts Redis, PostgreSQL and installs anvil)"
        ),
    }
}

/// `unix:///…/redis.sock` of the private Redis (no TCP listener).
pub fn redis_url() -> String {
    env_var("TARIFF_TEST_REDIS_URL")
}

/// `postgres://postgres@127.0.0.1:PORT/postgres` of the throwaway cluster (trust auth).
pub fn database_url() -> String {
    env_var("TARIFF_TEST_DATABASE_URL")
}

/// The anvil ELF installed by npm (`@foundry-rs/anvil-linux-amd64`).
pub fn anvil_bin() -> PathBuf {
    PathBuf::from(env_var("TARIFF_TEST_ANVIL_BIN"))
}

/// `target/contracts`, filled by `scripts/compile-contracts`.
pub fn contracts_dir() -> PathBuf {
    PathBuf::from(env_var("TARIFF_TEST_CONTRACTS_DIR"))
}

/// A compiled artifact, e.g. `contract_artifact("TestUSDC.runtime.bin")`.
pub fn contract_artifact(file: &str) -> String {
    let path = contracts_dir().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (scripts/compile-contracts writes it)",
            path.display()
        )
    })
}

/// A loopback TCP port that was free a moment ago. Another process can still take it before the
/// caller binds, so spawners retry with a fresh port.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Runs `$0 "$@"` (anvil) and kills it once its stdin reaches EOF, i.e. when the test process
/// drops the pipe or dies. Plain `Child::kill` in Drop would leave anvil running whenever the
/// test process is killed outright (nextest timeout, Ctrl-C), since Drop never runs then.
/// (Background jobs get /dev/null as stdin, hence the copy on fd 3.)
const WATCHDOG: &str =
    r#"exec 3<&0; "$0" "$@" & pid=$!; (read -r _ <&3; kill $pid 2>/dev/null) & wait $pid"#;

/// A private anvil process, stopped on drop (also when the test panics or is killed).
pub struct AnvilNode {
    child: Child,
    port: u16,
    chain_id: u64,
    http: reqwest::Client,
}

impl AnvilNode {
    /// Starts anvil on a free port with the given chain id and waits until it answers JSON-RPC.
    pub async fn spawn(chain_id: u64) -> Self {
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new("sh")
                .args(["-c", WATCHDOG])
                .arg(anvil_bin())
                .args([
                    "--port",
                    &port.to_string(),
                    "--chain-id",
                    &chain_id.to_string(),
                ])
                .arg("--silent")
                .stdin(Stdio::piped()) // the watchdog's lifeline; closed on drop
                .stdout(Stdio::null())
                .spawn() // stderr inherited: the test runner shows it if anvil complains
                .unwrap_or_else(|e| panic!("spawn {}: {e}", anvil_bin().display()));
            let mut node = AnvilNode {
                child,
                port,
                chain_id,
                http: reqwest::Client::new(),
            };
            if node.wait_ready().await {
                return node;
            }
            // Dropping `node` kills it; most likely the port was taken, so try another one.
        }
        panic!("anvil did not start after 5 attempts");
    }

    /// Polls `eth_chainId` until it answers with our chain id, anvil exits, or 30 s pass
    /// (generous: on 2 cores many tests start nodes at once).
    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_exited)) = self.child.try_wait() {
                return false;
            }
            if let Ok(Ok(id)) = self.try_rpc("eth_chainId", json!([])).await {
                assert_eq!(
                    id,
                    json!(format!("{:#x}", self.chain_id)),
                    "anvil reports another chain id"
                );
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub fn rpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// Outer error: transport failure. Inner error: the JSON-RPC error object (e.g. a revert).
    async fn try_rpc(&self, method: &str, params: Value) -> reqwest::Result<Result<Value, Value>> {
        let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
        let reply: Value = self
            .http
            .post(self.rpc_url())
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        Ok(match reply.get("error") {
            Some(err) => Err(err.clone()),
            None => Ok(reply["result"].clone()),
        })
    }

    /// JSON-RPC call; `Err` carries the node's error object (message and revert data).
    pub async fn rpc(&self, method: &str, params: Value) -> Result<Value, Value> {
        self.try_rpc(method, params)
            .await
            .unwrap_or_else(|e| panic!("{method}: anvil unreachable: {e}"))
    }

    /// Anvil's unlocked dev accounts (they can `eth_sendTransaction` and `eth_signTypedData_v4`).
    pub async fn accounts(&self) -> Vec<String> {
        let accounts = self
            .rpc("eth_accounts", json!([]))
            .await
            .expect("eth_accounts");
        serde_json::from_value(accounts).expect("eth_accounts: list of strings")
    }

    /// Sends a transaction from an unlocked account and returns its receipt. Panics if it is
    /// rejected or reverts.
    pub async fn send_tx(&self, tx: Value) -> Value {
        let hash = self
            .rpc("eth_sendTransaction", json!([tx]))
            .await
            .unwrap_or_else(|e| panic!("eth_sendTransaction {tx}: {e}"));
        // Anvil automines, but may answer with the hash before the block exists: poll briefly.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let receipt = self
                .rpc("eth_getTransactionReceipt", json!([hash]))
                .await
                .expect("eth_getTransactionReceipt");
            if !receipt.is_null() {
                assert_eq!(
                    receipt["status"],
                    json!("0x1"),
                    "transaction failed: {receipt}"
                );
                return receipt;
            }
            assert!(
                Instant::now() < deadline,
                "no receipt for {hash} after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `eth_call` against the latest block; returns the output hex or the error object.
    pub async fn call(&self, to: &str, data: &str) -> Result<String, Value> {
        let out = self
            .rpc("eth_call", json!([{ "to": to, "data": data }, "latest"]))
            .await?;
        Ok(out.as_str().expect("eth_call returns hex").to_owned())
    }
}

impl Drop for AnvilNode {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // EOF: the watchdog kills anvil
        let _ = self.child.wait(); // the shell exits once anvil has; reaping it leaves no zombie
    }
}

/// A private redis-server listening only on the unix socket `sock` (for tests that stop it).
pub fn redis_on(sock: &std::path::Path) -> std::process::Child {
    std::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--save",
            "",
            "--appendonly",
            "no",
            "--unixsocket",
        ])
        .arg(sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server is installed by scripts/test")
}

/// Waits (up to 2 s) for `sock` to appear.
pub async fn wait_for_socket(sock: &std::path::Path) {
    for _ in 0..200 {
        if sock.exists() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("nothing opened {}", sock.display());
}
