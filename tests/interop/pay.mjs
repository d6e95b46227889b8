// One paid HTTP request made by an OFFICIAL, unmodified x402 client.
//
//   node tests/interop/pay.mjs --client v2|v1 --key 0x<payer key> --url <url>
//                              [--method GET|POST] [--body '<json>'] [--rpc URL] [--max-value N]
//
//   v2: @x402/fetch wrapFetchWithPayment + x402Client with @x402/evm's exact client scheme
//       (registerExactEvmScheme: eip155:* for v2, and every v1 EVM network name) signing with a
//       viem privateKeyToAccount local account. Signing is offline; no RPC is used.
//   v1: x402-fetch (1.2.0) wrapFetchWithPayment with a viem wallet client on chain baseSepolia,
//       as in its README. It only signs (no RPC call); --rpc just sets the transport URL.
//       --max-value overrides x402-fetch's cap (default 100000 = 0.10 USDC).
//
// stdout: exactly one JSON line {"status":<int>,"headers":{<lowercased name>:<value>},"body":"<text>"}
// exit 0 for any HTTP status; if the client library throws: {"error":"<message>"} and exit 2.
import { registerExactEvmScheme } from "@x402/evm/exact/client";
import { wrapFetchWithPayment as wrapFetchV2, x402Client } from "@x402/fetch";
import { createWalletClient, http } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { baseSepolia } from "viem/chains";
import { wrapFetchWithPayment as wrapFetchV1 } from "x402-fetch";
import { parseArgs } from "./chain.mjs";

const args = parseArgs(process.argv.slice(2));
if (!["v1", "v2"].includes(args.client) || !args.key || !args.url) {
  console.error("usage: pay.mjs --client v2|v1 --key 0xKEY --url URL [--method GET|POST] [--body JSON] [--rpc URL] [--max-value N] [--allow-assets] [--transfer-method eip3009|permit2]");
  process.exit(64);
}

function payingFetch() {
  const account = privateKeyToAccount(args.key);
  if (args.client === "v2") {
    const client = new x402Client();
    registerExactEvmScheme(client, { signer: account });
    // Buyer configuration through the client's public API: pay tokens other than the network's
    // default stablecoin, and prefer one transfer method when several are offered.
    if (args["allow-assets"] !== undefined) client.setSpendControls({ allowedAssets: true });
    if (args["transfer-method"] !== undefined) {
      const want = args["transfer-method"];
      client.registerPolicy((_version, reqs) =>
        reqs.filter((r) => (r.extra?.assetTransferMethod ?? "eip3009") === want),
      );
    }
    return wrapFetchV2(fetch, client);
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
  const res = await payingFetch()(args.url, init);
  const headers = {};
  res.headers.forEach((value, name) => {
    headers[name.toLowerCase()] = value;
  });
  const body = await res.text();
  process.stdout.write(`${JSON.stringify({ status: res.status, headers, body })}\n`);
}

main().catch((e) => {
  console.error(e?.stack ?? String(e));
  process.stdout.write(`${JSON.stringify({ error: e instanceof Error ? e.message : String(e) })}\n`);
  process.exit(2);
});
