//! Checks the chain test rig itself: anvil starts, and the compiled TestUSDC deploys (normally and
//! at the real Base Sepolia USDC address) and behaves like USDC's EIP-3009 implementation.
//! Raw JSON-RPC with hand-written ABI encoding, because no alloy crate is a dependency yet.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::support::{AnvilNode, contract_artifact};

const BASE_SEPOLIA: u64 = 84532;
const BASE_SEPOLIA_USDC: &str = "0x036cbd53842c5426634e7929541ec2318f3dcf7e";
const INITIALIZE: &str = "initialize(string,string,string)";
const TWA_VRS: &str = "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)";
const TWA_BYTES: &str =
    "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)";

/// The handful of ABI argument types these tests need.
#[derive(Clone)]
enum Arg {
    Addr(String),
    Uint(u128),
    B32(String),
    Str(String),
    Bytes(Vec<u8>),
}

fn addr(a: &str) -> Arg {
    Arg::Addr(a.to_owned())
}

/// initialize() arguments of USDC on Base Sepolia (EIP-712 name "USDC", version "2").
fn usdc_init() -> Vec<Arg> {
    ["USDC", "USDC", "2"]
        .map(|s| Arg::Str(s.to_owned()))
        .to_vec()
}

/// One 32-byte ABI word as 64 hex chars, from a 0x-hex value of at most 32 bytes (left-padded).
fn word(hex0x: &str) -> String {
    let h = hex0x.trim_start_matches("0x").to_lowercase();
    assert!(h.len() <= 64, "more than 32 bytes: {hex0x}");
    format!("{h:0>64}")
}

fn uint_of(hex0x: &str) -> u128 {
    let w = word(hex0x);
    assert!(w[..32].bytes().all(|c| c == b'0'), "exceeds u128: {hex0x}");
    u128::from_str_radix(&w[32..], 16).expect("hex")
}

/// `0x` + selector + ABI-encoded arguments (head/tail layout for dynamic types).
fn calldata(selector: &str, args: &[Arg]) -> String {
    let (mut head, mut tail) = (String::new(), String::new());
    for arg in args {
        let dynamic: &[u8] = match arg {
            Arg::Addr(a) | Arg::B32(a) => {
                head += &word(a);
                continue;
            }
            Arg::Uint(n) => {
                head += &format!("{n:064x}");
                continue;
            }
            Arg::Str(s) => s.as_bytes(),
            Arg::Bytes(b) => b,
        };
        // Offset from the start of the arguments (every head slot is one word), then the tail:
        // length word plus the data right-padded to whole words.
        head += &format!("{:064x}", args.len() * 32 + tail.len() / 2);
        let mut data = hex::encode(dynamic);
        data.push_str(&"0".repeat((64 - data.len() % 64) % 64));
        tail += &format!("{:064x}{data}", dynamic.len());
    }
    format!("0x{selector}{head}{tail}")
}

/// The compiled artifacts written by scripts/compile-contracts.
struct Artifacts {
    bin: String,
    runtime: String,
    selectors: HashMap<String, String>,
}

fn artifacts() -> Artifacts {
    let selectors = contract_artifact("TestUSDC.selectors.json");
    Artifacts {
        bin: contract_artifact("TestUSDC.bin"),
        runtime: contract_artifact("TestUSDC.runtime.bin"),
        selectors: serde_json::from_str(&selectors).expect("selectors json"),
    }
}

/// One TestUSDC instance on one node.
struct Token<'a> {
    node: &'a AnvilNode,
    artifacts: &'a Artifacts,
    address: String,
}

impl Token<'_> {
    fn data(&self, signature: &str, args: &[Arg]) -> String {
        let selector = self.artifacts.selectors.get(signature);
        calldata(
            selector.unwrap_or_else(|| panic!("no selector for {signature}")),
            args,
        )
    }

    /// A transaction from an unlocked account; panics unless it succeeds.
    async fn send(&self, from: &str, signature: &str, args: &[Arg]) -> Value {
        let data = self.data(signature, args);
        self.node
            .send_tx(json!({ "from": from, "to": self.address, "data": data }))
            .await
    }

    /// `eth_call`, optionally with the block timestamp overridden (to probe time windows exactly).
    async fn call_at(
        &self,
        time: Option<u128>,
        signature: &str,
        args: &[Arg],
    ) -> Result<String, Value> {
        let tx = json!({ "to": self.address, "data": self.data(signature, args) });
        let params = match time {
            None => json!([tx, "latest"]),
            Some(t) => json!([tx, "latest", {}, { "time": format!("{t:#x}") }]),
        };
        let out = self.node.rpc("eth_call", params).await?;
        Ok(out.as_str().expect("hex").to_owned())
    }

    async fn call(&self, signature: &str, args: &[Arg]) -> String {
        self.call_at(None, signature, args)
            .await
            .unwrap_or_else(|e| panic!("{signature}: {e}"))
    }

    async fn uint(&self, signature: &str, args: &[Arg]) -> u128 {
        uint_of(&self.call(signature, args).await)
    }

    async fn string(&self, signature: &str) -> String {
        let raw = hex::decode(&self.call(signature, &[]).await[2..]).expect("hex");
        let offset = uint_of(&hex::encode(&raw[..32])) as usize;
        let len = uint_of(&hex::encode(&raw[offset..offset + 32])) as usize;
        String::from_utf8(raw[offset + 32..offset + 32 + len].to_vec()).expect("utf8")
    }

    /// The call must revert with exactly this (USDC) revert string.
    async fn reverts(&self, time: Option<u128>, signature: &str, args: &[Arg], reason: &str) {
        match self.call_at(time, signature, args).await {
            Ok(out) => panic!("{signature} returned {out}, expected revert {reason:?}"),
            Err(err) => {
                let message = err["message"].as_str().unwrap_or_default();
                let ok = message.ends_with(&format!("reverted: {reason}"));
                assert!(ok, "expected {reason:?}, got {err}");
            }
        }
    }
}

/// Deploys a fresh instance from the creation bytecode.
async fn deploy<'a>(node: &'a AnvilNode, artifacts: &'a Artifacts, from: &str) -> Token<'a> {
    let receipt = node
        .send_tx(json!({ "from": from, "data": format!("0x{}", artifacts.bin) }))
        .await;
    let address = receipt["contractAddress"]
        .as_str()
        .expect("contractAddress")
        .to_owned();
    Token {
        node,
        artifacts,
        address,
    }
}

/// Places the runtime code at `address` (code only: storage starts empty, so initialize after).
async fn set_code<'a>(node: &'a AnvilNode, artifacts: &'a Artifacts, address: &str) -> Token<'a> {
    let code = format!("0x{}", artifacts.runtime);
    node.rpc("anvil_setCode", json!([address, code]))
        .await
        .expect("anvil_setCode");
    Token {
        node,
        artifacts,
        address: address.to_owned(),
    }
}

/// keccak256 through the node (`web3_sha3`), so the test needs no hashing crate.
async fn keccak(node: &AnvilNode, data: &[u8]) -> String {
    let hash = node
        .rpc("web3_sha3", json!([format!("0x{}", hex::encode(data))]))
        .await;
    hash.expect("web3_sha3").as_str().expect("hex").to_owned()
}

/// The EIP-712 domain separator that clients (viem, alloy) derive for USDC v2 at `token`.
async fn expected_domain_separator(node: &AnvilNode, token: &str) -> String {
    let domain_type =
        "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)";
    let encoded = [
        word(&keccak(node, domain_type.as_bytes()).await),
        word(&keccak(node, b"USDC").await),
        word(&keccak(node, b"2").await),
        format!("{:064x}", node.chain_id()),
        word(token),
    ]
    .concat();
    keccak(node, &hex::decode(encoded).expect("hex")).await
}

#[tokio::test]
async fn test_usdc_deploys_initializes_and_mints() {
    let node = AnvilNode::spawn(BASE_SEPOLIA).await;
    let artifacts = artifacts();
    let accounts = node.accounts().await;
    let (deployer, holder) = (&accounts[0], &accounts[1]);

    let usdc = deploy(&node, &artifacts, deployer).await;
    usdc.send(deployer, INITIALIZE, &usdc_init()).await;
    usdc.send(
        deployer,
        "mint(address,uint256)",
        &[addr(holder), Arg::Uint(1_234_567)],
    )
    .await;

    assert_eq!(usdc.string("name()").await, "USDC");
    assert_eq!(usdc.string("symbol()").await, "USDC");
    assert_eq!(usdc.string("version()").await, "2");
    assert_eq!(usdc.uint("decimals()", &[]).await, 6);
    assert_eq!(
        usdc.uint("balanceOf(address)", &[addr(holder)]).await,
        1_234_567
    );
    assert_eq!(usdc.uint("totalSupply()", &[]).await, 1_234_567);
    // initialize is one-shot, like USDC's.
    let already = "FiatToken: contract is already initialized";
    usdc.reverts(None, INITIALIZE, &usdc_init(), already).await;
}

#[tokio::test]
async fn test_usdc_runtime_code_works_at_the_base_sepolia_usdc_address() {
    let node = AnvilNode::spawn(BASE_SEPOLIA).await;
    let artifacts = artifacts();
    let accounts = node.accounts().await;

    let usdc = set_code(&node, &artifacts, BASE_SEPOLIA_USDC).await;
    usdc.send(&accounts[0], INITIALIZE, &usdc_init()).await;
    assert_eq!(usdc.string("name()").await, "USDC");
    assert_eq!(usdc.uint("decimals()", &[]).await, 6);

    // The separator is the one clients compute for (USDC, 2, 84532, this address)...
    let separator = usdc.call("DOMAIN_SEPARATOR()", &[]).await;
    assert_eq!(
        separator,
        expected_domain_separator(&node, BASE_SEPOLIA_USDC).await
    );
    // ...so an identical token elsewhere has a different one.
    let other = deploy(&node, &artifacts, &accounts[0]).await;
    other.send(&accounts[0], INITIALIZE, &usdc_init()).await;
    let other_separator = other.call("DOMAIN_SEPARATOR()", &[]).await;
    assert_ne!(separator, other_separator);
    assert_eq!(
        other_separator,
        expected_domain_separator(&node, &other.address).await
    );
}

#[derive(Clone)]
struct Authorization {
    from: String,
    to: String,
    value: u128,
    valid_after: u128,
    valid_before: u128,
    nonce: String,
}

impl Authorization {
    /// Signs it for USDC on Base Sepolia as x402 clients do, with anvil's unlocked `signer`
    /// (so no signing crate is needed). Returns r||s||v: 65 bytes, v in {27, 28}.
    async fn sign(&self, node: &AnvilNode, signer: &str) -> Vec<u8> {
        let field = |name: &str, ty: &str| json!({ "name": name, "type": ty });
        let typed = json!({
            "types": {
                "EIP712Domain": [field("name", "string"), field("version", "string"),
                    field("chainId", "uint256"), field("verifyingContract", "address")],
                "TransferWithAuthorization": [field("from", "address"), field("to", "address"),
                    field("value", "uint256"), field("validAfter", "uint256"),
                    field("validBefore", "uint256"), field("nonce", "bytes32")]
            },
            "primaryType": "TransferWithAuthorization",
            "domain": { "name": "USDC", "version": "2", "chainId": BASE_SEPOLIA,
                "verifyingContract": BASE_SEPOLIA_USDC },
            "message": { "from": self.from, "to": self.to, "value": self.value.to_string(),
                "validAfter": self.valid_after.to_string(),
                "validBefore": self.valid_before.to_string(), "nonce": self.nonce }
        });
        let sig = node
            .rpc("eth_signTypedData_v4", json!([signer, typed]))
            .await;
        let sig = hex::decode(&sig.expect("eth_signTypedData_v4").as_str().expect("hex")[2..]);
        sig.expect("hex")
    }

    fn args(&self) -> Vec<Arg> {
        let (from, to) = (addr(&self.from), addr(&self.to));
        let nonce = Arg::B32(self.nonce.clone());
        vec![
            from,
            to,
            Arg::Uint(self.value),
            Arg::Uint(self.valid_after),
            Arg::Uint(self.valid_before),
            nonce,
        ]
    }

    /// Arguments of the `(…, bytes signature)` overload.
    fn with_signature(&self, sig: &[u8]) -> Vec<Arg> {
        [self.args(), vec![Arg::Bytes(sig.to_vec())]].concat()
    }

    /// Arguments of the `(…, uint8 v, bytes32 r, bytes32 s)` overload.
    fn with_vrs(&self, sig: &[u8]) -> Vec<Arg> {
        let (r, s) = (hex::encode(&sig[..32]), hex::encode(&sig[32..64]));
        [
            self.args(),
            vec![Arg::Uint(sig[64].into()), Arg::B32(r), Arg::B32(s)],
        ]
        .concat()
    }
}

/// The other valid ECDSA signature of the same message: s' = n - s with v flipped. USDC rejects
/// it (high s) so that each authorization has exactly one signature.
fn high_s_twin(sig: &[u8]) -> Vec<u8> {
    const N: &str = "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141";
    let n = hex::decode(N).expect("hex");
    let mut out = sig.to_vec();
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(n[i]) - i16::from(sig[32 + i]) - borrow;
        out[32 + i] = d.rem_euclid(256) as u8;
        borrow = i16::from(d < 0);
    }
    out[64] = 27 + 28 - out[64]; // swap 27 and 28
    out
}

/// EIP-3009 end to end with real wallet signatures at the setCode'd USDC address. Also pins the
/// USDC revert strings, which the x402 facilitator maps to its error codes.
#[tokio::test]
async fn test_usdc_transfer_with_authorization_matches_usdc_semantics() {
    let node = AnvilNode::spawn(BASE_SEPOLIA).await;
    let artifacts = artifacts();
    let accounts = node.accounts().await;
    let (facilitator, payer, payee, stranger) =
        (&accounts[0], &accounts[1], &accounts[2], &accounts[3]);
    let usdc = set_code(&node, &artifacts, BASE_SEPOLIA_USDC).await;
    usdc.send(facilitator, INITIALIZE, &usdc_init()).await;
    usdc.send(
        facilitator,
        "mint(address,uint256)",
        &[addr(payer), Arg::Uint(5_000)],
    )
    .await;
    let balances = async || {
        let of = async |who: &str| usdc.uint("balanceOf(address)", &[addr(who)]).await;
        (of(payer).await, of(payee).await)
    };

    let block = node
        .rpc("eth_getBlockByNumber", json!(["latest", false]))
        .await
        .expect("block");
    let now = uint_of(block["timestamp"].as_str().expect("timestamp"));
    let first = Authorization {
        from: payer.clone(),
        to: payee.clone(),
        value: 1000,
        valid_after: now - 600, // what x402 clients send
        valid_before: now + 3600,
        nonce: format!("0x{}", "11".repeat(32)),
    };
    let sig = first.sign(&node, payer).await;
    assert_eq!(sig.len(), 65);

    // The v,r,s overload (the facilitator's choice for 65-byte signatures), sent by a third party.
    let receipt = usdc.send(facilitator, TWA_VRS, &first.with_vrs(&sig)).await;
    assert_eq!(
        receipt["logs"].as_array().expect("logs").len(),
        2,
        "AuthorizationUsed + Transfer"
    );
    assert_eq!(balances().await, (4000, 1000));
    let state = [addr(payer), Arg::B32(first.nonce.clone())];
    assert_eq!(
        usdc.uint("authorizationState(address,bytes32)", &state)
            .await,
        1
    );
    // A replay, even through the other overload, finds the nonce spent.
    let used = "FiatTokenV2: authorization is used or canceled";
    usdc.reverts(None, TWA_BYTES, &first.with_signature(&sig), used)
        .await;

    let second = Authorization {
        nonce: format!("0x{}", "22".repeat(32)),
        ..first.clone()
    };
    let sig = second.sign(&node, payer).await;
    let args = second.with_signature(&sig);
    // validAfter < block.timestamp < validBefore, both strict: probe the exact edges.
    let (after, before) = (second.valid_after, second.valid_before);
    usdc.reverts(
        Some(after),
        TWA_BYTES,
        &args,
        "FiatTokenV2: authorization is not yet valid",
    )
    .await;
    usdc.reverts(
        Some(before),
        TWA_BYTES,
        &args,
        "FiatTokenV2: authorization is expired",
    )
    .await;
    assert!(
        usdc.call_at(Some(after + 1), TWA_BYTES, &args)
            .await
            .is_ok()
    );
    assert!(
        usdc.call_at(Some(before - 1), TWA_BYTES, &args)
            .await
            .is_ok()
    );
    // Malformed and foreign signatures.
    let mut bad_v = sig.clone();
    bad_v[64] = 29;
    let v_msg = "ECRecover: invalid signature 'v' value";
    usdc.reverts(None, TWA_BYTES, &second.with_signature(&bad_v), v_msg)
        .await;
    let s_msg = "ECRecover: invalid signature 's' value";
    usdc.reverts(
        None,
        TWA_BYTES,
        &second.with_signature(&high_s_twin(&sig)),
        s_msg,
    )
    .await;
    let foreign = second.sign(&node, stranger).await;
    let invalid = "FiatTokenV2: invalid signature";
    usdc.reverts(None, TWA_BYTES, &second.with_signature(&foreign), invalid)
        .await;
    // The genuine signature still works, through the bytes overload.
    usdc.send(facilitator, TWA_BYTES, &args).await;
    assert_eq!(balances().await, (3000, 2000));
}
