//! What `/metrics` exposes, through the `prometheus` crate (text format 0.0.4): counters by
//! route, rule, outcome, reason and network, and a latency histogram of every answer. Label
//! values come from the operator's rules and Tariff's own reason codes, never from the request
//! itself, so the number of series stays bounded.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Seconds: from a cached 402 (sub-millisecond) to a settlement waiting for its receipt.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How a payment ended, for `tariff_payments_total{outcome}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentOutcome {
    /// Settled and credited.
    Settled,
    /// Refused before any settlement (402 with a reason).
    Refused,
    /// Settlement failed, or its outcome is unknown (left to the reconciler).
    Failed,
}

impl PaymentOutcome {
    fn as_str(self) -> &'static str {
        match self {
            PaymentOutcome::Settled => "settled",
            PaymentOutcome::Refused => "refused",
            PaymentOutcome::Failed => "failed",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    quotes: IntCounterVec,
    free: IntCounterVec,
    pricing_errors: IntCounterVec,
    store_errors: IntCounter,
    payments: IntCounterVec,
    topups: IntCounterVec,
    latency: HistogramVec,
    batch_transactions: IntCounterVec,
    batched_payments: IntCounterVec,
    rules_generation: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

impl Default for Metrics {
    fn default() -> Self {
        let r = Registry::new();
        let quotes = counter(
            &r,
            "tariff_quotes_total",
            "402 answers by pricing route and rule: a quote created, or an open one reused",
            &["route", "rule", "outcome"],
        );
        let free = counter(
            &r,
            "tariff_free_requests_total",
            "Requests served unpaid by a free rule (or a price of zero)",
            &["route"],
        );
        let pricing_errors = counter(
            &r,
            "tariff_pricing_errors_total",
            "Requests whose price could not be computed",
            &["route"],
        );
        let store_errors = IntCounter::new(
            "tariff_quote_store_errors_total",
            "Quote store failures (answered 503)",
        )
        .expect("valid metric");
        r.register(Box::new(store_errors.clone()))
            .expect("registered once");
        let payments = counter(
            &r,
            "tariff_payments_total",
            "On-chain payments by network, outcome and reason",
            &["network", "outcome", "reason"],
        );
        let topups = counter(
            &r,
            "tariff_topups_total",
            "Top-ups credited, by network and source (x402 or transfer)",
            &["network", "source"],
        );
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "tariff_http_request_duration_seconds",
                "Time to answer, by handler (`gateway` for priced routes) and status",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["handler", "status"],
        )
        .expect("valid metric");
        r.register(Box::new(latency.clone()))
            .expect("registered once");
        let batch_transactions = counter(
            &r,
            "tariff_settlement_batch_transactions_total",
            "Settlement transactions sent by a batching settler, by network",
            &["network"],
        );
        let batched_payments = counter(
            &r,
            "tariff_settlement_batched_payments_total",
            "Payments those transactions carried (their ratio is the mean batch size)",
            &["network"],
        );
        let rules_generation = IntGauge::new(
            "tariff_rules_generation",
            "Successful loads of the rules directory",
        )
        .expect("valid metric");
        r.register(Box::new(rules_generation.clone()))
            .expect("registered once");
        Metrics {
            registry: r,
            quotes,
            free,
            pricing_errors,
            store_errors,
            payments,
            topups,
            latency,
            batch_transactions,
            batched_payments,
            rules_generation,
        }
    }
}

impl Metrics {
    pub fn quote(&self, route: &str, rule: &str, created: bool) {
        let outcome = if created { "created" } else { "reused" };
        self.quotes.with_label_values(&[route, rule, outcome]).inc();
    }

    pub fn free_served(&self, route: &str) {
        self.free.with_label_values(&[route]).inc();
    }

    pub fn pricing_error(&self, route: &str) {
        self.pricing_errors.with_label_values(&[route]).inc();
    }

    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// `network` is empty when the payment was refused before its network was known.
    pub fn payment(&self, network: &str, outcome: PaymentOutcome, reason: &str) {
        self.payments
            .with_label_values(&[network, outcome.as_str(), reason])
            .inc();
    }

    pub fn topup(&self, network: &str, source: &str) {
        self.topups.with_label_values(&[network, source]).inc();
    }

    pub fn observe(&self, handler: &str, status: u16, seconds: f64) {
        let digits = status_digits(status);
        let status = std::str::from_utf8(&digits).expect("ASCII digits");
        self.latency
            .with_label_values(&[handler, status])
            .observe(seconds);
    }

    /// The sum of a counter family's series, over those whose `label` has `value` (all of
    /// them without a filter): what the console and tests read.
    pub fn total(&self, family: &str, filter: Option<(&str, &str)>) -> u64 {
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == family)
            .flat_map(|f| f.get_metric())
            .filter(|m| {
                filter.is_none_or(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == k && l.value() == v)
                })
            })
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    /// Upper bounds (seconds) of the latency buckets holding the 50th, 95th and 99th
    /// percentiles of a handler's answers with `status`, since this process started.
    pub fn latency_quantiles(&self, handler: &str, status: &str) -> Option<[f64; 3]> {
        let families = self.registry.gather();
        let family = families
            .iter()
            .find(|f| f.name() == "tariff_http_request_duration_seconds")?;
        let metric = family.get_metric().iter().find(|m| {
            let label = |k: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == k)
                    .map(|l| l.value())
            };
            label("handler") == Some(handler) && label("status") == Some(status)
        })?;
        let h = metric.get_histogram();
        let total = h.get_sample_count();
        if total == 0 {
            return None;
        }
        let at = |q: u64| {
            // The first bucket holding at least q% of the answers (rounded up).
            let need = (total * q).div_ceil(100);
            h.get_bucket()
                .iter()
                .find(|b| b.cumulative_count() >= need)
                .map_or(f64::INFINITY, |b| b.upper_bound())
        };
        Some([at(50), at(95), at(99)])
    }

    /// The text exposition, with the gauges read now. `batched`: per network, the settlement
    /// transactions and payments a batching settler has sent (counted where they are sent, in
    /// the payment layer, and brought up to date here).
    pub fn render(&self, rules_generation: u64, batched: &[(String, u64, u64)]) -> String {
        self.rules_generation
            .set(i64::try_from(rules_generation).unwrap_or(i64::MAX));
        for (network, transactions, payments) in batched {
            for (counter, now) in [
                (&self.batch_transactions, transactions),
                (&self.batched_payments, payments),
            ] {
                let c = counter.with_label_values(&[network.as_str()]);
                c.inc_by(now.saturating_sub(c.get()));
            }
        }
        let mut out = String::new();
        TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut out)
            .expect("text encoding into a String cannot fail");
        out
    }
}

/// A status code as text without allocating (the label of every observation).
fn status_digits(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_render_as_three_digits() {
        for (code, text) in [(200u16, "200"), (402, "402"), (503, "503"), (1000, "999")] {
            assert_eq!(&status_digits(code), text.as_bytes());
        }
    }

    #[test]
    fn series_are_labelled_and_rendered() {
        let m = Metrics::default();
        m.quote("search", "simple", true);
        m.quote("search", "simple", false);
        m.quote("search", "simple", false);
        m.payment(
            "eip155:84532",
            PaymentOutcome::Refused,
            "invalid_exact_evm_payload_signature",
        );
        m.observe("gateway", 402, 0.0007);
        let text = m.render(3, &[("eip155:84532".into(), 2, 7)]);
        for _ in 0..8 {
            m.observe("gateway", 402, 0.0007);
        }
        m.observe("gateway", 402, 0.2);
        assert_eq!(
            m.latency_quantiles("gateway", "402"),
            Some([0.001, 0.25, 0.25]),
            "9 of 10 answers within 1 ms, the slowest in the 0.25 s bucket"
        );
        assert_eq!(m.latency_quantiles("gateway", "200"), None);
        assert!(
            text.contains(
                r#"tariff_quotes_total{outcome="reused",route="search",rule="simple"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains("tariff_rules_generation 3"), "{text}");
        // The batch counters follow the settler's running totals, however often scraped.
        let again = m.render(3, &[("eip155:84532".into(), 5, 19)]);
        for (text, txs, payments) in [(&text, 2, 7), (&again, 5, 19)] {
            assert!(
                text.contains(&format!(
                    "tariff_settlement_batch_transactions_total{{network=\"eip155:84532\"}} {txs}"
                )) && text.contains(&format!(
                    "tariff_settlement_batched_payments_total{{network=\"eip155:84532\"}} {payments}"
                )),
                "{text}"
            );
        }
        assert!(
            text.contains(r#"tariff_http_request_duration_seconds_bucket{handler="gateway",status="402",le="0.001"} 1"#),
            "{text}"
        );
    }
}
