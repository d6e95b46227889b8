//! The console's HTML: escaped text, one inline stylesheet, SVG charts drawn with integers.

use std::fmt::Write;

use super::session::Session;
use crate::db::RuleFigures;
use crate::money::UsdMicros;

/// Text for an HTML body or a quoted attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}\
header{background:#1d232a;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:center}\
header b{font-size:16px}main{padding:24px;max-width:1100px}\
table{border-collapse:collapse;background:#fff;width:100%}th,td{padding:6px 10px;border-bottom:1px solid #e3e6ea;text-align:right}\
th:first-child,td:first-child,th:nth-child(2),td:nth-child(2){text-align:left}\
.cards{display:flex;gap:16px;margin-bottom:24px}.card{background:#fff;padding:12px 18px;border-radius:6px;min-width:150px}\
.card span{display:block;color:#5b6570;font-size:12px}.card b{font-size:20px}\
.err{background:#fdecea;color:#8a1c12;padding:8px 12px;border-radius:6px}\
form.inline{display:inline}button{cursor:pointer}";

fn layout(title: &str, session: Option<&Session>, body: &str) -> String {
    let logout = match session {
        Some(s) => format!(
            "<form class=inline method=post action=/console/logout>\
             <input type=hidden name=csrf value=\"{}\"><button>Log out</button></form>",
            escape(&s.csrf)
        ),
        None => String::new(),
    };
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <title>{title} · Tariff</title><style>{STYLE}</style></head>\
         <body><header><b>Tariff</b>{nav}<span>{title}</span><span style=\"flex:1\"></span>{logout}</header>\
         <main>{body}</main></body></html>",
        title = escape(title),
        nav = if session.is_some() {
            "<a href=/console style=\"color:#fff\">Overview</a><a href=/console/rules style=\"color:#fff\">Rules</a>\
             <a href=/console/experiments style=\"color:#fff\">Experiments</a>\
             <a href=/console/ledger style=\"color:#fff\">Ledger</a><a href=/console/payments style=\"color:#fff\">Payments</a>"
        } else {
            ""
        },
    )
}

pub fn login(nonce: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=err role=alert>{}</p>", escape(e)))
        .unwrap_or_default();
    layout(
        "Log in",
        None,
        &format!(
            "{error}<form method=post action=/console/login>\
             <input type=hidden name=csrf value=\"{}\">\
             <p><label>Admin token<br><input type=password name=token autocomplete=off size=48 autofocus></label></p>\
             <p><button>Log in</button></p></form>",
            escape(nonce)
        ),
    )
}

pub fn message(title: &str, text: &str) -> String {
    layout(
        title,
        None,
        &format!("<p class=err role=alert>{}</p>", escape(text)),
    )
}

fn usd(micros: i64) -> String {
    UsdMicros(micros.max(0) as u64).to_string()
}

/// Basis points as a percentage with one decimal, from integers.
fn percent(bps: i64) -> String {
    format!("{}.{}%", bps / 100, (bps % 100) / 10)
}

/// Horizontal bars of revenue per rule (widths in integer pixels).
fn revenue_chart(figures: &[RuleFigures]) -> String {
    const WIDTH: i64 = 420;
    const ROW: i64 = 22;
    let max = figures
        .iter()
        .map(RuleFigures::revenue)
        .max()
        .unwrap_or(0)
        .max(1);
    let height = ROW * figures.len() as i64 + 4;
    let mut svg = format!(
        "<svg role=img aria-label=\"Revenue per rule\" width=\"{}\" height=\"{height}\" xmlns=\"http://www.w3.org/2000/svg\">",
        WIDTH + 320
    );
    for (i, f) in figures.iter().enumerate() {
        let y = ROW * i as i64 + 2;
        let w = f.revenue() * WIDTH / max;
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{ty}\" font-size=\"12\">{label}</text>\
             <rect x=\"200\" y=\"{y}\" width=\"{w}\" height=\"16\" fill=\"#2f6fde\"><title>{label}: {amount}</title></rect>\
             <text x=\"{tx}\" y=\"{ty}\" font-size=\"12\">{amount}</text>",
            ty = y + 13,
            label = escape(&format!("{}/{}", f.route, f.rule)),
            amount = usd(f.revenue()),
            tx = 206 + w,
        );
    }
    svg.push_str("</svg>");
    svg
}

/// What the overview shows besides the per-rule figures.
pub struct OverviewExtras {
    /// p50, p95, p99 of the 402 answers (bucket upper bounds, seconds), since start.
    pub latency_402: Option<[f64; 3]>,
    pub settlement_failures: u64,
    /// Payments claimed, submitted or settled but not yet credited.
    pub open_payments: i64,
    /// (hour start ms, on chain, credits)
    pub hourly: Vec<(i64, i64, i64)>,
}

/// Latency as milliseconds for people (a bucket bound; not money).
fn ms(seconds: f64) -> String {
    if seconds.is_infinite() {
        return "over 30 s".into();
    }
    format!("≤ {:.1} ms", seconds * 1000.0)
}

/// Stacked bars of revenue per hour: on chain (dark) and from credits (light).
fn hourly_chart(hours: &[(i64, i64, i64)]) -> String {
    const HEIGHT: i64 = 80;
    const BAR: i64 = 18;
    let max = hours
        .iter()
        .map(|(_, a, b)| a + b)
        .max()
        .unwrap_or(0)
        .max(1);
    let mut svg = format!(
        "<svg role=img aria-label=\"Revenue per hour\" width=\"{}\" height=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">",
        (BAR + 4) * hours.len().max(1) as i64,
        HEIGHT + 4
    );
    for (i, (hour, onchain, credits)) in hours.iter().enumerate() {
        let x = (BAR + 4) * i as i64;
        let h1 = onchain * HEIGHT / max;
        let h2 = credits * HEIGHT / max;
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"{}\" width=\"{BAR}\" height=\"{h1}\" fill=\"#1f4fa8\"><title>{hour}: {} on chain</title></rect>\
             <rect x=\"{x}\" y=\"{}\" width=\"{BAR}\" height=\"{h2}\" fill=\"#8fb3f0\"><title>{hour}: {} from credits</title></rect>",
            HEIGHT - h1,
            usd(*onchain),
            HEIGHT - h1 - h2,
            usd(*credits),
        );
    }
    svg.push_str("</svg>");
    svg
}

pub fn overview(
    session: &Session,
    figures: &[RuleFigures],
    extras: &OverviewExtras,
    generation: u64,
    reload_error: Option<&str>,
) -> String {
    let quotes: i64 = figures.iter().map(|f| f.quotes).sum();
    let paid: i64 = figures
        .iter()
        .map(|f| f.paid_onchain + f.paid_credits)
        .sum();
    let earned: i64 = figures.iter().map(RuleFigures::revenue).sum();
    let onchain: i64 = figures.iter().map(|f| f.revenue_onchain_usd_micros).sum();
    let overall = if quotes > 0 {
        paid.saturating_mul(10_000) / quotes
    } else {
        0
    };
    let mut body = format!(
        "<h2>Last 24 hours</h2><div class=cards>\
         <div class=card><span>Quotes</span><b id=quotes>{quotes}</b></div>\
         <div class=card><span>Paid requests</span><b id=paid>{paid}</b></div>\
         <div class=card><span>Conversion</span><b id=conversion>{}</b></div>\
         <div class=card><span>Revenue</span><b id=revenue>{}</b></div>\
         <div class=card><span>of which on chain</span><b>{}</b></div></div>\
         <div class=cards><div class=card><span>402 latency p50 / p95 / p99 (since start)</span><b id=latency>{}</b></div>\
         <div class=card><span>Settlement failures (since start)</span><b id=failures>{}</b></div>\
         <div class=card><span>Open payments</span><b id=open>{}</b></div></div>\
         <h2>Revenue per hour</h2>{}",
        percent(overall),
        usd(earned),
        usd(onchain),
        extras
            .latency_402
            .map_or("no 402 yet".to_string(), |[a, b, c]| format!(
                "{} / {} / {}",
                ms(a),
                ms(b),
                ms(c)
            )),
        extras.settlement_failures,
        extras.open_payments,
        hourly_chart(&extras.hourly),
    );
    if let Some(e) = reload_error {
        let _ = write!(
            body,
            "<p class=err role=alert>The last rules reload was refused (the previous rules keep serving): {}</p>",
            escape(e)
        );
    }
    let _ = write!(
        body,
        "<h2>Revenue per rule</h2>{}<h2>Rules</h2><table id=rules><tr><th>Route</th><th>Rule</th>\
         <th>Quotes</th><th>Paid on chain</th><th>Paid from credits</th><th>Conversion</th>\
         <th>Quoted</th><th>Revenue</th></tr>",
        revenue_chart(figures)
    );
    for f in figures {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&f.route),
            escape(&f.rule),
            f.quotes,
            f.paid_onchain,
            f.paid_credits,
            percent(f.conversion_bps()),
            usd(f.quoted_usd_micros),
            usd(f.revenue()),
        );
    }
    let _ = write!(
        body,
        "</table><p>Rules loaded {generation} time(s). Figures are per-minute aggregates, written every 10 s.</p>"
    );
    layout("Overview", Some(session), &body)
}

/// What the rules page shows.
pub struct RulesView<'a> {
    pub session: &'a Session,
    pub routes: &'a [crate::http::admin::RouteFigures],
    pub generation: u64,
    pub reload_error: Option<&'a str>,
    /// (file name, has a previous version)
    pub files: &'a [(String, bool)],
    pub notice: Option<&'a str>,
    /// (method, path, body, headers) as last submitted.
    pub preview_form: Option<(&'a str, &'a str, &'a str, &'a str)>,
    pub preview_result: Option<&'a str>,
}

fn hidden_csrf(s: &Session) -> String {
    format!(
        "<input type=hidden name=csrf value=\"{}\">",
        escape(&s.csrf)
    )
}

pub fn rules(v: &RulesView<'_>) -> String {
    let mut body = String::new();
    if let Some(n) = v.notice {
        let _ = write!(
            body,
            "<p class=card role=status id=notice>{}</p>",
            escape(n)
        );
    }
    match v.reload_error {
        Some(e) => {
            let _ = write!(
                body,
                "<p class=err role=alert id=reload-error>The last reload was refused; the previous rules keep serving:<br><pre>{}</pre></p>",
                escape(e)
            );
        }
        None => {
            let _ = write!(
                body,
                "<p id=reload>Rules loaded {} time(s); the last load succeeded.</p>",
                v.generation
            );
        }
    }
    body.push_str(
        "<h2>Last 24 hours, per rule</h2><table id=rules><tr><th>Route</th><th>Rule</th><th>Quotes</th>\
         <th>Paid</th><th>Conversion</th><th>Revenue</th></tr>",
    );
    for r in v.routes {
        for f in &r.rules {
            let _ = write!(
                body,
                "<tr><td>{} <small>{} {}</small></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&r.route),
                escape(&r.methods.join(",")),
                escape(&r.path),
                escape(&f.rule),
                f.quotes,
                f.paid_onchain + f.paid_credits,
                percent(f.conversion_bps()),
                usd(f.revenue()),
            );
        }
    }
    body.push_str("</table><h2>Files</h2><ul id=files>");
    for (file, previous) in v.files {
        let _ = write!(
            body,
            "<li>{name} <a href=\"/console/rules/edit?file={q}\">edit</a>",
            name = escape(file),
            q = escape(&form_urlencoded::byte_serialize(file.as_bytes()).collect::<String>()),
        );
        if *previous {
            let _ = write!(
                body,
                " <form class=inline method=post action=/console/rules/revert>{}<input type=hidden name=file value=\"{}\"><button>Revert to previous</button></form>",
                hidden_csrf(v.session),
                escape(file)
            );
        }
        body.push_str("</li>");
    }
    let (m, p, b, h) = v.preview_form.unwrap_or(("GET", "/", "", ""));
    let _ = write!(
        body,
        "</ul><h2>What would this request cost?</h2><form method=post action=/console/rules/preview>{}\
         <p><label>Method <input name=method value=\"{}\" size=6></label> \
         <label>Path and query <input name=path value=\"{}\" size=60></label></p>\
         <p><label>JSON body<br><textarea name=body rows=4 cols=80>{}</textarea></label></p>\
         <p><label>Headers (name: value, one per line)<br><textarea name=headers rows=2 cols=80>{}</textarea></label></p>\
         <p><button>Price it</button></p></form>",
        hidden_csrf(v.session),
        escape(m),
        escape(p),
        escape(b),
        escape(h),
    );
    if let Some(r) = v.preview_result {
        let _ = write!(body, "<p class=card id=preview-result>{}</p>", escape(r));
    }
    layout("Rules", Some(v.session), &body)
}

/// A rule file in a textarea, with the errors of a refused save.
pub fn editor(session: &Session, file: &str, text: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| {
            format!(
                "<pre class=err role=alert id=save-error>{}</pre>",
                escape(e)
            )
        })
        .unwrap_or_default();
    layout(
        &format!("Edit {file}"),
        Some(session),
        &format!(
            "{error}<form method=post action=/console/rules/save>{}\
             <input type=hidden name=file value=\"{}\">\
             <p><textarea name=text rows=30 cols=110 spellcheck=false>{}</textarea></p>\
             <p><button>Check and save</button> <a href=/console/rules>Cancel</a></p></form>\
             <p>A save is compiled with the rest of the directory first (the checks of <code>tariff rules check</code>); \
             if it compiles it is written and serves the next request, and the version it replaces is kept for a revert.</p>",
            hidden_csrf(session),
            escape(file),
            escape(text),
        ),
    )
}

/// What the ledger page shows.
pub struct LedgerView<'a> {
    pub check: &'a crate::ledger::CheckReport,
    pub accounts: &'a [(crate::ledger::Account, crate::ledger::Balance)],
    pub holds: &'a [crate::ledger::Transfer],
    pub transfers: &'a crate::ledger::HistoryPage,
    pub filter: &'a crate::http::admin::TransferQuery,
    pub filter_error: Option<&'a str>,
}

fn transfer_rows(body: &mut String, transfers: &[crate::ledger::Transfer], holds: bool) {
    for t in transfers {
        let refs = &t.refs;
        let about = [
            refs.reason.as_deref(),
            refs.quote_id.as_deref(),
            refs.chain_tx.as_deref(),
            t.pending_id.as_ref().map(|p| p.as_str()),
        ]
        .into_iter()
        .flatten()
        .map(escape)
        .collect::<Vec<_>>()
        .join(" · ");
        let time = if holds {
            t.expires_at.map_or(0, |e| e.0)
        } else {
            t.created_at.0
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            t.seq,
            escape(t.id.as_str()),
            t.kind.as_str(),
            escape(t.debit.as_str()),
            escape(t.credit.as_str()),
            t.amount.0,
            time,
            about,
        );
    }
}

pub fn ledger(session: &Session, v: &LedgerView<'_>, notice: Option<&str>) -> String {
    let (check, accounts) = (v.check, v.accounts);
    let mut body = String::new();
    if let Some(n) = notice {
        let _ = write!(
            body,
            "<p class=card role=status id=notice>{}</p>",
            escape(n)
        );
    }
    let _ = write!(
        body,
        "<p id=check>{}: {} accounts, posted sum {}, pending sum {}, {} counter mismatches, {} bad resolutions.</p>",
        if check.is_clean() {
            "Ledger check clean"
        } else {
            "LEDGER CHECK FAILED"
        },
        check.accounts,
        check.posted_sum,
        check.pending_sum,
        check.mismatches.len(),
        check.bad_resolutions.len(),
    );
    body.push_str(
        "<h2>Accounts</h2><table id=accounts><tr><th>Account</th><th>Kind</th><th>Posted</th><th>Held</th><th>Available</th></tr>",
    );
    for (a, b) in accounts {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(a.id.as_str()),
            a.kind.as_str(),
            b.posted(),
            b.held().0,
            b.available()
        );
    }
    body.push_str("</table>");
    const HEAD: &str =
        "<tr><th>Seq</th><th>Id</th><th>Kind</th><th>From</th><th>To</th><th>Amount</th>";
    let _ = write!(
        body,
        "<h2>Open holds</h2><table id=holds>{HEAD}<th>Expires (ms)</th><th>About</th></tr>"
    );
    transfer_rows(&mut body, v.holds, true);
    body.push_str("</table><h2>Transfers</h2>");
    if let Some(e) = v.filter_error {
        let _ = write!(
            body,
            "<p class=err role=alert id=filter-error>{}</p>",
            escape(e)
        );
    }
    let f = v.filter;
    let value = |o: &Option<String>| escape(o.as_deref().unwrap_or(""));
    let mut kinds = String::from("<option value=\"\">any kind</option>");
    for k in crate::ledger::TransferKind::ALL {
        let selected = if f.kind.as_deref() == Some(k.as_str()) {
            " selected"
        } else {
            ""
        };
        let _ = write!(kinds, "<option{selected}>{}</option>", k.as_str());
    }
    let _ = write!(
        body,
        "<form method=get action=/console/ledger id=transfer-filter><label>Kind <select name=kind>{kinds}</select></label> \
         <label>Account <input name=account size=44 value=\"{}\"></label> <button>Filter</button></form>\
         <table id=transfers>{HEAD}<th>Created (ms)</th><th>About</th></tr>",
        value(&f.account),
    );
    transfer_rows(&mut body, &v.transfers.transfers, false);
    body.push_str("</table>");
    if let Some(next) = v.transfers.next {
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("kind", f.kind.as_deref().unwrap_or(""))
            .append_pair("account", f.account.as_deref().unwrap_or(""))
            .append_pair("before", &next.0.to_string())
            .finish();
        let _ = write!(
            body,
            "<p><a id=older href=\"/console/ledger?{}\">Older transfers</a></p>",
            escape(&q)
        );
    }
    let _ = write!(
        body,
        "<p>Amounts in micro-dollars (1000000 = $1).</p><h2>Grant or take back credits</h2>\
         <form method=post action=/console/ledger/grant>{}\
         <p><label>Account <input name=account size=44></label> <label>Micro-dollars <input name=amount size=12></label></p>\
         <p><label>Reason <input name=reason size=60></label> <label>Id (once) <input name=id size=20 value=\"{}\"></label></p>\
         <p><button>Grant</button></p></form>",
        hidden_csrf(session),
        format_args!("grant-{:08x}", rand::random::<u32>()),
    );
    layout("Ledger", Some(session), &body)
}

pub fn payments(
    session: &Session,
    counts: &[(String, i64)],
    totals: &[crate::payment::record::PaymentTotals],
    recent: &[crate::payment::record::PaymentRow],
    topups: &[crate::topup::record::TopupRow],
    notice: Option<&str>,
) -> String {
    let mut body = String::new();
    if let Some(n) = notice {
        let _ = write!(
            body,
            "<p class=card role=status id=notice>{}</p>",
            escape(n)
        );
    }
    body.push_str("<div class=cards>");
    for (status, n) in counts {
        let _ = write!(
            body,
            "<div class=card><span>{}</span><b id=\"count-{}\">{n}</b></div>",
            escape(status),
            escape(status)
        );
    }
    let _ = write!(
        body,
        "</div><form method=post action=/console/payments/reconcile>{}<button>Reconcile open payments now</button></form>\
         <h2>By network and asset</h2><table id=totals><tr><th>Network</th><th>Asset</th><th>Status</th>\
         <th>Payments</th><th>Paid for</th></tr>{}</table>\
         <h2>Recent payments</h2><table id=payments><tr><th>Network</th><th>Asset</th><th>Payer</th><th>Amount</th>\
         <th>Price</th><th>Status</th><th>Transaction</th></tr>",
        hidden_csrf(session),
        totals
            .iter()
            .map(|t| format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&t.network),
                escape(&t.asset),
                escape(&t.status),
                t.payments,
                usd(t.price_micros),
            ))
            .collect::<String>(),
    );
    for p in recent {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&p.network),
            escape(&p.asset),
            escape(&p.payer),
            escape(&p.amount),
            usd(i64::try_from(p.price_micros).unwrap_or(i64::MAX)),
            p.status.as_str(),
            escape(p.tx_hash.as_deref().unwrap_or("")),
        );
    }
    body.push_str(
        "</table><h2>Top-ups</h2><table id=topups><tr><th>Account</th><th>Network</th><th>Token</th>\
         <th>Amount</th><th>Credited</th><th>Source</th></tr>",
    );
    for t in topups {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&t.account),
            escape(&t.network),
            escape(&t.token),
            escape(&t.amount),
            t.credit,
            t.source.as_str(),
        );
    }
    body.push_str("</table>");
    layout("Payments", Some(session), &body)
}

fn avg(sum: u64, n: u64) -> String {
    UsdMicros(sum.checked_div(n).unwrap_or(0)).to_string()
}

/// The running experiment: per current rule, the two prices and the revenue at the observed
/// conversion.
pub fn experiment(
    session: &Session,
    file: &str,
    started_at: crate::time::UnixMillis,
    rows: &[super::ExperimentRow],
) -> String {
    let mut body = format!(
        "<p id=experiment>A candidate version of <b>{}</b> prices every request alongside the live rules \
         (never charged), since {} ms after the epoch.</p>",
        escape(file),
        started_at.0
    );
    body.push_str(&comparison_table("comparison", rows));
    let _ = write!(
        body,
        "<p>The candidate column assumes the same requests are paid as now; a price change may \
         change that.</p><form class=inline method=post action=/console/experiments/apply>{csrf}\
         <button>Apply the candidate</button></form> \
         <form class=inline method=post action=/console/experiments/stop>{csrf}<button>Stop</button></form>",
        csrf = hidden_csrf(session)
    );
    layout("Experiments", Some(session), &body)
}

/// Current and candidate prices of the same requests, per live route and rule.
fn comparison_table(id: &str, rows: &[super::ExperimentRow]) -> String {
    let mut t = format!(
        "<table id={id}><tr><th>Route</th><th>Rule</th><th>Requests</th><th>Price now (avg)</th>\
         <th>Candidate (avg)</th><th>Revenue observed</th><th>Candidate at this conversion</th><th>Candidate rules</th></tr>"
    );
    for r in rows {
        let c = &r.compared;
        let rules: Vec<String> = c
            .candidate_rules
            .iter()
            .map(|(k, v)| format!("{} ×{v}", escape(k)))
            .collect();
        let _ = write!(
            t,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=candidate>{}</td><td>{}</td><td class=projected>{}</td><td>{}</td></tr>",
            escape(&r.route),
            escape(&r.rule),
            c.requests,
            avg(c.current_usd_micros, c.requests),
            avg(c.candidate_usd_micros, c.requests),
            UsdMicros(r.observed_usd_micros),
            UsdMicros(r.projected_usd_micros),
            rules.join(", "),
        );
    }
    t.push_str("</table>");
    t
}

/// What a backtest found, above the form that produced it (to start the same candidate as a
/// shadow, or to try another).
pub fn backtest(session: &Session, report: &crate::http::backtest::Report, form: &str) -> String {
    let t = &report.totals;
    let mut body = format!(
        "<p id=backtest>The candidate version of <b>{}</b> re-priced <b id=backtest-inputs>{}</b> recorded \
         requests of the last {} day(s) next to today's rules ({} not priced by today's rules, {} unreadable).</p>",
        escape(&report.file),
        t.inputs,
        report.days,
        t.not_priced_now,
        t.unreadable,
    );
    body.push_str(&comparison_table("backtest-comparison", &report.rows));
    body.push_str(
        "<p>Revenue observed is what each rule earned over the same days; the candidate column \
         scales it by the candidate's prices over today's for the same requests.</p>",
    );
    body.push_str(form);
    layout("Experiments", Some(session), &body)
}

/// What the experiment form offers besides a shadow.
pub struct BacktestOffer {
    /// Whether pricing inputs are recorded (`[backtest] record = true`).
    pub recording: bool,
    pub retention_days: u64,
    pub days: u64,
}

/// The form that starts an experiment (or runs a backtest) from a candidate version of a rule
/// file.
pub fn experiment_form(
    session: &Session,
    files: &[String],
    file: &str,
    text: &str,
    error: Option<&str>,
    offer: &BacktestOffer,
) -> String {
    layout(
        "Experiments",
        Some(session),
        &experiment_form_body(session, files, file, text, error, offer),
    )
}

pub fn experiment_form_body(
    session: &Session,
    files: &[String],
    file: &str,
    text: &str,
    error: Option<&str>,
    offer: &BacktestOffer,
) -> String {
    let error = error
        .map(|e| {
            format!(
                "<pre class=err role=alert id=experiment-error>{}</pre>",
                escape(e)
            )
        })
        .unwrap_or_default();
    let mut picker = String::from("<p>Files: ");
    for f in files {
        let _ = write!(
            picker,
            "<a href=\"/console/experiments?file={}\">{}</a> ",
            escape(&form_urlencoded::byte_serialize(f.as_bytes()).collect::<String>()),
            escape(f)
        );
    }
    picker.push_str("</p>");
    let backtest = if offer.recording {
        format!(
            " or <label>re-price the recorded requests of the last \
             <input name=days type=number min=1 max={max} value={days} size=4> day(s)</label> \
             <button formaction=/console/experiments/backtest id=run-backtest>Backtest</button>",
            max = offer.retention_days,
            days = offer.days,
        )
    } else {
        " <small>(Backtests over past requests need <code>[backtest] record = true</code>.)</small>"
            .to_string()
    };
    format!(
        "{error}{picker}<p>Change prices in a candidate version of <b>{f}</b>; it will price live \
         traffic alongside the current rules without charging anything.</p>\
         <form method=post action=/console/experiments/start>{}\
         <input type=hidden name=file value=\"{f}\">\
         <p><textarea name=text rows=30 cols=110 spellcheck=false>{}</textarea></p>\
         <p><button>Start the experiment</button>{backtest}</p></form>",
        hidden_csrf(session),
        escape(text),
        f = escape(file),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_percentages_are_exact() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(percent(5_000), "50.0%");
        assert_eq!(percent(1_234), "12.3%");
        assert_eq!(percent(0), "0.0%");
    }

    #[test]
    fn the_chart_scales_bars_to_the_largest_revenue() {
        let f = |rule: &str, rev| RuleFigures {
            route: "r".into(),
            rule: rule.into(),
            revenue_credits_usd_micros: rev,
            ..RuleFigures::default()
        };
        let svg = revenue_chart(&[f("a", 100), f("<b>", 50)]);
        assert!(svg.contains("width=\"420\""), "{svg}");
        assert!(svg.contains("width=\"210\""), "{svg}");
        assert!(svg.contains("r/&lt;b&gt;"), "{svg}");
    }
}
