// One paid HTTP request made by an OFFICIAL, unmodified x402 client.
//
//   node tests/interop/pay.mjs --client v2|v1 --key 0x<payer key> --url <url>
//                              [--method GET|POST] [--body '<json>'] [--rpc URL] [--max-value N]
//                              [--allow-assets] [--transfer-method eip3009|permit2]
//                              [--upto] [--scheme exact|upto] [--asset 0xTOKEN]
//                              [--payment-id <id>|auto] [--replay N]          (v2 only)
//                              [--siwx] [--no-pay] [--siwx-header-only]       (v2 only)
//
//   v2: @x402/fetch wrapFetchWithPayment + x402Client with @x402/evm's exact client scheme
//       (registerExactEvmScheme: eip155:* for v2, and every v1 EVM network name) signing with a
//       viem privateKeyToAccount local account. Signing is offline; no RPC is used.
//       --upto also registers @x402/evm's upto client scheme (UptoEvmScheme, Permit2) for eip155:*;
//       it signs a ceiling of `amount` for the facilitator named in extra.facilitatorAddress.
//       --scheme keeps only the offered requirements with that scheme (a client policy, like
//       --transfer-method), so a 402 offering both exact and upto can be paid either way.
//       --bearer KEY sends `Authorization: Bearer KEY` (the buyer's account, e.g. for POST /top-up).
//       --asset keeps only the requirements paid in that token (the one the buyer holds).
//       --payment-id adds an x402 `payment-identifier` id the way @x402/extensions documents it:
//       an onBeforePaymentCreation hook calling appendPaymentIdentifierToExtensions(
//       paymentRequired.extensions, id), which core then echoes into the PaymentPayload as
//       extensions["payment-identifier"].info.id. `auto` uses the package's generatePaymentId()
//       ("pay_" + 32 hex). Like the official client, the id is only added when the 402 declares
//       extensions["payment-identifier"]; an invalid id (not 16-128 chars of [A-Za-z0-9_-]) then
//       makes the library throw.
//       --replay N: after the paid request, re-sends N times the very same request (method, URL,
//       body, headers) with the exact PAYMENT-SIGNATURE the client sent the first time, captured
//       by wrapping the fetch given to wrapFetchWithPayment; replays go out unwrapped (no re-pay).
//       If the client sent no PAYMENT-SIGNATURE (e.g. it got through by --siwx), the request it
//       sent with SIGN-IN-WITH-X is replayed instead.
//       --siwx signs in with the payer's wallet the way @x402/extensions/sign-in-with-x documents
//       it: client.registerExtension(createSIWxClientExtension({ signers: [account] })). When a 402
//       declares extensions["sign-in-with-x"], wrapFetchWithPayment first runs that extension's
//       onPaymentRequired hook and re-sends the request with a SIGN-IN-WITH-X header (base64 JSON
//       of the signed CAIP-122/SIWE payload, EIP-191 personal_sign) and NO payment; a non-402
//       answer is returned as is. If that answer is 402 again the library goes on and pays the
//       FIRST 402's requirements (request without SIGN-IN-WITH-X). It signs only if the challenge
//       is bound to the request origin (info.domain == host, info.uri same origin) and
//       supportedChains has an eip191 chain; otherwise it silently skips sign-in and pays.
//       The line gains "siwx" (decoded payload it sent, or null), "siwxStatus" (the answer's
//       status, or null) and "paid" (whether it sent a PAYMENT-SIGNATURE).
//       --no-pay registers NO payment scheme, so the only way through is sign-in. Where the
//       library would pay it throws instead ("Failed to create payment payload: ..."); pay.mjs
//       then prints the last answer the server gave (the 402), with "unpaid": <that message>,
//       and exits 0.
//       --siwx-header-only sends the request once (unwrapped), and, for the 402 it gets, prints
//       {"header": <SIGN-IN-WITH-X value>, "payload": <decoded>, "message": <the SIWE text that
//       was signed>} as built by the same official client hook, without sending it. If the
//       answer is not a 402 or the client builds no header: {"error"} and exit 2.
//   v1: x402-fetch (1.2.0) wrapFetchWithPayment with a viem wallet client on chain baseSepolia,
//       as in its README. It only signs (no RPC call); --rpc just sets the transport URL.
//       --max-value overrides x402-fetch's cap (default 100000 = 0.10 USDC).
//
// stdout: exactly one JSON line {"status":<int>,"headers":{<lowercased name>:<value>},"body":"<text>"}
//         for the answer the client returned (the paid one, or the one to its sign-in); with
//         --payment-id it also has "paymentId": the id the client actually sent (decoded from its
//         PAYMENT-SIGNATURE; null if none was sent); with --replay it also has
//         "replays":[{"status","headers","body"}, ...] (one per replay, in order); with --siwx it
//         also has "siwx", "siwxStatus" and "paid"; with --no-pay possibly "unpaid" (see above).
//         --siwx-header-only prints {"header","payload","message"} instead.
// exit 0 for any HTTP status; if the client library throws: {"error":"<message>"} and exit 2.
import { decodePaymentSignatureHeader, x402HTTPClient } from "@x402/core/http";
import { registerExactEvmScheme } from "@x402/evm/exact/client";
import { UptoEvmScheme } from "@x402/evm/upto/client";
import {
  appendPaymentIdentifierToExtensions,
  generatePaymentId,
  PAYMENT_IDENTIFIER,
} from "@x402/extensions/payment-identifier";
import {
  createSIWxClientExtension,
  createSIWxMessage,
  parseSIWxHeader,
  SIGN_IN_WITH_X,
} from "@x402/extensions/sign-in-with-x";
import { wrapFetchWithPayment as wrapFetchV2, x402Client } from "@x402/fetch";
import { createWalletClient, http } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { baseSepolia } from "viem/chains";
import { wrapFetchWithPayment as wrapFetchV1 } from "x402-fetch";
import { parseArgs } from "./chain.mjs";

const args = parseArgs(process.argv.slice(2));
const V2_ONLY = ["payment-id", "replay", "siwx", "no-pay", "siwx-header-only"];
if (
  !["v1", "v2"].includes(args.client) ||
  !args.key ||
  !args.url ||
  (args.scheme !== undefined && !["exact", "upto"].includes(args.scheme)) ||
  (args.client !== "v2" && V2_ONLY.some((flag) => args[flag] !== undefined)) ||
  (args["payment-id"] !== undefined && typeof args["payment-id"] !== "string") ||
  (args.replay !== undefined && !/^[0-9]+$/.test(String(args.replay))) ||
  (args["no-pay"] !== undefined && args.upto !== undefined)
) {
  console.error("usage: pay.mjs --client v2|v1 --key 0xKEY --url URL [--method GET|POST] [--body JSON] [--rpc URL] [--max-value N] [--allow-assets] [--transfer-method eip3009|permit2] [--upto] [--scheme exact|upto] [--asset 0xTOKEN] [--bearer KEY] [--payment-id ID|auto] [--replay N] [--siwx] [--no-pay] [--siwx-header-only]");
  console.error("       (--payment-id, --replay, --siwx, --no-pay, --siwx-header-only: --client v2 only; --no-pay excludes --upto)");
  process.exit(64);
}
const replayCount = args.replay !== undefined ? Number(args.replay) : 0;
const noPay = args["no-pay"] !== undefined;

// The first request the v2 client sent with a PAYMENT-SIGNATURE header, and the first one it sent
// with a SIGN-IN-WITH-X header, kept unconsumed (clones) so --replay can send them again byte for
// byte; the status of the answer to the latter; and, with --no-pay, a clone of the last answer.
let firstPaidRequest;
let firstSiwxRequest;
let siwxStatus = null;
let lastAnswer;
async function capturingFetch(input, init) {
  const request = new Request(input, init);
  const paid = request.headers.has("payment-signature");
  const siwx = request.headers.has(SIGN_IN_WITH_X);
  if (paid && firstPaidRequest === undefined) firstPaidRequest = request.clone();
  if (siwx && firstSiwxRequest === undefined) firstSiwxRequest = request.clone();
  const response = await fetch(request);
  if (siwx && !paid && siwxStatus === null) siwxStatus = response.status;
  if (noPay) lastAnswer = response.clone();
  return response;
}

function v2Client(account) {
  const client = new x402Client();
  // --siwx: the package's client extension; core's x402HTTPClient runs its onPaymentRequired
  // transport hook for every 402 that declares extensions["sign-in-with-x"].
  if (args.siwx !== undefined || args["siwx-header-only"] !== undefined) {
    client.registerExtension(createSIWxClientExtension({ signers: [account] }));
  }
  if (noPay) return client;
  registerExactEvmScheme(client, { signer: account });
  if (args.upto !== undefined) client.register("eip155:*", new UptoEvmScheme(account));
  // Buyer configuration through the client's public API: pay tokens other than the network's
  // default stablecoin, and prefer one transfer method when several are offered.
  if (args["allow-assets"] !== undefined) client.setSpendControls({ allowedAssets: true });
  if (args["transfer-method"] !== undefined) {
    const want = args["transfer-method"];
    client.registerPolicy((_version, reqs) =>
      reqs.filter((r) => (r.extra?.assetTransferMethod ?? "eip3009") === want),
    );
  }
  if (args.asset !== undefined) {
    // The token the buyer holds: keep only the requirements paid in it.
    const want = args.asset.toLowerCase();
    client.registerPolicy((_version, reqs) => reqs.filter((r) => r.asset.toLowerCase() === want));
  }
  if (args.scheme !== undefined) {
    const want = args.scheme;
    client.registerPolicy((_version, reqs) => reqs.filter((r) => r.scheme === want));
  }
  if (args["payment-id"] !== undefined) {
    const id = args["payment-id"] === "auto" ? generatePaymentId() : args["payment-id"];
    // As in x402's payment-identifier client example: a no-op unless the 402 declared the
    // extension; core merges the server's declaration with the client's info.id.
    client.onBeforePaymentCreation(async ({ paymentRequired }) => {
      if (paymentRequired.extensions) appendPaymentIdentifierToExtensions(paymentRequired.extensions, id);
    });
  }
  return client;
}

function payingFetch() {
  const account = privateKeyToAccount(args.key);
  if (args.client === "v2") return wrapFetchV2(capturingFetch, v2Client(account));
  const wallet = createWalletClient({ account, chain: baseSepolia, transport: http(args.rpc) });
  const maxValue = args["max-value"] !== undefined ? BigInt(args["max-value"]) : undefined;
  return wrapFetchV1(fetch, wallet, maxValue);
}

function requestInit() {
  const init = { method: args.method ?? (args.body !== undefined ? "POST" : "GET") };
  init.headers = {};
  if (args.body !== undefined) {
    init.body = args.body;
    init.headers["content-type"] = "application/json";
  }
  // --bearer: the buyer's account at the seller (a top-up credits it).
  if (args.bearer !== undefined) init.headers.authorization = `Bearer ${args.bearer}`;
  return init;
}

// --siwx-header-only: the SIGN-IN-WITH-X value the official client would send for this 402, built
// by the very code path wrapFetchWithPayment uses (x402HTTPClient.handlePaymentRequired with the
// registered extension, requestUrl = response.url), but not sent.
async function siwxHeaderOnly() {
  const response = await fetch(args.url, requestInit());
  const text = await response.text();
  if (response.status !== 402) throw new Error(`expected a 402, got ${response.status}`);
  let body;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {}
  const httpClient = new x402HTTPClient(v2Client(privateKeyToAccount(args.key)));
  const paymentRequired = httpClient.getPaymentRequiredResponse((name) => response.headers.get(name), body);
  const headers = await httpClient.handlePaymentRequired(paymentRequired, response.url || args.url);
  const header = headers?.[SIGN_IN_WITH_X];
  if (!header) throw new Error("the official client built no SIGN-IN-WITH-X header for this 402");
  const payload = parseSIWxHeader(header);
  const message = createSIWxMessage(payload, payload.address);
  return { header, payload, message };
}

async function main() {
  if (args["siwx-header-only"] !== undefined) {
    process.stdout.write(`${JSON.stringify(await siwxHeaderOnly())}\n`);
    return;
  }
  let out;
  try {
    out = await answer(await payingFetch()(args.url, requestInit()));
  } catch (e) {
    // --no-pay: the library reached the point where it would pay; report the 402 it got instead.
    const msg = e instanceof Error ? e.message : String(e);
    if (!noPay || lastAnswer === undefined || !msg.startsWith("Failed to create payment payload")) throw e;
    out = { ...(await answer(lastAnswer)), unpaid: msg };
  }
  if (args["payment-id"] !== undefined) {
    const sent = firstPaidRequest && decodePaymentSignatureHeader(firstPaidRequest.headers.get("payment-signature"));
    out.paymentId = sent?.extensions?.[PAYMENT_IDENTIFIER]?.info?.id ?? null;
  }
  if (args.siwx !== undefined) {
    out.siwx = firstSiwxRequest ? parseSIWxHeader(firstSiwxRequest.headers.get(SIGN_IN_WITH_X)) : null;
    out.siwxStatus = siwxStatus;
    out.paid = firstPaidRequest !== undefined;
  }
  if (args.replay !== undefined) {
    const original = firstPaidRequest ?? firstSiwxRequest;
    if (replayCount > 0 && original === undefined) {
      throw new Error("--replay: the client sent no PAYMENT-SIGNATURE or SIGN-IN-WITH-X request to replay");
    }
    out.replays = [];
    for (let i = 0; i < replayCount; i++) out.replays.push(await answer(await fetch(original.clone())));
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

async function answer(res) {
  const headers = {};
  res.headers.forEach((value, name) => {
    headers[name.toLowerCase()] = value;
  });
  const body = await res.text();
  return { status: res.status, headers, body };
}

main().catch((e) => {
  console.error(e?.stack ?? String(e));
  process.stdout.write(`${JSON.stringify({ error: e instanceof Error ? e.message : String(e) })}\n`);
  process.exit(2);
});
