// Local-chain helpers for the x402 interop scripts: a viem chain definition for anvil running as
// Base Sepolia (chain id 84532), a throwaway anvil launcher, and the TestUSDC set-up that places
// our EIP-3009 token at the real Base Sepolia USDC address (the same steps as tests/it/chain_rig.rs).
// Set-up also puts Multicall3 at its canonical address (as on every real chain): the official
// facilitator diagnoses failed simulations through it, and without it every such failure is
// reported as the generic invalid_exact_evm_transaction_simulation_failed.
//
// CLI:
//   node tests/interop/chain.mjs setup --rpc URL [--mint-to 0xaddr --amount N] [--key 0xdeployer]
//     -> one JSON line {"usdc","name","version","decimals","multicall3","mintTo","balance"}
//   node tests/interop/chain.mjs balance --rpc URL --of 0xaddr
//     -> one JSON line {"usdc","of","balance"}
// Needs target/contracts/TestUSDC.* (run `bash scripts/compile-contracts` first).
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { createServer } from "node:net";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createPublicClient, createWalletClient, defineChain, http } from "viem";
import { privateKeyToAccount } from "viem/accounts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const require = createRequire(import.meta.url);
const pkgDir = (name) => dirname(require.resolve(`${name}/package.json`));

/** The real Base Sepolia USDC address; the official clients only pay "default" assets like this one. */
export const USDC_ADDRESS = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
export const CHAIN_ID = 84532;
/** USDC on Base Sepolia signs EIP-712 with name "USDC", version "2". */
export const USDC_NAME = "USDC";
export const USDC_VERSION = "2";

/** anvil's well-known dev keys (mnemonic "test test ... junk"), accounts 0..3. */
export const ANVIL_KEYS = [
  "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
  "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
  "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
  "0x7c852118294e51e653712a81e05800f5f2c5ea5b14c1fc6e5e3a8ea24c20d2a9",
];

export const ANVIL_BIN =
  process.env.TARIFF_TEST_ANVIL_BIN || `${pkgDir("@foundry-rs/anvil-linux-amd64")}/bin/anvil`;

/** Canonical Multicall3 address (deployed on Base Sepolia and virtually every EVM chain). */
export const MULTICALL3_ADDRESS = "0xcA11bde05977b3631167028862bE2a173976CA11";

/** Base Sepolia's chain id, served by the given (local) RPC URL. */
export function localChain(rpc) {
  return defineChain({
    id: CHAIN_ID,
    name: "Base Sepolia (local anvil)",
    nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
    rpcUrls: { default: { http: [rpc] } },
  });
}

// pollingInterval: anvil mines instantly, so do not wait out viem's default 4 s between receipt polls.
export function publicClientFor(rpc) {
  return createPublicClient({ chain: localChain(rpc), transport: http(rpc), pollingInterval: 100 });
}

export function walletClientFor(rpc, key) {
  const account = privateKeyToAccount(key);
  return createWalletClient({ account, chain: localChain(rpc), transport: http(rpc), pollingInterval: 100 });
}

/** ABI and runtime bytecode written by scripts/compile-contracts. */
export function loadTestUsdc() {
  const dir = `${ROOT}target/contracts`;
  try {
    return {
      abi: JSON.parse(readFileSync(`${dir}/TestUSDC.abi.json`, "utf8")),
      runtime: `0x${readFileSync(`${dir}/TestUSDC.runtime.bin`, "utf8").trim()}`,
    };
  } catch (e) {
    throw new Error(`TestUSDC artifacts missing in ${dir}; run bash scripts/compile-contracts (${e.message})`);
  }
}

/** A free loopback TCP port (the OS picks it; a race with another process is possible but rare). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts a throwaway anvil (chain id 84532) and resolves once it answers JSON-RPC.
 * Returns {rpc, proc, stop()}. The caller must call (and await) stop().
 */
export async function startAnvil({ port } = {}) {
  port ??= await freePort();
  const proc = spawn(ANVIL_BIN, ["--chain-id", String(CHAIN_ID), "--port", String(port), "--silent"], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  const rpc = `http://127.0.0.1:${port}`;
  // Resolves once anvil is gone (so the caller reaps it before exiting).
  const stop = () =>
    new Promise((resolve) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
      proc.once("exit", () => resolve());
      proc.kill("SIGTERM");
    });
  const client = publicClientFor(rpc);
  for (let i = 0; i < 100; i++) {
    if (proc.exitCode !== null) throw new Error(`anvil exited with ${proc.exitCode}`);
    try {
      if ((await client.getChainId()) === CHAIN_ID) return { rpc, proc, stop };
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  await stop();
  throw new Error("anvil did not come up within 10 s");
}

/**
 * Puts Multicall3 at MULTICALL3_ADDRESS unless code is already there. The creation bytecode is the
 * copy viem ships (not in viem's public exports, hence the file path); an eth_call of a creation
 * transaction returns the runtime code, which anvil_setCode then places.
 */
export async function installMulticall3(rpc) {
  const pub = publicClientFor(rpc);
  const existing = await pub.getCode({ address: MULTICALL3_ADDRESS });
  if (existing && existing !== "0x") return;
  const { multicall3Bytecode } = await import(`${pkgDir("viem")}/_esm/constants/contracts.js`);
  const runtime = await pub.request({ method: "eth_call", params: [{ data: multicall3Bytecode }, "latest"] });
  await pub.request({ method: "anvil_setCode", params: [MULTICALL3_ADDRESS, runtime] });
}

/**
 * Places TestUSDC at USDC_ADDRESS (anvil_setCode), initializes it as ("USDC","USDC","2") unless it
 * already is, and optionally mints `amount` (atomic units, 6 decimals) to `mintTo`.
 * Transactions are sent from `key` (default: anvil account 0). Also installs Multicall3.
 */
export async function setupUsdc({ rpc, mintTo, amount, key = ANVIL_KEYS[0] }) {
  const { abi, runtime } = loadTestUsdc();
  await installMulticall3(rpc);
  const pub = publicClientFor(rpc);
  const wallet = walletClientFor(rpc, key);
  // anvil_setCode copies code only; storage (name, balances) survives a repeated call.
  await pub.request({ method: "anvil_setCode", params: [USDC_ADDRESS, runtime] });
  const token = { address: USDC_ADDRESS, abi };
  const send = async (functionName, args) => {
    const hash = await wallet.writeContract({ ...token, functionName, args });
    const receipt = await pub.waitForTransactionReceipt({ hash });
    if (receipt.status !== "success") throw new Error(`${functionName} reverted (${hash})`);
  };
  if ((await pub.readContract({ ...token, functionName: "name" })) === "") {
    await send("initialize", [USDC_NAME, "USDC", USDC_VERSION]);
  }
  if (mintTo && amount !== undefined) await send("mint", [mintTo, BigInt(amount)]);
  const read = (functionName, args = []) => pub.readContract({ ...token, functionName, args });
  return {
    usdc: USDC_ADDRESS,
    name: await read("name"),
    version: await read("version"),
    decimals: Number(await read("decimals")),
    multicall3: MULTICALL3_ADDRESS,
    mintTo: mintTo ?? null,
    balance: mintTo ? (await read("balanceOf", [mintTo])).toString() : null,
  };
}

/** TestUSDC balance of `of` as a bigint. */
export async function usdcBalance(rpc, of) {
  const { abi } = loadTestUsdc();
  return publicClientFor(rpc).readContract({ address: USDC_ADDRESS, abi, functionName: "balanceOf", args: [of] });
}

/** Parses `--name value` pairs (and bare `--flag` as true). */
export function parseArgs(argv) {
  const out = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) {
      out._.push(a);
      continue;
    }
    const next = argv[i + 1];
    if (next === undefined || next.startsWith("--")) out[a.slice(2)] = true;
    else out[a.slice(2)] = argv[++i];
  }
  return out;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const [cmd] = args._;
  if (!args.rpc || (cmd !== "setup" && cmd !== "balance")) {
    console.error("usage: chain.mjs setup --rpc URL [--mint-to 0xaddr --amount N] [--key 0x..]");
    console.error("       chain.mjs balance --rpc URL --of 0xaddr");
    process.exit(64);
  }
  if (cmd === "setup") {
    const out = await setupUsdc({ rpc: args.rpc, mintTo: args["mint-to"], amount: args.amount, key: args.key });
    console.log(JSON.stringify(out));
  } else {
    const balance = await usdcBalance(args.rpc, args.of);
    console.log(JSON.stringify({ usdc: USDC_ADDRESS, of: args.of, balance: balance.toString() }));
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((e) => {
    console.error(e?.stack ?? String(e));
    process.exit(1);
  });
}
