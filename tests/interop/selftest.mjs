// End-to-end self-test of the interop tooling: anvil (chain 84532) + TestUSDC at the Base Sepolia
// USDC address + facilitator.mjs (official facilitator) + a minimal hand-written resource server
// + pay.mjs (official clients, v2 and v1). Exits 0 when every check passes, 1 otherwise.
//
//   node tests/interop/selftest.mjs [--verbose]
//
// The resource server here is throwaway test scaffolding, NOT a model for tariff:
//   /v2/*       402 + PAYMENT-REQUIRED header; retry with PAYMENT-SIGNATURE -> verify + settle
//               -> 200 + PAYMENT-RESPONSE (base64 settle response)
//   /v1/*       402 + JSON body (x402Version 1); retry with X-PAYMENT -> verify + settle
//               -> 200 + X-PAYMENT-RESPONSE
//   /v1null/*   the same, but with `outputSchema: null` in the requirements
//   /v2/quote-mismatch  like /v2, but the requirements sent to the facilitator carry another quoteId
//   ?amount=N   overrides the price (atomic units) on any path
// Every decoded payment header the server receives is kept and printed with --verbose.
import { spawn, execFile } from "node:child_process";
import { createServer } from "node:http";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual, promisify } from "node:util";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import {
  ANVIL_KEYS,
  USDC_ADDRESS,
  freePort,
  parseArgs,
  publicClientFor,
  setupUsdc,
  startAnvil,
  usdcBalance,
} from "./chain.mjs";

const HERE = fileURLToPath(new URL(".", import.meta.url));
const args = parseArgs(process.argv.slice(2));
const PRICE = "20000";
const QUOTE_ID = "q_0123456789abcdef0123456789abcdef";
const payTo = privateKeyToAccount(ANVIL_KEYS[1]).address;
const settlerKey = ANVIL_KEYS[2];
// A fresh payer with USDC but no ETH: EIP-3009 payments are gasless for the payer.
const payerKey = generatePrivateKey();
const payer = privateKeyToAccount(payerKey).address;

const b64 = (obj) => Buffer.from(JSON.stringify(obj), "utf8").toString("base64");
const unb64 = (s) => JSON.parse(Buffer.from(s, "base64").toString("utf8"));
const log = (...a) => console.error("[selftest]", ...a);

let failures = 0;
function check(name, ok, detail) {
  console.log(`${ok ? "ok  " : "FAIL"} ${name}${!ok && detail !== undefined ? ` -- ${JSON.stringify(detail)}` : ""}`);
  if (!ok) failures++;
}

// ------------------------------------------------------------------ processes
const children = [];
function cleanup() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGTERM");
}
process.on("exit", cleanup);
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(1));

/** Spawns facilitator.mjs with a piped stdin (its lifeline) and waits for `LISTENING <port>`. */
async function startFacilitator(rpc) {
  const proc = spawn(process.execPath, [`${HERE}facilitator.mjs`, "--rpc", rpc, "--key", settlerKey, "--port", "0"], {
    stdio: ["pipe", "pipe", args.verbose ? "inherit" : "ignore"],
  });
  children.push(proc);
  const lines = createInterface({ input: proc.stdout });
  const first = await new Promise((resolve, reject) => {
    lines.once("line", resolve);
    proc.once("exit", (code) => reject(new Error(`facilitator exited early (${code})`)));
  });
  const m = /^LISTENING (\d+)$/.exec(first);
  if (!m) throw new Error(`unexpected facilitator stdout: ${first}`);
  return { proc, url: `http://127.0.0.1:${m[1]}` };
}

/** Runs pay.mjs and parses its single stdout line. */
async function pay(client, url, extra = []) {
  const run = promisify(execFile);
  const argv = [`${HERE}pay.mjs`, "--client", client, "--key", payerKey, "--url", url, ...extra];
  try {
    const { stdout } = await run(process.execPath, argv);
    return { code: 0, out: JSON.parse(stdout) };
  } catch (e) {
    return { code: e.code, out: e.stdout ? JSON.parse(e.stdout) : null, stderr: e.stderr };
  }
}

// ------------------------------------------------------------------ resource server
function startResourceServer(facilitatorUrl, rpc) {
  const seen = []; // {version, header, decoded, requirements, verify, settle}
  const post = async (path, body) => {
    const res = await fetch(`${facilitatorUrl}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: await res.json() };
  };

  const server = createServer(async (req, res) => {
    const origin = `http://${req.headers.host}`;
    const url = new URL(req.url, origin);
    const v1 = url.pathname.startsWith("/v1");
    const amount = url.searchParams.get("amount") ?? PRICE; // to probe the clients' spend caps
    const v2Req = {
      scheme: "exact",
      network: "eip155:84532",
      amount,
      asset: USDC_ADDRESS,
      payTo,
      maxTimeoutSeconds: 300,
      extra: { name: "USDC", version: "2", quoteId: QUOTE_ID },
    };
    const v1Req = {
      scheme: "exact",
      network: "base-sepolia",
      maxAmountRequired: amount,
      resource: url.href,
      description: "selftest resource",
      mimeType: "application/json",
      payTo,
      maxTimeoutSeconds: 300,
      asset: USDC_ADDRESS,
      extra: { name: "USDC", version: "2", quoteId: QUOTE_ID },
      ...(url.pathname.startsWith("/v1null") ? { outputSchema: null } : {}),
    };
    let requirements = v1 ? v1Req : v2Req;
    const header = v1 ? req.headers["x-payment"] : req.headers["payment-signature"];
    const send = (status, headers, body) => {
      res.writeHead(status, { "content-type": "application/json", ...headers });
      res.end(JSON.stringify(body));
    };
    if (!header) {
      if (v1) return send(402, {}, { x402Version: 1, error: "X-PAYMENT header is required", accepts: [v1Req] });
      const paymentRequired = {
        x402Version: 2,
        error: "PAYMENT-SIGNATURE header is required",
        resource: { url: url.href, description: "selftest resource", mimeType: "application/json" },
        accepts: [v2Req],
      };
      return send(402, { "PAYMENT-REQUIRED": b64(paymentRequired) }, {});
    }
    if (url.pathname === "/v2/quote-mismatch") {
      requirements = { ...v2Req, extra: { ...v2Req.extra, quoteId: "q_not_the_one_offered" } };
    }
    const entry = { version: v1 ? 1 : 2, path: url.pathname, header, decoded: unb64(header), requirements, method: req.method };
    seen.push(entry);
    const request = { x402Version: v1 ? 1 : 2, paymentPayload: entry.decoded, paymentRequirements: requirements };
    entry.verify = await post("/verify", request);
    if (!entry.verify.body.isValid) return send(402, {}, { error: "verify failed", verify: entry.verify.body });
    if (url.pathname === "/v2/slow") {
      // Hold mining back while the facilitator settles, then mine one block 1.5 s later.
      const pub = publicClientFor(rpc);
      await pub.request({ method: "evm_setAutomine", params: [false] });
      setTimeout(async () => {
        await pub.request({ method: "evm_mine", params: [] });
        await pub.request({ method: "evm_setAutomine", params: [true] });
      }, 1500);
    }
    const t0 = Date.now();
    entry.settle = await post("/settle", request);
    entry.settleMs = Date.now() - t0;
    const responseHeader = v1 ? "X-PAYMENT-RESPONSE" : "PAYMENT-RESPONSE";
    if (!entry.settle.body.success) return send(402, { [responseHeader]: b64(entry.settle.body) }, {});
    send(200, { [responseHeader]: b64(entry.settle.body) }, { paid: true, quoteId: QUOTE_ID });
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => resolve({ server, seen, url: `http://127.0.0.1:${server.address().port}` }));
  });
}

// ------------------------------------------------------------------ the test
async function main() {
  const anvil = await startAnvil({ port: await freePort() });
  children.push(anvil.proc);
  const setup = await setupUsdc({ rpc: anvil.rpc, mintTo: payer, amount: 1_000_000 });
  check("TestUSDC at Base Sepolia USDC address, minted to payer", setup.balance === "1000000", setup);

  const fac = await startFacilitator(anvil.rpc);
  const supported = await (await fetch(`${fac.url}/supported`)).json();
  log("/supported", JSON.stringify(supported));
  check(
    "/supported lists v2 eip155:84532 and v1 base-sepolia",
    supported.kinds.some((k) => k.x402Version === 2 && k.network === "eip155:84532") &&
      supported.kinds.some((k) => k.x402Version === 1 && k.network === "base-sepolia"),
    supported,
  );
  const bad = await fetch(`${fac.url}/verify`, { method: "POST", body: "not json" });
  check("facilitator: malformed body -> 400", bad.status === 400, await bad.text());

  const rs = await startResourceServer(fac.url, anvil.rpc);

  // ---- v2 happy path
  let before = await usdcBalance(anvil.rpc, payTo);
  const r2 = await pay("v2", `${rs.url}/v2/item?x=1`);
  const s2 = rs.seen.at(-1);
  check("v2: pay.mjs exit 0, HTTP 200", r2.code === 0 && r2.out?.status === 200, r2);
  check("v2: payTo balance grew by exactly 20000", (await usdcBalance(anvil.rpc, payTo)) - before === 20000n);
  check("v2: PAYMENT-RESPONSE decodes to success", unb64(r2.out?.headers?.["payment-response"] ?? "e30=").success === true, r2.out?.headers);
  check("v2: accepted is a verbatim copy of accepts[0] (incl. extra.quoteId)", isDeepStrictEqual(s2?.decoded?.accepted, s2?.requirements), s2?.decoded);
  check("v2: verify isValid, settle success", s2?.verify?.body?.isValid === true && s2?.settle?.body?.success === true, s2);
  const now = Math.floor(Date.now() / 1000);
  const auth2 = s2?.decoded?.payload?.authorization ?? {};
  log(`v2 time window: validAfter=${auth2.validAfter} validBefore=${auth2.validBefore} (now ~${now}, maxTimeoutSeconds 300)`);

  // ---- failures, straight against the facilitator
  const replay = { x402Version: 2, paymentPayload: s2.decoded, paymentRequirements: s2.requirements };
  const post = async (path, body) => (await fetch(`${fac.url}${path}`, { method: "POST", body: JSON.stringify(body) })).json();
  const replayVerify = await post("/verify", replay);
  const replaySettle = await post("/settle", replay);
  log("replayed /verify ->", JSON.stringify(replayVerify));
  log("replayed /settle ->", JSON.stringify(replaySettle));
  check("replayed payment: verify isValid false", replayVerify.isValid === false, replayVerify);
  check("replayed payment: settle success false", replaySettle.success === false, replaySettle);
  const cheaper = { ...replay, paymentRequirements: { ...s2.requirements, amount: "19999" } };
  const mismatch = await post("/verify", cheaper);
  log("amount mismatch /verify ->", JSON.stringify(mismatch));
  check("amount mismatch: verify isValid false", mismatch.isValid === false, mismatch);
  const otherQuote = { ...replay, paymentRequirements: { ...s2.requirements, extra: { name: "USDC", version: "2", quoteId: "q_other" } } };
  const quoteOnly = await post("/verify", otherQuote);
  log("different extra.quoteId (replayed nonce) /verify ->", JSON.stringify(quoteOnly));

  // ---- the facilitator does not compare `accepted` with the requirements beyond scheme/network
  before = await usdcBalance(anvil.rpc, payTo);
  const rq = await pay("v2", `${rs.url}/v2/quote-mismatch`);
  check(
    "facilitator accepts requirements whose extra.quoteId differs from accepted's (server must bind quotes itself)",
    rq.out?.status === 200 && rs.seen.at(-1).verify.body.isValid === true && (await usdcBalance(anvil.rpc, payTo)) - before === 20000n,
    rs.seen.at(-1).verify,
  );

  // ---- v1 happy path (outputSchema omitted)
  before = await usdcBalance(anvil.rpc, payTo);
  const r1 = await pay("v1", `${rs.url}/v1/item?x=1`);
  const s1 = rs.seen.at(-1);
  check("v1: pay.mjs exit 0, HTTP 200", r1.code === 0 && r1.out?.status === 200, r1);
  check("v1: payTo balance grew by exactly 20000", (await usdcBalance(anvil.rpc, payTo)) - before === 20000n);
  check("v1: X-PAYMENT-RESPONSE decodes to success", unb64(r1.out?.headers?.["x-payment-response"] ?? "e30=").success === true, r1.out?.headers);
  check("v1: verify isValid, settle success", s1?.version === 1 && s1?.verify?.body?.isValid === true && s1?.settle?.body?.success === true, s1);

  // ---- v1 with outputSchema: null (finding: x402-fetch's zod schema rejects null)
  const rNull = await pay("v1", `${rs.url}/v1null/item`);
  log("v1 with outputSchema:null ->", JSON.stringify(rNull.out));
  check("v1: outputSchema null is rejected by x402-fetch 1.2.0 (exit 2)", rNull.code === 2, rNull.out);

  // ---- client-side spend caps: x402-fetch maxValue defaults to 100000 (0.10 USDC);
  // @x402/core's x402Client spendControls default to $1 (1000000 atomic USDC) on default assets.
  const v1Cap = await pay("v1", `${rs.url}/v1/item?amount=100001`);
  log("v1 asked 100001 ->", JSON.stringify(v1Cap.out));
  check("v1: 100001 > default maxValue -> client throws (exit 2)", v1Cap.code === 2, v1Cap.out);
  const v2Cap = await pay("v2", `${rs.url}/v2/item?amount=1000001`);
  log("v2 asked 1000001 ->", JSON.stringify(v2Cap.out));
  check("v2: 1000001 > $1 default spend cap -> client throws (exit 2)", v2Cap.code === 2, v2Cap.out);
  before = await usdcBalance(anvil.rpc, payTo);
  const v2AtCap = await pay("v2", `${rs.url}/v2/item?amount=1000000`);
  // The payer has already spent 40000 of its 1000000, so this must fail at verify (insufficient balance).
  log("v2 asked 1000000 (more than the payer holds) ->", JSON.stringify(v2AtCap.out), JSON.stringify(rs.seen.at(-1).verify));
  check("v2: amount above payer balance -> server got isValid false", v2AtCap.out?.status === 402 && rs.seen.at(-1).verify.body.isValid === false);

  // ---- v2 client also pays v1 402 bodies (registerExactEvmScheme registers v1 networks too)
  before = await usdcBalance(anvil.rpc, payTo);
  const r21 = await pay("v2", `${rs.url}/v1/item?x=2`);
  check("v2 client pays a v1 402 with X-PAYMENT", r21.code === 0 && r21.out?.status === 200 && rs.seen.at(-1).version === 1, r21);
  check("v2 client on v1: balance +20000", (await usdcBalance(anvil.rpc, payTo)) - before === 20000n);

  // ---- settle waits for the receipt: the server turns automine off and mines by hand 1.5 s later
  const rSlow = await pay("v2", `${rs.url}/v2/slow`);
  const sSlow = rs.seen.at(-1);
  check("settle blocks until the tx is mined (>= 1 s with manual mining)", rSlow.out?.status === 200 && sSlow.settleMs >= 1000, { status: rSlow.out?.status, settleMs: sSlow.settleMs });

  // ---- stdin lifeline: closing the facilitator's stdin makes it exit
  const exited = new Promise((r) => fac.proc.once("exit", (code) => r(code)));
  fac.proc.stdin.end();
  const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r("timeout"), 3000))]);
  check("facilitator exits when stdin closes", code === 0, code);

  if (args.verbose) {
    for (const s of rs.seen) {
      console.error(`--- ${s.method} ${s.path} (v${s.version}) payment header decoded:`);
      console.error(JSON.stringify(s.decoded, null, 1));
      console.error("verify:", JSON.stringify(s.verify), "settle:", JSON.stringify(s.settle), `(${s.settleMs} ms)`);
    }
  }
  rs.server.close();
  await anvil.stop();
  console.log(failures === 0 ? "selftest: all checks passed" : `selftest: ${failures} check(s) FAILED`);
  process.exit(failures === 0 ? 0 : 1);
}

main().catch((e) => {
  console.error(e?.stack ?? String(e));
  process.exit(1);
});
