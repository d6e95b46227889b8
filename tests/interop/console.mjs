// The operator's console in a REAL browser: Debian's chromium, headless, driven by puppeteer-core.
//
//   node tests/interop/console.mjs --url http://127.0.0.1:PORT --token ADMIN --shots DIR
//        [--chromium /usr/bin/chromium]
//
// Logs in with the admin token through the login form, reads the overview's figures, prices a
// request with the preview form, submits a broken edit of search.toml (expects the refusal
// message), then a valid one ($0.02 -> $0.03, the sample's expectation too), and visits the
// ledger and payments pages. Every page is saved as a PNG in DIR.
//
// stdout: one JSON line {loginStatus, overview:{quotes,paid,revenue}, preview, saveError, saved,
//         ledgerCheck, paymentsTable, payments, totals, topups (rows of cells), svg,
//         pages:[...]}; exit 0, or {"error"} and exit 2.
import { mkdirSync } from "node:fs";
import puppeteer from "puppeteer-core";
import { parseArgs } from "./chain.mjs";

const args = parseArgs(process.argv.slice(2));
if (!args.url || !args.token || !args.shots) {
  console.error("usage: console.mjs --url URL --token ADMIN --shots DIR [--chromium PATH]");
  process.exit(2);
}
mkdirSync(args.shots, { recursive: true });

const browser = await puppeteer.launch({
  executablePath: args.chromium ?? process.env.TARIFF_TEST_CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  // Root in a container: no user namespaces for the sandbox; /dev/shm may be tiny.
  args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
});
const out = { pages: [] };
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  const shot = async (name) => {
    await page.screenshot({ path: `${args.shots}/${name}.png`, fullPage: true });
    out.pages.push(name);
  };
  const text = (sel) => page.$eval(sel, (e) => e.textContent.trim());
  const submit = async (formSel) => {
    await Promise.all([page.waitForNavigation(), page.$eval(formSel, (f) => f.requestSubmit())]);
  };

  // Not logged in: the console sends to the login form.
  await page.goto(`${args.url}/console`);
  out.loginUrl = new URL(page.url()).pathname;
  await shot("login");
  await page.type("input[name=token]", args.token);
  await submit("form[action='/console/login']");
  out.afterLogin = new URL(page.url()).pathname;
  out.overview = { quotes: await text("#quotes"), paid: await text("#paid"), revenue: await text("#revenue") };
  out.svg = (await page.$("svg[role=img] rect")) !== null;
  await shot("overview");

  // The preview form prices a request under the live rules.
  await page.goto(`${args.url}/console/rules`);
  await page.$eval("input[name=path]", (e) => (e.value = "/search?q=bitcoin+price"));
  await submit("form[action='/console/rules/preview']");
  out.preview = await text("#preview-result");
  await shot("rules-preview");

  // A broken edit is refused with the loader's message; a valid one is saved and loaded.
  await page.goto(`${args.url}/console/rules/edit?file=search.toml`);
  const original = await page.$eval("textarea[name=text]", (e) => e.value);
  await page.$eval("textarea[name=text]", (e, v) => (e.value = v), original.replace('price = "$0.02"', 'price = "$0.02" +'));
  await submit("form[action='/console/rules/save']");
  out.saveError = await text("#save-error");
  await shot("rules-edit-refused");
  await page.$eval("textarea[name=text]", (e, v) => (e.value = v), original.replaceAll('"$0.02"', '"$0.03"'));
  await submit("form[action='/console/rules/save']");
  out.saved = await text("#notice");
  await shot("rules-saved");

  // The price a buyer is quoted now (the 402's PAYMENT-REQUIRED header).
  const priceOf = async (q) => {
    const r = await fetch(`${args.url}/search?q=${q}`);
    const header = r.headers.get("payment-required");
    return JSON.parse(Buffer.from(header, "base64").toString()).accepts[0].amount;
  };
  out.priceAfterSave = await priceOf("after+the+save");

  // A candidate at $0.05: backtested over the recorded requests, then run as a shadow on live
  // traffic, then applied.
  await page.goto(`${args.url}/console/experiments?file=search.toml`);
  const live = await page.$eval("textarea[name=text]", (e) => e.value);
  await page.$eval("textarea[name=text]", (e, v) => (e.value = v), live.replaceAll('"$0.03"', '"$0.05"'));
  await Promise.all([page.waitForNavigation(), page.click("#run-backtest")]);
  out.backtest = {
    inputs: await text("#backtest-inputs"),
    now: await text("#backtest-comparison tr:nth-child(2) td:nth-child(4)"),
    candidate: await text("#backtest-comparison td.candidate"),
  };
  await shot("experiments-backtest");
  await submit("form[action='/console/experiments/start']");
  out.shadowPrices = [await priceOf("shadow+one"), await priceOf("shadow+two")];
  await page.reload();
  out.shadow = {
    requests: await text("#comparison tr:nth-child(2) td:nth-child(3)"),
    candidate: await text("#comparison td.candidate"),
  };
  await shot("experiments-shadow");
  await submit("form[action='/console/experiments/apply']");
  out.applied = await text("#notice");
  out.priceAfterApply = await priceOf("after+the+experiment");

  await page.goto(`${args.url}/console/ledger`);
  out.ledgerCheck = await text("#check");
  await shot("ledger");
  await page.goto(`${args.url}/console/payments`);
  out.paymentsTable = (await page.$("#payments")) !== null;
  const rows = (sel) => page.$$eval(`${sel} tr`, (trs) => trs.slice(1).map((tr) => [...tr.cells].map((c) => c.textContent.trim())));
  out.payments = await rows("#payments");
  out.totals = await rows("#totals");
  out.topups = await rows("#topups");
  await shot("payments");
  console.log(JSON.stringify(out));
} catch (e) {
  console.log(JSON.stringify({ error: String(e.stack ?? e), partial: out }));
  process.exitCode = 2;
} finally {
  await browser.close();
}
