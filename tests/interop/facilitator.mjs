// The OFFICIAL x402 facilitator (x402Facilitator from @x402/core + the exact- and upto-EVM
// facilitator schemes from @x402/evm, unmodified) served over plain node:http against a local
// chain (anvil, id 84532).
//
//   node tests/interop/facilitator.mjs --rpc http://127.0.0.1:PORT --key 0x<settler key> [--port 0]
//                                      [--host 127.0.0.1] [--ignore-stdin]
//
// Registers x402 v2 `exact` and `upto` on eip155:84532 and x402 v1 `exact` on base-sepolia.
// `upto` (Permit2 only) settles through the x402UptoPermit2Proxy at 0x4020A4f3…0002 and
// advertises the settler in /supported as extra.facilitatorAddress (payers sign it into the
// witness, and the proxy accepts settle() only from that address).
//   POST /verify, POST /settle  body {x402Version, paymentPayload, paymentRequirements}
//        -> 200 + what the facilitator returned (isValid:false / success:false included)
//        -> 400 {error} for a body that is not JSON or lacks paymentPayload/paymentRequirements objects
//        -> 500 {error} when the facilitator throws
//   GET /supported -> 200 facilitator.getSupported()
// stdout: exactly one line `LISTENING <port>` once ready; everything else goes to stderr.
// Exits on SIGTERM/SIGINT and when stdin closes (so a spawning test never leaves an orphan);
// --ignore-stdin disables the latter for manual runs in the background.
import { createServer } from "node:http";
import { x402Facilitator } from "@x402/core/facilitator";
import { toFacilitatorEvmSigner } from "@x402/evm";
import { ExactEvmScheme } from "@x402/evm/exact/facilitator";
import { ExactEvmSchemeV1 } from "@x402/evm/exact/v1/facilitator";
import { UptoEvmScheme } from "@x402/evm/upto/facilitator";
import { createWalletClient, http, publicActions } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { localChain, parseArgs } from "./chain.mjs";

const log = (...a) => console.error("[facilitator]", ...a);
const args = parseArgs(process.argv.slice(2));
if (!args.rpc || !args.key) {
  log("usage: facilitator.mjs --rpc URL --key 0xPRIVATEKEY [--port 0] [--host 127.0.0.1] [--ignore-stdin]");
  process.exit(64);
}

// viem wallet client + public actions for the custom chain; the facilitator pays the gas from it.
const account = privateKeyToAccount(args.key);
const client = createWalletClient({
  account,
  chain: localChain(args.rpc),
  transport: http(args.rpc),
  pollingInterval: 100, // anvil automines; do not sit in viem's default 4 s receipt poll
}).extend(publicActions);

// The FacilitatorEvmSigner shape, as in the official examples (toFacilitatorEvmSigner adds
// getAddresses() and the 180 s receipt timeout).
const signer = toFacilitatorEvmSigner({
  address: account.address,
  getCode: (a) => client.getCode(a),
  readContract: (a) => client.readContract({ ...a, args: a.args ?? [] }),
  verifyTypedData: (a) => client.verifyTypedData(a),
  writeContract: (a) => client.writeContract({ ...a, args: a.args ?? [] }),
  sendTransaction: (a) => client.sendTransaction(a),
  waitForTransactionReceipt: (a) => client.waitForTransactionReceipt(a),
});

const facilitator = new x402Facilitator()
  .register("eip155:84532", new ExactEvmScheme(signer))
  .register("eip155:84532", new UptoEvmScheme(signer))
  .registerV1("base-sepolia", new ExactEvmSchemeV1(signer));

// bigint-safe JSON (the official responses are plain JSON, but be defensive).
const json = (res, status, body) => {
  const text = JSON.stringify(body, (_, v) => (typeof v === "bigint" ? v.toString() : v));
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
};

const readBody = (req) =>
  new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });

const isObject = (v) => typeof v === "object" && v !== null && !Array.isArray(v);

async function handle(req, res) {
  const path = new URL(req.url, "http://x").pathname;
  if (req.method === "GET" && path === "/supported") return json(res, 200, facilitator.getSupported());
  if (req.method !== "POST" || (path !== "/verify" && path !== "/settle")) {
    return json(res, 404, { error: `no route ${req.method} ${path}` });
  }
  let body;
  try {
    body = JSON.parse(await readBody(req));
  } catch (e) {
    return json(res, 400, { error: `invalid JSON body: ${e.message}` });
  }
  if (!isObject(body) || !isObject(body.paymentPayload) || !isObject(body.paymentRequirements)) {
    return json(res, 400, { error: "Missing paymentPayload or paymentRequirements" });
  }
  const { paymentPayload, paymentRequirements } = body;
  try {
    const result =
      path === "/verify"
        ? await facilitator.verify(paymentPayload, paymentRequirements)
        : await facilitator.settle(paymentPayload, paymentRequirements);
    log(path, JSON.stringify(result));
    return json(res, 200, result);
  } catch (e) {
    log(path, "threw:", e?.stack ?? String(e));
    return json(res, 500, { error: e instanceof Error ? e.message : String(e) });
  }
}

const server = createServer((req, res) => {
  handle(req, res).catch((e) => {
    log("handler crashed:", e?.stack ?? String(e));
    if (!res.headersSent) json(res, 500, { error: String(e?.message ?? e) });
  });
});

const shutdown = (why) => {
  log(`exiting (${why})`);
  server.close();
  process.exit(0);
};
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
if (!args["ignore-stdin"]) {
  process.stdin.on("end", () => shutdown("stdin closed"));
  process.stdin.on("close", () => shutdown("stdin closed"));
  process.stdin.on("error", () => shutdown("stdin error"));
  process.stdin.resume();
}

server.listen(Number(args.port ?? 0), args.host ?? "127.0.0.1", () => {
  const { port } = server.address();
  log(`settler ${account.address}, rpc ${args.rpc}`);
  process.stdout.write(`LISTENING ${port}\n`);
});
