//! New-quote 402s copied from a template instead of rendered.
//!
//! Two new quotes of one route at one price get 402s that differ only in the request's path
//! and query (in the resource URL, the v1 `resource` and the challenge's `uri`), the quote id
//! (in each offer's `extra`) and the sign-in challenge's nonce and timestamps. Everything else
//! (the offers, the route's description and discovery extensions, the schemas) is fixed by
//! the rules, the price and the origin the client used. Rendering it all again was ~15 % of a
//! new-quote request's CPU; a template is that render done once with sentinels in the varying
//! places, and each 402 is then its text with the request's values copied in.
//!
//! Clients sign against these bytes, so a template is exact or not used:
//! - it is built from a render of the same code ([`super::v2_json_with`], [`super::v1_json`]);
//! - it is used only after it reproduced, byte for byte, the full render of the 402 that
//!   completed it (else that key is rendered in full from then on);
//! - debug builds, and so every test, check each templated 402 against the full render.
//!
//! Only keys met twice get a template (the first sighting is remembered, the second builds),
//! so prices that never repeat (an external pricer's) cost one short scan, not a probe render.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::http::HeaderValue;
use axum::response::Response;
use bytes::Bytes;

use super::{Asked, Rendered, V1_ERROR, V2_ERROR, respond, v1_json, v2_json_with};
use crate::money::UsdMicros;
use crate::pricing::Generation;
use crate::quote::{Offer, Quote, QuoteId};
use crate::x402::{self, siwx};

/// How many (rules, route, method, price, origin) keys are remembered; beyond it the oldest
/// goes. Each template is ~4 KB.
pub const TEMPLATES: usize = 64;

// Sentinels: texts no rendered 402 contains by chance, which JSON writes as they are (no
// character to escape), and whose path sentinel keeps the URL's authority where it was.
const PATH_SENTINEL: &str = "/tariff-template-path-3f9b1c7e";
const ID_SENTINEL: &str = "q_7a11f0e4e71000000000dead0402beef";
const NONCE_SENTINEL: &str = "tariff-template-nonce-8e2d4a";

/// Where each part of a templated 402 comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    /// The probe render's bytes in this range, as they are.
    Text(Range<usize>),
    /// The request's path and query, as JSON string contents.
    PathAndQuery,
    QuoteId,
    /// The sign-in challenge's [`siwx::Challenge::varying_part`].
    Challenge,
}

/// One body (the v2 JSON or the v1 body) as text and the places values go.
#[derive(Debug)]
struct Layout {
    text: Box<[u8]>,
    pieces: Box<[Piece]>,
}

impl Layout {
    /// `probe` cut at every occurrence of a mark.
    fn split(probe: Vec<u8>, marks: &[(&[u8], Piece)]) -> Layout {
        let mut pieces = Vec::new();
        let (mut at, mut text_from) = (0, 0);
        while at < probe.len() {
            let hit = marks
                .iter()
                .find(|(m, _)| !m.is_empty() && probe[at..].starts_with(m));
            match hit {
                Some((m, piece)) => {
                    if text_from < at {
                        pieces.push(Piece::Text(text_from..at));
                    }
                    pieces.push(piece.clone());
                    at += m.len();
                    text_from = at;
                }
                None => at += 1,
            }
        }
        if text_from < probe.len() {
            pieces.push(Piece::Text(text_from..probe.len()));
        }
        Layout {
            text: probe.into_boxed_slice(),
            pieces: pieces.into_boxed_slice(),
        }
    }

    fn fill(&self, v: &Values<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len() + 256);
        for piece in &self.pieces {
            match piece {
                Piece::Text(r) => out.extend_from_slice(&self.text[r.clone()]),
                Piece::PathAndQuery => out.extend_from_slice(&v.path_and_query),
                Piece::QuoteId => out.extend_from_slice(v.quote_id.as_bytes()),
                Piece::Challenge => {
                    out.extend_from_slice(v.challenge.as_deref().unwrap_or_default().as_bytes())
                }
            }
        }
        out
    }
}

/// A request's values for a template.
struct Values<'a> {
    path_and_query: Cow<'a, [u8]>,
    quote_id: &'a str,
    challenge: Option<String>,
}

impl<'a> Values<'a> {
    fn of(quote: &'a Quote, path_and_query: &'a str, sign_in: Option<&siwx::Challenge>) -> Self {
        Values {
            path_and_query: json_string_contents(path_and_query),
            quote_id: quote.id.as_str(),
            challenge: sign_in.map(siwx::Challenge::varying_part),
        }
    }
}

/// `s` as serde_json writes it between the quotes of a string.
fn json_string_contents(s: &str) -> Cow<'_, [u8]> {
    // serde_json escapes only these; every other byte (UTF-8 included) is written as it is.
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        return Cow::Borrowed(s.as_bytes());
    }
    let quoted = serde_json::to_vec(s).expect("a string serialises");
    Cow::Owned(quoted[1..quoted.len() - 1].to_vec())
}

/// What fixes a 402 apart from a template's values. The challenge's domain comes from the
/// origin, its chains from the offers, its statement and schema setting are constant.
struct Key {
    rules: Generation,
    route: String,
    method: String,
    price: UsdMicros,
    offers: Arc<[Offer]>,
    origin: Box<str>,
    sign_in: bool,
}

impl Key {
    fn matches(&self, at: &At<'_>) -> bool {
        self.rules.is(at.asked.rules)
            && self.price == at.asked.quote.price
            && self.sign_in == at.asked.sign_in.is_some()
            && (Arc::ptr_eq(&self.offers, &at.asked.quote.offers)
                || *self.offers == *at.asked.quote.offers)
            && self.route == at.asked.route.id
            && self.method == at.asked.quote.method
            && *self.origin == *at.origin
    }
}

/// A key's template, or what is known of it so far.
#[derive(Clone)]
enum State {
    /// Met once: the next 402 of this key builds its template.
    Seen,
    Built(Arc<Template>),
    /// Its template did not reproduce the full render: always rendered in full.
    Refused,
}

struct Template {
    v2: Layout,
    v1: Layout,
    price: HeaderValue,
}

/// The request a 402 is for: what the gateway asked, and the origin its URL starts with.
pub(super) struct At<'a> {
    pub asked: &'a Asked<'a>,
    pub origin: &'a str,
}

impl<'a> At<'a> {
    /// `None` for a top-up's quote, or when the URL does not end with the path and query (it
    /// always does from the gateway).
    pub fn new(asked: &'a Asked<'a>) -> Option<Self> {
        let origin = asked.resource_url.strip_suffix(asked.path_and_query)?;
        (asked.quote.topup.is_none()).then_some(At { asked, origin })
    }
}

/// The templates of recent keys.
#[derive(Default)]
pub struct Templates {
    keys: Mutex<Vec<(Key, State)>>,
}

impl Templates {
    /// The 402 of a new quote (no error message).
    pub(super) fn answer(&self, at: &At<'_>) -> Response {
        let known = {
            let keys = self.lock();
            keys.iter()
                .find(|(k, _)| k.matches(at))
                .map(|(_, s)| s.clone())
        };
        match known {
            Some(State::Built(template)) => return self::fill(&template, at),
            Some(State::Refused) => return full(at).response(None),
            Some(State::Seen) => {}
            None => {
                self.remember(at, State::Seen);
                return full(at).response(None);
            }
        }
        // Met for the second time: build its template from this 402.
        let rendered = full(at);
        let state = match build(at, &rendered) {
            Some(t) => State::Built(Arc::new(t)),
            None => {
                tracing::warn!(route = %at.asked.route.id, "a 402 template did not reproduce its render; rendering this route's 402s in full");
                State::Refused
            }
        };
        self.remember(at, state);
        rendered.response(None)
    }

    fn remember(&self, at: &At<'_>, state: State) {
        let mut keys = self.lock();
        if let Some(slot) = keys.iter_mut().find(|(k, _)| k.matches(at)) {
            // A concurrent request may have got further with this key: `Seen` never undoes it.
            if !matches!(state, State::Seen) {
                slot.1 = state;
            }
            return;
        }
        if keys.len() >= TEMPLATES {
            keys.remove(0);
        }
        keys.push((
            Key {
                rules: Generation::of(at.asked.rules),
                route: at.asked.route.id.clone(),
                method: at.asked.quote.method.clone(),
                price: at.asked.quote.price,
                offers: at.asked.quote.offers.clone(),
                origin: at.origin.into(),
                sign_in: at.asked.sign_in.is_some(),
            },
            state,
        ));
    }

    /// How many keys have a template (for tests).
    pub fn built(&self) -> usize {
        self.lock()
            .iter()
            .filter(|(_, s)| matches!(s, State::Built(_)))
            .count()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(Key, State)>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The 402 rendered in full, as without templates.
fn full(at: &At<'_>) -> Rendered {
    Rendered::new(
        at.asked.quote,
        at.asked.route,
        at.asked.resource_url,
        None,
        at.asked.sign_in,
        None,
    )
}

fn fill(template: &Template, at: &At<'_>) -> Response {
    let values = Values::of(at.asked.quote, at.asked.path_and_query, at.asked.sign_in);
    let v2 = template.v2.fill(&values);
    let v1 = template.v1.fill(&values);
    if cfg!(debug_assertions) {
        let rendered = full(at);
        assert!(
            *rendered.v2_json == *v2 && *rendered.v1_body == *v1,
            "a templated 402 differs from its render:\n{}\n{}",
            String::from_utf8_lossy(&v2),
            String::from_utf8_lossy(&rendered.v2_json),
        );
    }
    let base64 = x402::codec::encode_base64(&v2);
    respond(
        Bytes::from(v1),
        Bytes::from(base64),
        HeaderValue::from_str(at.asked.quote.id.as_str()).expect("a quote id is ASCII"),
        template.price.clone(),
    )
}

/// The template of `at`'s key: a render with sentinels in the varying places, cut there, kept
/// only if it reproduces `rendered` (this request's own full render).
fn build(at: &At<'_>, rendered: &Rendered) -> Option<Template> {
    let probe_quote = Quote {
        id: QuoteId::try_from(ID_SENTINEL.to_string()).ok()?,
        ..at.asked.quote.clone()
    };
    let probe_url = format!("{}{PATH_SENTINEL}", at.origin);
    let probe_challenge = at.asked.sign_in.map(|c| siwx::Challenge {
        uri: probe_url.clone(),
        nonce: NONCE_SENTINEL.into(),
        ..c.clone()
    });
    let (v2, _) = v2_json_with(
        &probe_quote,
        at.asked.route,
        &probe_url,
        V2_ERROR,
        probe_challenge.as_ref(),
    );
    let v1 = v1_json(&probe_quote, at.asked.route, &probe_url, V1_ERROR);
    let varying = probe_challenge.as_ref().map(siwx::Challenge::varying_part);
    let marks = [
        (PATH_SENTINEL.as_bytes(), Piece::PathAndQuery),
        (ID_SENTINEL.as_bytes(), Piece::QuoteId),
        (
            varying.as_deref().unwrap_or_default().as_bytes(),
            Piece::Challenge,
        ),
    ];
    let template = Template {
        v2: Layout::split(v2, &marks),
        v1: Layout::split(v1, &marks),
        price: rendered.price.clone(),
    };
    let values = Values::of(at.asked.quote, at.asked.path_and_query, at.asked.sign_in);
    let exact = *template.v2.fill(&values) == *rendered.v2_json
        && *template.v1.fill(&values) == *rendered.v1_body;
    exact.then_some(template)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::expr::ExprEnv;
    use crate::pricing::rules::{DEFAULT_STORED_ANSWER_BYTES, LoadOptions, load_sources};
    use crate::pricing::{Route, RuleSet};
    use crate::quote::{OfferScheme, RequestHash, RuleRef, TransferMethod};
    use crate::time::UnixMillis;
    use crate::x402::Network;
    use proptest::prelude::*;

    fn rules(extension_schemas: bool) -> Arc<RuleSet> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pricing-rules");
        let text = std::fs::read_to_string(dir.join("search.toml")).unwrap();
        let opts = LoadOptions {
            max_price: UsdMicros(10_000_000),
            max_stored_answer_bytes: DEFAULT_STORED_ANSWER_BYTES,
            extension_schemas,
        };
        Arc::new(load_sources(&[(dir.join("search.toml"), text)], &ExprEnv::new(), &opts).unwrap())
    }

    /// Offers as a server with v1 and v2-only networks, EIP-3009 and Permit2, `exact` and
    /// `upto` would make them.
    fn offers(price: u64) -> Arc<[Offer]> {
        let offer = |network: &str, decimals: u32, method, scheme| Offer {
            network: Network::parse(network).unwrap(),
            asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e".into(),
            amount: (u128::from(price) * 10u128.pow(decimals - 6)).to_string(),
            pay_to: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
            max_timeout_seconds: 300,
            eip712_name: "USDC".into(),
            eip712_version: "2".into(),
            transfer_method: method,
            scheme,
            facilitator: (scheme == OfferScheme::Upto)
                .then(|| "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC".into()),
        };
        vec![
            offer(
                "eip155:84532",
                6,
                TransferMethod::Eip3009,
                OfferScheme::Exact,
            ),
            offer(
                "eip155:31337",
                18,
                TransferMethod::Permit2,
                OfferScheme::Exact,
            ),
            offer(
                "eip155:84532",
                6,
                TransferMethod::Permit2,
                OfferScheme::Upto,
            ),
        ]
        .into()
    }

    fn quote(bits: u128, method: &str, price: u64, offers: &Arc<[Offer]>) -> Quote {
        Quote {
            id: QuoteId::from_bits(bits),
            request_hash: RequestHash([7; 32]),
            price: UsdMicros(price),
            rule: RuleRef {
                route: "search".into(),
                rule: "simple-lookup".into(),
            },
            method: method.into(),
            path: "/search".into(),
            offers: offers.clone(),
            created_at: UnixMillis(1_700_000_000_000),
            expires_at: UnixMillis(1_700_000_300_000),
            topup: None,
        }
    }

    fn challenge(url: &str, nonce: u128, now_ms: u64, with_schema: bool) -> siwx::Challenge {
        siwx::Challenge {
            domain: crate::http::sign_in::authority(url).to_string(),
            uri: url.to_string(),
            statement: "Sign in".into(),
            nonce: format!("{nonce:032x}"),
            issued_at_ms: now_ms,
            expires_at_ms: now_ms + 300_000,
            chains: vec!["eip155:84532".into(), "eip155:31337".into()],
            with_schema,
        }
    }

    /// A new quote's 402 as the gateway asks for it.
    fn asked<'a>(
        rules: &'a Arc<RuleSet>,
        quote: &'a Quote,
        route: &'a Route,
        url: &'a str,
        path_and_query: &'a str,
        sign_in: Option<&'a siwx::Challenge>,
    ) -> Asked<'a> {
        Asked {
            rules,
            quote,
            created: true,
            route,
            resource_url: url,
            path_and_query,
            sign_in,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// A template built from one request's 402 gives any other request of its key exactly
        /// the 402 a full render gives it: any path and query (characters JSON escapes,
        /// UTF-8), any quote id, challenge or none, either method, with or without schemas.
        #[test]
        fn a_templated_402_is_its_full_render(
            first_path in "/[ -~]{0,40}",
            path in "/(\\PC|[\"\\\\\\x01\\x1f]){0,60}",
            bits in any::<(u128, u128)>(),
            nonces in any::<(u128, u128)>(),
            now_ms in 0u64..4_000_000_000_000,
            price in 1u64..1_000_000,
            post in any::<bool>(),
            sign_in in any::<bool>(),
            schemas in any::<bool>(),
            origin in prop::sample::select(vec!["http://127.0.0.1:8080", "https://api.example.com/v1", "http://[::1]:9"]),
        ) {
            let rules = rules(schemas);
            let (route, _) = rules.match_route("GET", "/search").unwrap();
            let offers = offers(price);
            let method = if post { "POST" } else { "GET" };
            // The request that builds the template.
            let q1 = quote(bits.0, method, price, &offers);
            let url1 = format!("{origin}{first_path}");
            let c1 = challenge(&url1, nonces.0, now_ms, schemas);
            let c1 = sign_in.then_some(&c1);
            let a1 = asked(&rules, &q1, route, &url1, &first_path, c1);
            let at1 = At::new(&a1).unwrap();
            let template = build(&at1, &full(&at1)).expect("the template reproduces its render");
            // Another request of the same key.
            let q2 = quote(bits.1, method, price, &offers);
            let url2 = format!("{origin}{path}");
            let c2 = challenge(&url2, nonces.1, now_ms + 1, schemas);
            let c2 = sign_in.then_some(&c2);
            let a2 = asked(&rules, &q2, route, &url2, &path, c2);
            let at2 = At::new(&a2).unwrap();
            let values = Values::of(&q2, &path, c2);
            let rendered = full(&at2);
            prop_assert_eq!(String::from_utf8(template.v2.fill(&values)).unwrap(), String::from_utf8(rendered.v2_json.to_vec()).unwrap());
            prop_assert_eq!(String::from_utf8(template.v1.fill(&values)).unwrap(), String::from_utf8(rendered.v1_body.to_vec()).unwrap());
        }
    }

    #[test]
    fn a_key_gets_its_template_the_second_time_and_keeps_it() {
        let rules = rules(true);
        let (route, _) = rules.match_route("GET", "/search").unwrap();
        let templates = Templates::default();
        let offers = offers(20_000);
        let answer = |bits: u128, pq: &str, origin: &str, price: u64| {
            let q = quote(bits, "GET", price, &offers);
            let url = format!("{origin}{pq}");
            let a = asked(&rules, &q, route, &url, pq, None);
            let at = At::new(&a).unwrap();
            templates.answer(&at).status()
        };
        assert_eq!(answer(1, "/search?q=a", "http://h", 20_000), 402);
        assert_eq!(templates.built(), 0, "met once: no template yet");
        answer(2, "/search?q=b", "http://h", 20_000);
        assert_eq!(templates.built(), 1, "met twice: templated");
        answer(3, "/search?q=c", "http://h", 20_000);
        assert_eq!(templates.built(), 1, "used, not built again");
        // A request that raced the build and saw the key unknown does not undo the template.
        let q = quote(9, "GET", 20_000, &offers);
        let a = asked(
            &rules,
            &q,
            route,
            "http://h/search?q=i",
            "/search?q=i",
            None,
        );
        let at = At::new(&a).unwrap();
        templates.remember(&at, State::Seen);
        assert_eq!(templates.built(), 1);
        // Another origin, or another price, is another key.
        answer(4, "/search?q=d", "http://other", 20_000);
        answer(5, "/search?q=e", "http://other", 20_000);
        answer(6, "/search?q=f", "http://h", 50_000);
        answer(7, "/search?q=g", "http://h", 50_000);
        assert_eq!(templates.built(), 3);
        // Rules reloaded: their keys no longer match.
        let reloaded = self::rules(true);
        let (route2, _) = reloaded.match_route("GET", "/search").unwrap();
        let q = quote(8, "GET", 20_000, &offers);
        let a = asked(
            &reloaded,
            &q,
            route2,
            "http://h/search?q=h",
            "/search?q=h",
            None,
        );
        let at = At::new(&a).unwrap();
        templates.answer(&at);
        assert_eq!(templates.built(), 3, "a new rules generation starts unseen");
    }

    #[test]
    fn at_most_templates_keys_are_remembered() {
        let rules = rules(true);
        let (route, _) = rules.match_route("GET", "/search").unwrap();
        let templates = Templates::default();
        let offers = offers(20_000);
        for price in 0..(TEMPLATES as u64 + 10) {
            for bits in 0..2 {
                let q = quote(bits, "GET", 1 + price, &offers);
                let a = asked(&rules, &q, route, "http://h/s", "/s", None);
                let at = At::new(&a).unwrap();
                templates.answer(&at);
            }
        }
        assert_eq!(templates.lock().len(), TEMPLATES);
        assert_eq!(templates.built(), TEMPLATES);
    }

    #[test]
    fn json_string_contents_is_what_serde_json_writes() {
        for s in [
            "/a?b=c",
            "/q?x=\"y\"",
            "/back\\slash",
            "/ctl\u{1}",
            "/é?ü=€",
            "",
        ] {
            let quoted = serde_json::to_string(s).unwrap();
            assert_eq!(
                &*json_string_contents(s),
                &quoted.as_bytes()[1..quoted.len() - 1],
                "{s:?}"
            );
        }
    }

    #[test]
    fn a_layout_cuts_at_every_mark() {
        let marks = [
            (b"XX".as_slice(), Piece::QuoteId),
            (b"P".as_slice(), Piece::PathAndQuery),
        ];
        let l = Layout::split(b"aXXbPcXX".to_vec(), &marks);
        assert_eq!(
            *l.pieces,
            [
                Piece::Text(0..1),
                Piece::QuoteId,
                Piece::Text(3..4),
                Piece::PathAndQuery,
                Piece::Text(5..6),
                Piece::QuoteId,
            ]
        );
        let v = Values {
            path_and_query: Cow::Borrowed(b"/p"),
            quote_id: "id",
            challenge: None,
        };
        assert_eq!(l.fill(&v), b"aidb/pcid");
    }
}
