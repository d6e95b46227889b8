// One paid HTTP request made by an OFFICIAL, unmodified x402 client.
//
//   node tests/interop/pay.mjs --client v2|v1 --key 0x<payer key> --url <url>
//                              [--method GET|POST] [--body '<json>'] [--rpc URL] [--max-value N]
//                              [--allow-assets] [--transfer-method eip3009|permit2]
//                              [--upto] [--scheme exact|upto]
//                              [--payment-id <id>|auto] [--replay N]          (v2 only)
//
//   v2: @x402/fetch wrapFetchWithPayment + x402Client with @x402/evm's exact client scheme
//       (registerExactEvmScheme: eip155:* for v2, and every v1 EVM network name) signing with a
//       viem privateKeyToAccount local account. Signing is offline; no RPC is used.
//       --upto also registers @x402/evm's upto client scheme (UptoEvmScheme, Permit2) for eip155:*;
//       it signs a ceiling of `amount` for the facilitator named in extra.facilitatorAddress.
//       --scheme keeps only the offered requirements with that scheme (a client policy, like
//       --transfer-method), so a 402 offering both exact and upto can be paid either way.
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
//   v1: x402-fetch (1.2.0) wrapFetchWithPayment with a viem wallet client on chain baseSepolia,
//       as in its README. It only signs (no RPC call); --rpc just sets the transport URL.
//       --max-value overrides x402-fetch's cap (default 100000 = 0.10 USDC).
//
// stdout: exactly one JSON line {"status":<int>,"headers":{<lowercased name>:<value>},"body":"<text>"}
//         for the (first) paid answer; with --payment-id it also has "paymentId": the id the client
//         actually sent (decoded from its PAYMENT-SIGNATURE; null if none was sent); with --replay
//         it also has "replays":[{"status","headers","body"}, ...] (one per replay, in order).
// exit 0 for any HTTP status; if the client library throws: {"error":"<message>"} and exit 2.
import { decodePaymentSignatureHeader } from "@x402/core/http";
import { registerExactEvmScheme } from "@x402/evm/exact/client";
import { UptoEvmScheme } from "@x402/evm/upto/client";
import {
  appendPaymentIdentifierToExtensions,
  generatePaymentId,
  PAYMENT_IDENTIFIER,
} from "@x402/extensions/payment-identifier";
import { wrapFetchWithPayment as wrapFetchV2, x402Client } from "@x402/fetch";
import { createWalletClient, http } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { baseSepolia } from "viem/chains";
import { wrapFetchWithPayment as wrapFetchV1 } from "x402-fetch";
import { parseArgs } from "./chain.mjs";

const args = parseArgs(process.argv.slice(2));
if (
  !["v1", "v2"].includes(args.client) ||
  !args.key ||
  !args.url ||
  (args.scheme !== undefined && !["exact", "upto"].includes(args.scheme)) ||
  (args["payment-id"] !== undefined && (args.client !== "v2" || typeof args["payment-id"] !== "string")) ||
  (args.replay !== undefined && (args.client !== "v2" || !/^[0-9]+$/.test(String(args.replay))))
) {
  console.error("usage: pay.mjs --client v2|v1 --key 0xKEY --url URL [--method GET|POST] [--body JSON] [--rpc URL] [--max-value N] [--allow-assets] [--transfer-method eip3009|permit2] [--upto] [--scheme exact|upto] [--payment-id ID|auto] [--replay N]");
  console.error("       (--payment-id and --replay: --client v2 only)");
  process.exit(64);
}
const replayCount = args.replay !== undefined ? Number(args.replay) : 0;

// The first request the v2 client sent with a PAYMENT-SIGNATURE header, kept unconsumed (a clone)
// so --replay can send it again byte for byte.
let firstPaidRequest;
function capturingFetch(input, init) {
  const request = new Request(input, init);
  if (firstPaidRequest === undefined && request.headers.has("payment-signature")) {
    firstPaidRequest = request.clone();
  }
  return fetch(request);
}

function payingFetch() {
  const account = privateKeyToAccount(args.key);
  if (args.client === "v2") {
    const client = new x402Client();
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
    return wrapFetchV2(capturingFetch, client);
  }
  const wallet = createWalletClient({ account, chain: baseSepolia, transport: http(args.rpc) });
  const maxValue = args["max-value"] !== undefined ? BigInt(args["max-value"]) : undefined;
  return wrapFetchV1(fetch, wallet, maxValue);
}

async function main() {
  const init = { method: args.method ?? (args.body !== undefined ? "POST" : "GET") };
  if (args.body !== undefined) {
    init.body = args.body;
    init.headers = { "content-type": "application/json" };
  }
  const out = await answer(await payingFetch()(args.url, init));
  if (args["payment-id"] !== undefined) {
    const sent = firstPaidRequest && decodePaymentSignatureHeader(firstPaidRequest.headers.get("payment-signature"));
    out.paymentId = sent?.extensions?.[PAYMENT_IDENTIFIER]?.info?.id ?? null;
  }
  if (args.replay !== undefined) {
    if (replayCount > 0 && firstPaidRequest === undefined) {
      throw new Error("--replay: the client sent no PAYMENT-SIGNATURE request to replay");
    }
    out.replays = [];
    for (let i = 0; i < replayCount; i++) out.replays.push(await answer(await fetch(firstPaidRequest.clone())));
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
