// Local-chain Uniswap rig for the /top-up tests: REAL Uniswap v2 and v3 contracts, deployed from the
// bytecode in their published npm artifacts (pinned in package.json), on an anvil running as Base
// Sepolia (chain id 84532), with test tokens and seeded pools priced against our TestUSDC.
//
// The v2 pair init code hash hard-coded in UniswapV2Library (0x96e8ac42…845f) equals
// keccak256(UniswapV2Pair creation code) of @uniswap/v2-core 1.0.1's artifact, and the v3 pool init
// code hash in PoolAddress (0xe34f199b…8b54) equals that of @uniswap/v3-core 1.0.1's UniswapV3Pool,
// so UniswapV2Router02, SwapRouter, QuoterV2 and NonfungiblePositionManager all find the pools the
// artifact factories create. `setup` checks both (router pairFor == factory.getPair, PoolAddress ==
// factory.getPool) and fails loudly if that ever stops being true.
//
// CLI (all amounts are in whole-token units, decimals allowed, e.g. 1.5):
//   node tests/interop/uniswap.mjs setup --rpc URL [--key 0xdeployer] [--warmup 2400] [--no-rewind] [--out FILE]
//     Runs chain.mjs's USDC set-up itself (idempotent), deploys everything, seeds the pools, warms up
//     the oracles, prints ONE JSON line (see README) and saves it to --out, or by default to
//     target/uniswap-rig/<host>_<port>.json, where push/quote find it again.
//   node tests/interop/uniswap.mjs push --rpc URL --pool NAME --amount N [--direction sell|buy] [--rig FILE]
//     One large swap from the deployer: sell = N of the pool's first token in, buy = N of its second
//     token in. Prints {pool,direction,tokenIn,tokenOut,amountIn,amountOut,before,after}.
//   node tests/interop/uniswap.mjs quote --rpc URL --token ADDR --amount N [--rig FILE]
//     Independent token->USDC quotes: QuoterV2 (direct on each fee tier, and token->WETH->USDC) and
//     UniswapV2Router02.getAmountsOut (direct and via WETH). Prints {token,symbol,decimals,amountIn,routes,best}.
//   node tests/interop/uniswap.mjs selfcheck [--verbose]
//     Starts a throwaway anvil, runs setup, checks quotes/oracles/fee token, stops anvil; exits 0 or 1.
//
// Oracle warm-up: v3 TWAPs need history, so setup makes small swaps spaced by evm_increaseTime.
// By default it first REWINDS chain time by the warm-up (evm_setTime(now - warmup)) so that the chain
// clock ends up near wall-clock time again (EIP-3009 validBefore windows are wall-clock based).
// --no-rewind leaves the chain ~warmup seconds in the future instead.
// Needs target/contracts/{TestUSDC,TestERC20,TestFeeToken}.* (run `bash scripts/compile-contracts`).
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import {
  concat,
  encodeAbiParameters,
  formatUnits,
  getAddress,
  getContractAddress,
  keccak256,
  maxUint256,
  numberToHex,
  pad,
  parseAbi,
  parseUnits,
  toHex,
  zeroAddress,
} from "viem";
import { privateKeyToAccount } from "viem/accounts";
import {
  ANVIL_KEYS,
  USDC_ADDRESS,
  loadTestUsdc,
  parseArgs,
  publicClientFor,
  setupUsdc,
  startAnvil,
  walletClientFor,
} from "./chain.mjs";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const require = createRequire(import.meta.url);

// ---------- artifacts ----------

function npmArtifact(path) {
  const j = require(path);
  const bytecode = j.bytecode.startsWith("0x") ? j.bytecode : `0x${j.bytecode}`;
  return { abi: j.abi, bytecode };
}
const ART = {
  weth9: () => npmArtifact("@uniswap/v2-periphery/build/WETH9.json"),
  v2Factory: () => npmArtifact("@uniswap/v2-core/build/UniswapV2Factory.json"),
  v2Pair: () => npmArtifact("@uniswap/v2-core/build/UniswapV2Pair.json"),
  v2Router: () => npmArtifact("@uniswap/v2-periphery/build/UniswapV2Router02.json"),
  v3Factory: () => npmArtifact("@uniswap/v3-core/artifacts/contracts/UniswapV3Factory.sol/UniswapV3Factory.json"),
  v3Pool: () => npmArtifact("@uniswap/v3-core/artifacts/contracts/UniswapV3Pool.sol/UniswapV3Pool.json"),
  swapRouter: () => npmArtifact("@uniswap/v3-periphery/artifacts/contracts/SwapRouter.sol/SwapRouter.json"),
  quoterV2: () => npmArtifact("@uniswap/v3-periphery/artifacts/contracts/lens/QuoterV2.sol/QuoterV2.json"),
  npm: () =>
    npmArtifact(
      "@uniswap/v3-periphery/artifacts/contracts/NonfungiblePositionManager.sol/NonfungiblePositionManager.json",
    ),
};

function localArtifact(name) {
  const dir = `${ROOT}target/contracts`;
  try {
    return {
      abi: JSON.parse(readFileSync(`${dir}/${name}.abi.json`, "utf8")),
      bytecode: `0x${readFileSync(`${dir}/${name}.bin`, "utf8").trim()}`,
    };
  } catch (e) {
    throw new Error(`${name} artifacts missing in ${dir}; run bash scripts/compile-contracts (${e.message})`);
  }
}

const ERC20_ABI = parseAbi([
  "function balanceOf(address) view returns (uint256)",
  "function decimals() view returns (uint8)",
  "function symbol() view returns (string)",
  "function approve(address,uint256) returns (bool)",
  "function transfer(address,uint256) returns (bool)",
  "function mint(address,uint256)",
]);

/** Init code hashes the periphery contracts hard-code (mainnet values). */
export const V2_INIT_CODE_HASH = "0x96e8ac4277198ff8b6f785478aa9a39f403cb768dd02cbee326c3e7da348845f";
export const V3_POOL_INIT_CODE_HASH = "0xe34f199b19b2b4f47f68442619d555527d244f78a3297ea89325f843f87b8b54";

// ---------- rig definition ----------

/** Tokens deployed by setup (USDC is the chain.mjs TestUSDC, WETH is WETH9). */
const TOKENS = [
  { sym: "TKN", kind: "erc20", decimals: 18 },
  { sym: "THIN", kind: "erc20", decimals: 18 },
  { sym: "FEE", kind: "fee", decimals: 18, feeBps: 100 },
  { sym: "HOP", kind: "erc20", decimals: 18 },
];

/**
 * Pools: `a`/`b` are the amounts deposited (whole tokens); the price is b per a. For FEE the pair
 * receives 99% of `a` (the token burns 1% in transit), so `a` is grossed up to keep 1 FEE = 1 USDC.
 */
export const POOLS = [
  { name: "v3-TKN-USDC", v: 3, a: "TKN", b: "USDC", fee: 3000, amountA: "500000", amountB: "1000000" }, // 1 TKN = 2 USDC, $2M
  { name: "v3-WETH-USDC", v: 3, a: "WETH", b: "USDC", fee: 500, amountA: "2000", amountB: "6000000" }, // 1 WETH = 3000 USDC, $12M
  { name: "v3-HOP-WETH", v: 3, a: "HOP", b: "WETH", fee: 3000, amountA: "200000", amountB: "200" }, // 1 HOP = 0.001 WETH ($3), $1.2M
  { name: "v2-TKN-USDC", v: 2, a: "TKN", b: "USDC", amountA: "100000", amountB: "200000" }, // 1 TKN = 2 USDC, $400k
  { name: "v2-THIN-USDC", v: 2, a: "THIN", b: "USDC", amountA: "25", amountB: "25" }, // 1 THIN = 1 USDC, $50
  { name: "v2-FEE-USDC", v: 2, a: "FEE", b: "USDC", amountA: "100000", amountB: "99000" }, // reserves 99k/99k: 1 FEE = 1 USDC
];

const V3_FEES = [500, 3000, 10000];
const TICK_SPACING = { 500: 10, 3000: 60, 10000: 200 };
const MAX_TICK = 887272;
const Q96 = 2n ** 96n;

// ---------- helpers ----------

function isqrt(n) {
  if (n < 2n) return n;
  let x = n;
  let y = (x + 1n) >> 1n;
  while (y < x) {
    x = y;
    y = (x + n / x) >> 1n;
  }
  return x;
}

const sortTokens = (x, y) => (BigInt(x) < BigInt(y) ? [x, y] : [y, x]);

function rigFileFor(rpc) {
  const u = new URL(rpc);
  return `${ROOT}target/uniswap-rig/${u.hostname}_${u.port || "80"}.json`;
}

function loadRig(args) {
  const src = args.rig ?? rigFileFor(args.rpc);
  const text = src.trim().startsWith("{") ? src : readFileSync(src, "utf8");
  return JSON.parse(text);
}

function ctx(rpc, key = ANVIL_KEYS[0]) {
  const pub = publicClientFor(rpc);
  const wallet = walletClientFor(rpc, key);
  const account = privateKeyToAccount(key).address;
  const send = async (address, abi, functionName, args = [], value) => {
    // A fixed gas limit, not an estimate: a v3 mint or swap writes an oracle observation only in
    // a block with a new timestamp, so an estimate made against a block of the same second
    // comes out short and the transaction runs out of gas (seen under load).
    const hash = await wallet.writeContract({ address, abi, functionName, args, value, gas: 8_000_000n });
    const receipt = await pub.waitForTransactionReceipt({ hash });
    if (receipt.status !== "success") throw new Error(`${functionName} reverted (${hash})`);
    return receipt;
  };
  const deploy = async ({ abi, bytecode }, args = [], label = "contract") => {
    const hash = await wallet.deployContract({ abi, bytecode, args });
    const receipt = await pub.waitForTransactionReceipt({ hash });
    if (receipt.status !== "success" || !receipt.contractAddress) throw new Error(`deploy ${label} failed (${hash})`);
    return getAddress(receipt.contractAddress);
  };
  const read = (address, abi, functionName, args = []) => pub.readContract({ address, abi, functionName, args });
  const rpcCall = (method, params = []) => pub.request({ method, params });
  return { pub, wallet, account, send, deploy, read, rpcCall };
}

/** Ensures `who` (the deployer) holds at least `amount` atomic units of `token`, minting/wrapping as needed. */
async function ensureBalance(c, rig, token, amount) {
  const bal = await c.read(token, ERC20_ABI, "balanceOf", [c.account]);
  if (bal >= amount) return;
  const missing = amount - bal;
  if (getAddress(token) === getAddress(rig.weth)) {
    const eth = await c.pub.getBalance({ address: c.account });
    if (eth < missing + parseUnits("10", 18)) {
      await c.rpcCall("anvil_setBalance", [c.account, numberToHex(eth + missing + parseUnits("1000", 18))]);
    }
    await c.send(token, ART.weth9().abi, "deposit", [], missing);
  } else {
    await c.send(token, ERC20_ABI, "mint", [c.account, missing]);
  }
}

function v3SpotPrice(sqrtPriceX96, dec0, dec1) {
  // token1 per token0 in whole units.
  const s = Number(sqrtPriceX96) / Number(Q96);
  return s * s * 10 ** (dec0 - dec1);
}

// ---------- setup ----------

export async function setupUniswap({ rpc, key = ANVIL_KEYS[0], warmup = 2400, rewind = true, log = () => {} }) {
  const usdcInfo = await setupUsdc({ rpc, key });
  const c = ctx(rpc, key);
  const me = c.account;
  const rounds = 8;
  const step = Math.max(1, Math.ceil(warmup / rounds));

  if (rewind) {
    const now = Math.floor(Date.now() / 1000);
    await c.rpcCall("evm_setTime", [now - step * rounds - 60]);
    await c.rpcCall("evm_mine", []);
  }
  // Plenty of ETH for WETH liquidity and later pushes.
  await c.rpcCall("anvil_setBalance", [me, numberToHex(parseUnits("1000000", 18))]);

  log("deploying core contracts");
  const weth = await c.deploy(ART.weth9(), [], "WETH9");
  const v2Factory = await c.deploy(ART.v2Factory(), [me], "UniswapV2Factory");
  const v2Router = await c.deploy(ART.v2Router(), [v2Factory, weth], "UniswapV2Router02");
  const v3Factory = await c.deploy(ART.v3Factory(), [], "UniswapV3Factory");
  const swapRouter = await c.deploy(ART.swapRouter(), [v3Factory, weth], "SwapRouter");
  const quoterV2 = await c.deploy(ART.quoterV2(), [v3Factory, weth], "QuoterV2");
  // No token descriptor: tokenURI() would revert, nothing else needs it.
  const positionManager = await c.deploy(ART.npm(), [v3Factory, weth, zeroAddress], "NonfungiblePositionManager");

  log("deploying tokens");
  const erc20 = localArtifact("TestERC20");
  const feeTok = localArtifact("TestFeeToken");
  const tokens = { USDC: USDC_ADDRESS, WETH: weth };
  const decimals = { USDC: 6, WETH: 18 };
  for (const t of TOKENS) {
    tokens[t.sym] =
      t.kind === "fee"
        ? await c.deploy(feeTok, [`Test ${t.sym}`, t.sym, t.decimals, t.feeBps], t.sym)
        : await c.deploy(erc20, [`Test ${t.sym}`, t.sym, t.decimals], t.sym);
    decimals[t.sym] = t.decimals;
  }
  const usdcAbi = loadTestUsdc().abi;
  await c.send(USDC_ADDRESS, usdcAbi, "mint", [me, parseUnits("100000000", 6)]);
  for (const t of TOKENS) await c.send(tokens[t.sym], ERC20_ABI, "mint", [me, parseUnits("10000000", t.decimals)]);
  await c.send(weth, ART.weth9().abi, "deposit", [], parseUnits("10000", 18));
  for (const addr of Object.values(tokens)) {
    for (const spender of [v2Router, swapRouter, positionManager]) {
      await c.send(addr, ERC20_ABI, "approve", [spender, maxUint256]);
    }
  }

  const pools = {};
  const v3PoolAbi = ART.v3Pool().abi;
  for (const p of POOLS) {
    const A = tokens[p.a];
    const B = tokens[p.b];
    const amtA = parseUnits(p.amountA, decimals[p.a]);
    const amtB = parseUnits(p.amountB, decimals[p.b]);
    const [token0, token1] = sortTokens(A, B);
    const [amt0, amt1] = token0 === A ? [amtA, amtB] : [amtB, amtA];
    if (p.v === 3) {
      // price = token1/token0 in atomic units; sqrtPriceX96 = sqrt(price) * 2^96.
      const sqrtPriceX96 = isqrt((amt1 << 192n) / amt0);
      await c.send(positionManager, ART.npm().abi, "createAndInitializePoolIfNecessary", [
        token0,
        token1,
        p.fee,
        sqrtPriceX96,
      ]);
      const pool = getAddress(await c.read(v3Factory, ART.v3Factory().abi, "getPool", [token0, token1, p.fee]));
      const computed = v3PoolAddress(v3Factory, token0, token1, p.fee);
      if (computed !== pool) {
        throw new Error(`v3 init code hash mismatch: PoolAddress ${computed} != factory.getPool ${pool}`);
      }
      const s = TICK_SPACING[p.fee];
      const tickLower = -Math.floor(MAX_TICK / s) * s;
      const tickUpper = Math.floor(MAX_TICK / s) * s;
      await c.send(positionManager, ART.npm().abi, "mint", [
        {
          token0,
          token1,
          fee: p.fee,
          tickLower,
          tickUpper,
          amount0Desired: amt0,
          amount1Desired: amt1,
          amount0Min: 0n,
          amount1Min: 0n,
          recipient: me,
          deadline: maxUint256,
        },
      ]);
      await c.send(pool, v3PoolAbi, "increaseObservationCardinalityNext", [100]);
      pools[p.name] = { address: pool, version: 3, fee: p.fee, token0, token1, tokenA: A, tokenB: B };
    } else {
      await c.send(v2Factory, ART.v2Factory().abi, "createPair", [A, B]);
      const pair = getAddress(await c.read(v2Factory, ART.v2Factory().abi, "getPair", [A, B]));
      const computed = v2PairAddress(v2Factory, token0, token1);
      if (computed !== pair) {
        throw new Error(`v2 init code hash mismatch: UniswapV2Library.pairFor ${computed} != getPair ${pair}`);
      }
      // Seeded through the real router (addLiquidity uses the library's pairFor, i.e. the hard-coded hash).
      await c.send(v2Router, ART.v2Router().abi, "addLiquidity", [A, B, amtA, amtB, 0n, 0n, me, maxUint256]);
      pools[p.name] = { address: pair, version: 2, token0, token1, tokenA: A, tokenB: B };
    }
  }

  // Oracle warm-up: `rounds` small swaps per v3 pool (alternating direction, 0.01% of the seeded
  // amount), `step` seconds apart; v2 pairs get a small router swap (TKN) or sync() so their
  // priceCumulativeLast moves as well.
  log(`oracle warm-up: ${rounds} rounds x ${step}s`);
  const pairAbi = ART.v2Pair().abi;
  for (let r = 0; r < rounds; r++) {
    await c.rpcCall("evm_increaseTime", [step]);
    await c.rpcCall("evm_mine", []);
    for (const p of POOLS) {
      const info = pools[p.name];
      const sell = r % 2 === 0;
      const tokenIn = sell ? info.tokenA : info.tokenB;
      const tokenOut = sell ? info.tokenB : info.tokenA;
      const amountIn = parseUnits(sell ? p.amountA : p.amountB, decimals[sell ? p.a : p.b]) / 10000n;
      if (p.v === 3) {
        await c.send(swapRouter, ART.swapRouter().abi, "exactInputSingle", [
          {
            tokenIn,
            tokenOut,
            fee: p.fee,
            recipient: me,
            deadline: maxUint256,
            amountIn,
            amountOutMinimum: 0n,
            sqrtPriceLimitX96: 0n,
          },
        ]);
      } else if (p.a === "TKN") {
        await c.send(v2Router, ART.v2Router().abi, "swapExactTokensForTokens", [
          amountIn,
          0n,
          [tokenIn, tokenOut],
          me,
          maxUint256,
        ]);
      } else {
        await c.send(info.address, pairAbi, "sync", []);
      }
    }
  }

  const block = await c.pub.getBlock();
  const out = {
    chainId: await c.pub.getChainId(),
    deployer: me,
    funder: me,
    usdc: USDC_ADDRESS,
    weth,
    tokens,
    decimals,
    feeBps: { FEE: 100 },
    v2: { factory: v2Factory, router: v2Router, initCodeHash: V2_INIT_CODE_HASH },
    v3: {
      factory: v3Factory,
      swapRouter,
      quoterV2,
      positionManager,
      poolInitCodeHash: V3_POOL_INIT_CODE_HASH,
    },
    pools: Object.fromEntries(
      Object.entries(pools).map(([name, i]) => [
        name,
        {
          address: i.address,
          version: i.version,
          ...(i.fee ? { fee: i.fee } : {}),
          token0: i.token0,
          token1: i.token1,
        },
      ]),
    ),
    oracle: { rounds, stepSeconds: step, cardinalityNext: 100, rewound: rewind },
    chainTime: Number(block.timestamp),
    wallTime: Math.floor(Date.now() / 1000),
    usdcSetup: usdcInfo,
  };
  return out;
}

export function v2PairAddress(factory, token0, token1) {
  const salt = keccak256(concat([token0, token1]));
  return getContractAddress({ from: factory, opcode: "CREATE2", salt, bytecodeHash: V2_INIT_CODE_HASH });
}

export function v3PoolAddress(factory, token0, token1, fee) {
  const salt = keccak256(encodeAbiParameters([{ type: "address" }, { type: "address" }, { type: "uint24" }], [token0, token1, fee]));
  return getContractAddress({ from: factory, opcode: "CREATE2", salt, bytecodeHash: V3_POOL_INIT_CODE_HASH });
}

// ---------- state readers ----------

async function tokenMeta(c, token) {
  if (getAddress(token) === getAddress(USDC_ADDRESS)) return { symbol: "USDC", decimals: 6 };
  const [symbol, decimals] = await Promise.all([
    c.read(token, ERC20_ABI, "symbol"),
    c.read(token, ERC20_ABI, "decimals"),
  ]);
  return { symbol, decimals: Number(decimals) };
}

/** Spot state of a rig pool: price of tokenA in tokenB (whole units) plus raw state. */
export async function poolState(c, rig, name) {
  const p = rig.pools[name];
  if (!p) throw new Error(`unknown pool ${name}; have ${Object.keys(rig.pools).join(", ")}`);
  const [symA, symB] = name.split("-").slice(1);
  const A = rig.tokens[symA];
  const dec0 = rig.decimals[symOf(rig, p.token0)];
  const dec1 = rig.decimals[symOf(rig, p.token1)];
  if (p.version === 3) {
    const slot0 = await c.read(p.address, ART.v3Pool().abi, "slot0");
    const liquidity = await c.read(p.address, ART.v3Pool().abi, "liquidity");
    const p01 = v3SpotPrice(slot0[0], dec0, dec1);
    const price = getAddress(A) === getAddress(p.token0) ? p01 : 1 / p01;
    return {
      sqrtPriceX96: slot0[0].toString(),
      tick: Number(slot0[1]),
      liquidity: liquidity.toString(),
      price,
      priceOf: `${symB} per ${symA}`,
    };
  }
  const [r0, r1] = await c.read(p.address, ART.v2Pair().abi, "getReserves");
  const p01 = Number(formatUnits(r1, dec1)) / Number(formatUnits(r0, dec0));
  const price = getAddress(A) === getAddress(p.token0) ? p01 : 1 / p01;
  return { reserve0: r0.toString(), reserve1: r1.toString(), price, priceOf: `${symB} per ${symA}` };
}

function symOf(rig, addr) {
  for (const [sym, a] of Object.entries(rig.tokens)) if (getAddress(a) === getAddress(addr)) return sym;
  throw new Error(`not a rig token: ${addr}`);
}

// ---------- push ----------

export async function push({ rpc, rig, pool: name, amount, direction = "sell", key = ANVIL_KEYS[0] }) {
  const c = ctx(rpc, key);
  const p = rig.pools[name];
  if (!p) throw new Error(`unknown pool ${name}; have ${Object.keys(rig.pools).join(", ")}`);
  if (direction !== "sell" && direction !== "buy") throw new Error("--direction must be sell or buy");
  const [symA, symB] = name.split("-").slice(1);
  const [symIn, symOut] = direction === "sell" ? [symA, symB] : [symB, symA];
  const tokenIn = rig.tokens[symIn];
  const tokenOut = rig.tokens[symOut];
  const amountIn = parseUnits(String(amount), rig.decimals[symIn]);
  await ensureBalance(c, rig, tokenIn, amountIn);
  const spender = p.version === 3 ? rig.v3.swapRouter : rig.v2.router;
  await c.send(tokenIn, ERC20_ABI, "approve", [spender, maxUint256]);
  const before = await poolState(c, rig, name);
  const balBefore = await c.read(tokenOut, ERC20_ABI, "balanceOf", [c.account]);
  if (p.version === 3) {
    await c.send(rig.v3.swapRouter, ART.swapRouter().abi, "exactInputSingle", [
      {
        tokenIn,
        tokenOut,
        fee: p.fee,
        recipient: c.account,
        deadline: maxUint256,
        amountIn,
        amountOutMinimum: 0n,
        sqrtPriceLimitX96: 0n,
      },
    ]);
  } else {
    await c.send(rig.v2.router, ART.v2Router().abi, "swapExactTokensForTokensSupportingFeeOnTransferTokens", [
      amountIn,
      0n,
      [tokenIn, tokenOut],
      c.account,
      maxUint256,
    ]);
  }
  const amountOut = (await c.read(tokenOut, ERC20_ABI, "balanceOf", [c.account])) - balBefore;
  const after = await poolState(c, rig, name);
  return {
    pool: name,
    address: p.address,
    direction,
    tokenIn,
    tokenOut,
    amountIn: amountIn.toString(),
    amountOut: amountOut.toString(),
    before,
    after,
  };
}

// ---------- quote ----------

function v3Path(tokens, fees) {
  const parts = [tokens[0]];
  for (let i = 0; i < fees.length; i++) parts.push(pad(toHex(fees[i]), { size: 3 }), tokens[i + 1]);
  return concat(parts);
}

export async function quote({ rpc, rig, token, amount }) {
  const c = ctx(rpc);
  token = getAddress(token);
  const usdc = getAddress(USDC_ADDRESS);
  const weth = getAddress(rig.weth);
  const meta = await tokenMeta(c, token);
  const amountIn = parseUnits(String(amount), meta.decimals);
  const routes = [];
  const v3f = ART.v3Factory().abi;
  const q = ART.quoterV2().abi;
  const getPool = async (x, y, fee) => {
    const a = await c.read(rig.v3.factory, v3f, "getPool", [x, y, fee]);
    return a === zeroAddress ? null : a;
  };
  const getPair = async (x, y) => {
    const a = await c.read(rig.v2.factory, ART.v2Factory().abi, "getPair", [x, y]);
    return a === zeroAddress ? null : a;
  };
  const attempt = async (route, fn) => {
    try {
      route.amountOut = (await fn()).toString();
      route.amountOutUsdc = formatUnits(BigInt(route.amountOut), 6);
    } catch (e) {
      route.error = (e.shortMessage ?? e.message).split("\n")[0];
    }
    routes.push(route);
  };
  if (token === usdc) {
    routes.push({ venue: "identity", path: [usdc], amountOut: amountIn.toString(), amountOutUsdc: formatUnits(amountIn, 6) });
  }
  for (const fee of token === usdc ? [] : V3_FEES) {
    const pool = await getPool(token, usdc, fee);
    if (!pool) continue;
    await attempt({ venue: "v3", pool, path: [token, usdc], fees: [fee] }, async () => {
      const { result } = await c.pub.simulateContract({
        address: rig.v3.quoterV2,
        abi: q,
        functionName: "quoteExactInputSingle",
        args: [{ tokenIn: token, tokenOut: usdc, amountIn, fee, sqrtPriceLimitX96: 0n }],
      });
      return result[0];
    });
  }
  if (token !== usdc && token !== weth) {
    for (const f1 of V3_FEES) {
      if (!(await getPool(token, weth, f1))) continue;
      for (const f2 of V3_FEES) {
        if (!(await getPool(weth, usdc, f2))) continue;
        await attempt({ venue: "v3", path: [token, weth, usdc], fees: [f1, f2] }, async () => {
          const { result } = await c.pub.simulateContract({
            address: rig.v3.quoterV2,
            abi: q,
            functionName: "quoteExactInput",
            args: [v3Path([token, weth, usdc], [f1, f2]), amountIn],
          });
          return result[0];
        });
      }
    }
  }
  const v2paths = [];
  if (token !== usdc && (await getPair(token, usdc))) v2paths.push([token, usdc]);
  if (token !== usdc && token !== weth && (await getPair(token, weth)) && (await getPair(weth, usdc))) {
    v2paths.push([token, weth, usdc]);
  }
  for (const path of v2paths) {
    await attempt({ venue: "v2", path }, async () => {
      const amounts = await c.read(rig.v2.router, ART.v2Router().abi, "getAmountsOut", [amountIn, path]);
      return amounts[amounts.length - 1];
    });
  }
  const ok = routes.filter((r) => r.amountOut !== undefined);
  const best = ok.reduce((b, r) => (b === null || BigInt(r.amountOut) > BigInt(b.amountOut) ? r : b), null);
  return { token, symbol: meta.symbol, decimals: meta.decimals, amountIn: amountIn.toString(), usdc, routes, best };
}

// ---------- selfcheck ----------

async function selfcheck({ verbose }) {
  const anvil = await startAnvil();
  const results = [];
  const check = (name, ok, detail) => {
    results.push({ name, ok, detail });
    console.error(`${ok ? "ok  " : "FAIL"} ${name}${verbose || !ok ? ` ${JSON.stringify(detail)}` : ""}`);
  };
  try {
    const rig = await setupUniswap({ rpc: anvil.rpc, log: verbose ? (m) => console.error(`[setup] ${m}`) : () => {} });
    if (verbose) console.error(JSON.stringify(rig));
    const c = ctx(anvil.rpc);
    const near = (x, want, tol) => Math.abs(x - want) <= tol;

    const tkn = await quote({ rpc: anvil.rpc, rig, token: rig.tokens.TKN, amount: "1" });
    const tknV3 = tkn.routes.find((r) => r.venue === "v3" && r.path.length === 2 && r.fees[0] === 3000);
    check("QuoterV2 1 TKN -> USDC (0.3%) ~ 2 * 0.997", tknV3 && near(Number(tknV3.amountOutUsdc), 1.994, 0.002), tknV3);
    const tknV2 = tkn.routes.find((r) => r.venue === "v2" && r.path.length === 2);
    check("v2 router getAmountsOut 1 TKN -> USDC ~ 1.994", tknV2 && near(Number(tknV2.amountOutUsdc), 1.994, 0.002), tknV2);

    const weth = await quote({ rpc: anvil.rpc, rig, token: rig.weth, amount: "1" });
    const wethV3 = weth.routes.find((r) => r.venue === "v3");
    // 3000 * 0.9995 fee, less ~0.05% price impact (1 WETH out of a 2000 WETH full-range pool).
    check("QuoterV2 1 WETH -> USDC (0.05%) ~ 2997", wethV3 && near(Number(wethV3.amountOutUsdc), 2997, 1.5), wethV3);

    const hop = await quote({ rpc: anvil.rpc, rig, token: rig.tokens.HOP, amount: "100" });
    const hopV3 = hop.routes.find((r) => r.venue === "v3" && r.path.length === 3);
    check(
      "QuoterV2 quoteExactInput 100 HOP -> WETH -> USDC ~ 300 * 0.997 * 0.9995",
      hopV3 && near(Number(hopV3.amountOutUsdc), 300 * 0.997 * 0.9995, 0.3),
      hopV3,
    );

    const poolAbi = ART.v3Pool().abi;
    for (const name of ["v3-TKN-USDC", "v3-WETH-USDC", "v3-HOP-WETH"]) {
      const p = rig.pools[name];
      try {
        const [ticks] = await c.read(p.address, poolAbi, "observe", [[1800, 0]]);
        const twapTick = Number(ticks[1] - ticks[0]) / 1800;
        const spot = await poolState(c, rig, name);
        check(`${name} observe([1800,0]) works, TWAP tick ~ spot tick`, Math.abs(twapTick - spot.tick) < 5, {
          twapTick,
          spotTick: spot.tick,
          price: spot.price,
        });
      } catch (e) {
        check(`${name} observe([1800,0]) works`, false, e.shortMessage ?? e.message);
      }
    }

    const thin = await poolState(c, rig, "v2-THIN-USDC");
    check(
      "v2-THIN-USDC reserves tiny (~25 + 25 USDC)",
      BigInt(thin.reserve0) < 10n ** 20n && BigInt(thin.reserve1) < 10n ** 20n,
      thin,
    );
    const feeState = await poolState(c, rig, "v2-FEE-USDC");
    check("v2-FEE-USDC price ~ 1", near(feeState.price, 1, 0.01), feeState);

    const other = privateKeyToAccount(ANVIL_KEYS[3]).address;
    const before = await c.read(rig.tokens.FEE, ERC20_ABI, "balanceOf", [other]);
    await c.send(rig.tokens.FEE, ERC20_ABI, "transfer", [other, parseUnits("100", 18)]);
    const got = (await c.read(rig.tokens.FEE, ERC20_ABI, "balanceOf", [other])) - before;
    check("FEE transfer of 100 delivers 99", got === parseUnits("99", 18), formatUnits(got, 18));

    const pushed = await push({ rpc: anvil.rpc, rig, pool: "v3-TKN-USDC", amount: "200000" });
    const [ticks] = await c.read(rig.pools["v3-TKN-USDC"].address, poolAbi, "observe", [[1800, 0]]);
    const twapTick = Number(ticks[1] - ticks[0]) / 1800;
    check("push moves v3-TKN-USDC spot far from TWAP", pushed.after.price < 1.2 && Math.abs(twapTick - pushed.after.tick) > 1000, {
      before: pushed.before.price,
      after: pushed.after.price,
      spotTick: pushed.after.tick,
      twapTick,
    });
    const pushedV2 = await push({ rpc: anvil.rpc, rig, pool: "v2-THIN-USDC", amount: "50", direction: "buy" });
    check("push on v2-THIN-USDC (buy with 50 USDC) moves price up", pushedV2.after.price > 5, {
      before: pushedV2.before.price,
      after: pushedV2.after.price,
    });
  } finally {
    await anvil.stop();
  }
  const failed = results.filter((r) => !r.ok).length;
  console.log(`${results.length - failed} passed, ${failed} failed`);
  return failed === 0;
}

// ---------- CLI ----------

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const [cmd] = args._;
  const usage = () => {
    console.error("usage: uniswap.mjs setup --rpc URL [--key 0x..] [--warmup 2400] [--no-rewind] [--out FILE]");
    console.error("       uniswap.mjs push --rpc URL --pool NAME --amount N [--direction sell|buy] [--rig FILE|JSON]");
    console.error("       uniswap.mjs quote --rpc URL --token 0xaddr --amount N [--rig FILE|JSON]");
    console.error("       uniswap.mjs selfcheck [--verbose]");
    process.exit(64);
  };
  if (cmd === "selfcheck") {
    process.exit((await selfcheck({ verbose: !!args.verbose })) ? 0 : 1);
  }
  if (!args.rpc) usage();
  if (cmd === "setup") {
    const out = await setupUniswap({
      rpc: args.rpc,
      key: args.key ?? ANVIL_KEYS[0],
      warmup: args.warmup ? Number(args.warmup) : 2400,
      rewind: !args["no-rewind"],
    });
    const file = typeof args.out === "string" ? args.out : rigFileFor(args.rpc);
    mkdirSync(file.replace(/\/[^/]*$/, ""), { recursive: true });
    writeFileSync(file, `${JSON.stringify(out)}\n`);
    console.log(JSON.stringify(out));
  } else if (cmd === "push") {
    if (!args.pool || args.amount === undefined) usage();
    const out = await push({
      rpc: args.rpc,
      rig: loadRig(args),
      pool: args.pool,
      amount: args.amount,
      direction: args.direction ?? "sell",
      key: args.key ?? ANVIL_KEYS[0],
    });
    console.log(JSON.stringify(out));
  } else if (cmd === "quote") {
    if (!args.token || args.amount === undefined) usage();
    console.log(JSON.stringify(await quote({ rpc: args.rpc, rig: loadRig(args), token: args.token, amount: args.amount })));
  } else {
    usage();
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((e) => {
    console.error(e?.stack ?? String(e));
    process.exit(1);
  });
}
