//! One test per pitfall measured in `shared/reference/pricing-expressions.md`,
//! plus the lint's messages, the sign analysis and a realistic rule set.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use serde_json::{Value as Json, json};

use super::functions::cached_regex;
use super::*;

/// Building the env costs tens of µs; share one like the server does.
static ENV: LazyLock<ExprEnv> = LazyLock::new(ExprEnv::new);

fn request() -> RequestView {
    RequestView {
        method: "POST".to_owned(),
        path: "/v1/search".to_owned(),
        params: BTreeMap::from([("index".to_owned(), "web".to_owned())]),
        query: BTreeMap::from([(
            "q".to_owned(),
            "What is the price/earnings ratio and a quote for ACME?".to_owned(),
        )]),
        headers: BTreeMap::from([
            ("x-client".to_owned(), "acme".to_owned()),
            ("content-type".to_owned(), "application/json".to_owned()),
        ]),
        body_size: 413,
    }
}

fn body() -> Json {
    json!({
        "documents": ["a", "b", "c"],
        "options": {"top_k": 5, "lang": "en"},
        "n": 3,
        "f": 1.5,
        "big": 18446744073709551615u64,
        "docs": [{"id": 1, "ok": true}, {"id": 2, "ok": false}, {"id": 3, "ok": true}],
        "pat": "a+",
    })
}

fn response() -> Json {
    json!({"usage": {"total_tokens": 932, "prompt_tokens": 100}})
}

fn compile(src: &str, kind: ExprKind, scope: Scope) -> Expr {
    ENV.compile(src, kind, scope)
        .unwrap_or_else(|e| panic!("`{src}` should compile: {e}"))
}

fn compile_err(src: &str, kind: ExprKind, scope: Scope) -> CompileError {
    match ENV.compile(src, kind, scope) {
        Ok(_) => panic!("`{src}` should not compile"),
        Err(e) => e,
    }
}

/// Evaluates a request-scope predicate against `request()` / `body()`.
fn pred(src: &str) -> Result<bool, EvalError> {
    let (r, b) = (request(), body());
    let bound = ENV.bind(&EvalInput {
        request: &r,
        body: &b,
        response: None,
    });
    compile(src, ExprKind::Predicate, Scope::Request).eval_predicate(&bound)
}

/// Evaluates a response-scope amount against all three inputs.
fn amount(src: &str) -> Result<u64, EvalError> {
    let (r, b, resp) = (request(), body(), response());
    let bound = ENV.bind(&EvalInput {
        request: &r,
        body: &b,
        response: Some(&resp),
    });
    compile(src, ExprKind::Amount, Scope::Response).eval_amount(&bound)
}

fn may_be_negative(src: &str) -> bool {
    compile(src, ExprKind::Amount, Scope::Response).may_be_negative()
}

#[test]
fn handles_are_shareable_across_threads() {
    fn send_sync<T: Send + Sync + Clone>() {}
    send_sync::<ExprEnv>();
    send_sync::<Expr>();
}

// --- Binding: int/uint (pitfall: serde makes JSON integers `uint`) ---------

#[test]
fn json_integers_mix_with_int_literals() {
    assert_eq!(amount("response.usage.total_tokens * 2"), Ok(1864));
    assert_eq!(amount("body.options.top_k * 2"), Ok(10));
    assert_eq!(amount("request.body_size * 2"), Ok(826));
    // Beyond i64 only `uint` is exact; it stays `uint` and needs uint math.
    assert_eq!(amount("body.big"), Ok(u64::MAX));
    assert_eq!(amount("body.big / 2u"), Ok(u64::MAX / 2));
}

#[test]
fn absent_body_fields_are_tested_with_has() {
    assert_eq!(pred("has(body.nope)"), Ok(false));
    assert_eq!(pred("has(body.options.top_k)"), Ok(true));
    assert_eq!(pred("has(request.headers.x)"), Ok(false));
    assert_eq!(pred("'x-client' in request.headers"), Ok(true));
    assert_eq!(pred("request.headers['x-client'] == 'acme'"), Ok(true));
    // Reading an absent field is an error, which the caller treats as "no
    // match"; `&&`/`||` absorb it per spec.
    assert!(matches!(
        pred("body.nope == 1"),
        Err(EvalError::Execution(_))
    ));
    assert!(pred("has(body.nope.deeper)").is_err());
    assert_eq!(pred("body.nope == 1 || true"), Ok(true));
    assert_eq!(pred("has(body.nope) && body.nope > 1"), Ok(false));
    assert_eq!(amount("body.?max_tokens.orValue(256)"), Ok(256));
    assert_eq!(amount("size(body.?nope.orValue([]))"), Ok(0));
}

#[test]
fn an_empty_body_binds_as_an_empty_map() {
    let r = request();
    let empty = json!({});
    let bound = ENV.bind(&EvalInput {
        request: &r,
        body: &empty,
        response: None,
    });
    let e = compile("has(body.documents)", ExprKind::Predicate, Scope::Request);
    assert_eq!(e.eval_predicate(&bound), Ok(false));
}

// --- matches: cached, literal, precompiled ---------------------------------

#[test]
fn the_regex_cache_returns_the_same_compiled_regex() {
    let pattern = r"(?i)\bcache-test-\d+\b";
    let src = format!("request.path.matches('{}')", pattern.replace('\\', "\\\\"));
    compile(&src, ExprKind::Predicate, Scope::Request);
    let a = cached_regex(pattern).unwrap();
    let b = cached_regex(pattern).unwrap();
    assert!(
        Arc::ptr_eq(&a, &b),
        "compiled once, then served from the cache"
    );
    assert_eq!(
        a.as_str(),
        pattern,
        "compile() precompiled the rule's pattern"
    );
}

#[test]
fn matches_works_in_both_call_styles() {
    assert_eq!(pred("request.path.matches('^/v1/')"), Ok(true));
    assert_eq!(pred("matches(request.path, '^/v2/')"), Ok(false));
    assert_eq!(
        pred(r"request.query.q.matches('(?i)\\bQUOTE\\b')"),
        Ok(true)
    );
}

#[test]
fn regexes_must_be_valid_literals() {
    let e = compile_err(
        "request.path.matches(body.pat)",
        ExprKind::Predicate,
        Scope::Request,
    );
    assert_eq!(e.to_string(), "regex in matches() must be a string literal");
    let e = compile_err(
        "matches(request.path, request.query.q)",
        ExprKind::Predicate,
        Scope::Request,
    );
    assert!(matches!(e, CompileError::NonLiteralRegex));
    let e = compile_err(
        "request.path.matches('(')",
        ExprKind::Predicate,
        Scope::Request,
    );
    assert!(
        e.to_string().starts_with("invalid regex `(` in matches():"),
        "{e}"
    );
    // Compiling this blows the 1 MiB size limit: rejected at load, in ms.
    let e = compile_err(
        r"request.path.matches('\\w{100}{100}')",
        ExprKind::Predicate,
        Scope::Request,
    );
    assert!(matches!(e, CompileError::InvalidRegex { .. }), "{e}");
    // In CEL '\b' is a backspace: a rule that would silently never match.
    let e = compile_err(
        r"request.path.matches('\bquote\b')",
        ExprKind::Predicate,
        Scope::Request,
    );
    assert!(e.to_string().contains("backspace"), "{e}");
    let e = compile_err(
        "request.path.matches()",
        ExprKind::Predicate,
        Scope::Request,
    );
    assert!(matches!(e, CompileError::MatchesArity));
}

// --- Names: variables and functions from allowlists ------------------------

#[test]
fn unknown_variables_are_named() {
    let e = compile_err(
        "reqest.method == 'GET'",
        ExprKind::Predicate,
        Scope::Request,
    );
    assert_eq!(
        e.to_string(),
        "unknown variable `reqest` (known: request, body)"
    );
    let e = compile_err("respons.x == 1", ExprKind::Predicate, Scope::Response);
    assert_eq!(
        e.to_string(),
        "unknown variable `respons` (known: request, body, response)"
    );
    let e = compile_err(
        "body.docs.exists(d, e.ok)",
        ExprKind::Predicate,
        Scope::Request,
    );
    assert_eq!(
        e.to_string(),
        "unknown variable `e` (known: request, body, d)"
    );
    // Type names are not values here either.
    let e = compile_err("type(body.n) == int", ExprKind::Predicate, Scope::Request);
    assert!(matches!(e, CompileError::FunctionNotAllowed(_)), "{e}");
}

#[test]
fn response_only_in_response_scope() {
    let e = compile_err(
        "response.usage.total_tokens > 0",
        ExprKind::Predicate,
        Scope::Request,
    );
    assert!(matches!(e, CompileError::ResponseNotInScope), "{e}");
    let expr = compile(
        "response.usage.total_tokens",
        ExprKind::Amount,
        Scope::Response,
    );
    assert!(expr.uses_response());
    let (r, b) = (request(), body());
    let bound = ENV.bind(&EvalInput {
        request: &r,
        body: &b,
        response: None,
    });
    assert_eq!(expr.eval_amount(&bound), Err(EvalError::NoResponse));
}

#[test]
fn only_allowlisted_functions() {
    for (src, name) in [
        ("foo(1) == 1", "foo"),
        ("body.pat.bogus()", "bogus"),
        ("double(body.n) > 1.0", "double"),
        ("strings.quote(body.pat) == ''", "strings.quote"),
        ("math.abs(body.n) > 1", "math.abs"),
        (
            "timestamp('2026-01-01T00:00:00Z') > timestamp('2025-01-01T00:00:00Z')",
            "timestamp",
        ),
        ("optional.of(1).hasValue()", "optional.of"),
        ("body.pat.usd() > 0", "usd"),
    ] {
        let e = compile_err(src, ExprKind::Predicate, Scope::Request);
        assert_eq!(
            e.to_string(),
            format!("function `{name}` is not allowed"),
            "{src}"
        );
    }
    for src in [
        "request.path.startsWith('/v1') && request.path.endsWith('search')",
        "request.method.lowerAscii() == 'post' && request.path.contains('search')",
        "request.path.split('/').size() == 3 && size(request.path) > 1",
        "request.path.replace('/', '.').substring(1).indexOf('search') >= 0",
        "string(body.n) + 'x' == '3x' && int('12') == 12 && uint(1) == 1u",
        "body.documents.join(',').trim().upperAscii() == 'A,B,C'",
        "words(request.query.q) > 3 && body.docs.all(d, d.id > 0)",
    ] {
        assert_eq!(pred(src), Ok(true), "{src}");
    }
}

// --- Bounded work and stack ------------------------------------------------

#[test]
fn nested_comprehensions_are_rejected() {
    for src in [
        "body.docs.exists(a, body.docs.exists(b, a.id == b.id))",
        "body.docs.map(a, body.docs.filter(c, c == a).size()).size() > 0",
        "body.docs.all(a, [1, 2].all(x, x > 0))",
    ] {
        let e = compile_err(src, ExprKind::Predicate, Scope::Request);
        assert_eq!(
            e.to_string(),
            "nested comprehensions are not allowed",
            "{src}"
        );
    }
    // Chained comprehensions run one after the other: linear, allowed.
    assert_eq!(
        amount("size(body.docs.filter(d, d.ok).map(d, d.id).filter(i, i > 1))"),
        Ok(1)
    );
}

#[test]
fn a_long_chain_is_rejected_before_it_can_overflow_the_stack() {
    let chain = vec!["1"; 2000].join(" + ");
    let e = compile_err(&chain, ExprKind::Amount, Scope::Request);
    assert!(matches!(e, CompileError::TooLarge { max: 256, .. }), "{e}");
    assert_eq!(e.to_string(), "expression too large: 3999 nodes (max 256)");
    // Within both limits (127 nodes, depth 64) it compiles and evaluates.
    let chain = vec!["1"; 64].join(" + ");
    assert_eq!(amount(&chain), Ok(64));
    // Beyond the source cap it is not even parsed.
    let e = compile_err(
        &vec!["1"; 5000].join(" + "),
        ExprKind::Amount,
        Scope::Request,
    );
    assert!(matches!(e, CompileError::TooLong { .. }), "{e}");
}

#[test]
fn deep_nesting_is_rejected() {
    let src = format!("size({}1{}) > 0", "[".repeat(70), "]".repeat(70));
    let e = compile_err(&src, ExprKind::Predicate, Scope::Request);
    assert!(matches!(e, CompileError::TooDeep { max: 64, .. }), "{e}");
}

// --- Results: checked arithmetic and typed amounts --------------------------

#[test]
fn overflow_is_an_error_not_a_wrap() {
    for src in [
        "9223372036854775807 + 1",
        "body.n * 9223372036854775807",
        "18446744073709551615u + 1u",
        "math.greatest(0, -9223372036854775807 - 2)",
    ] {
        assert!(matches!(amount(src), Err(EvalError::Overflow(_))), "{src}");
    }
    assert!(matches!(
        amount("5 / (body.n - 3)"),
        Err(EvalError::DivisionByZero(_))
    ));
    assert!(matches!(amount("5 % 0"), Err(EvalError::DivisionByZero(_))));
}

#[test]
fn amounts_are_non_negative_integers() {
    assert_eq!(amount("100 - 500"), Err(EvalError::Negative(-400)));
    assert_eq!(
        amount("body.f * 2.0"),
        Err(EvalError::NotAnInteger("double".to_owned()))
    );
    assert_eq!(
        amount("body.pat"),
        Err(EvalError::NotAnInteger("string".to_owned()))
    );
    // Mixing a JSON double with an int literal has no overload: no implicit
    // float on a money path.
    assert!(matches!(amount("body.f * 2"), Err(EvalError::Execution(_))));
    assert_eq!(amount("0"), Ok(0));
    assert_eq!(amount("7u"), Ok(7));
    assert!(matches!(
        EvalError::Negative(-400).to_string().as_str(),
        "amount is negative: -400"
    ));
}

#[test]
fn int_and_uint_never_truncate_a_double() {
    // Stock cel: `uint(2.9)` is `2u`, a float deciding a price.
    for src in ["uint(body.f)", "int(body.f * 100.0)", "uint(2.9)"] {
        let err = amount(src).unwrap_err();
        assert!(
            err.to_string().contains("doubles are not converted"),
            "{src}: {err}"
        );
    }
    assert_eq!(amount("uint('7') + uint(body.n)"), Ok(10));
    assert_eq!(amount("int('12') * int(3u)"), Ok(36));
    assert!(
        amount("uint(-1)")
            .unwrap_err()
            .to_string()
            .contains("out of range")
    );
    assert!(amount("int(18446744073709551615u)").is_err());
    assert!(amount("int('12x')").is_err());
    assert!(
        amount("int(true)")
            .unwrap_err()
            .to_string()
            .contains("cannot convert a bool")
    );
}

#[test]
fn statically_obvious_kind_errors_fail_at_compile() {
    let e = compile_err("'20000'", ExprKind::Amount, Scope::Request);
    assert!(matches!(e, CompileError::AmountNotInteger("string")), "{e}");
    let e = compile_err("1.5", ExprKind::Amount, Scope::Request);
    assert!(matches!(e, CompileError::AmountNotInteger("double")), "{e}");
    let e = compile_err("size(body.documents) > 1", ExprKind::Amount, Scope::Request);
    assert!(matches!(e, CompileError::AmountNotInteger("bool")), "{e}");
    let e = compile_err("true ? 'a' : 'b'", ExprKind::Amount, Scope::Request);
    assert!(matches!(e, CompileError::AmountNotInteger("string")), "{e}");
    let e = compile_err("1 + 1", ExprKind::Predicate, Scope::Request);
    assert!(matches!(e, CompileError::PredicateNotBool("int")), "{e}");
    let e = compile_err(
        "body.docs.map(d, d.id)",
        ExprKind::Predicate,
        Scope::Request,
    );
    assert!(matches!(e, CompileError::PredicateNotBool("list")), "{e}");
    // Not obvious statically: caught at evaluation.
    assert_eq!(pred("body.n"), Err(EvalError::NotABool("int".to_owned())));
}

#[test]
fn syntax_and_other_load_errors_are_readable() {
    let e = compile_err("request.method ==", ExprKind::Predicate, Scope::Request);
    assert!(e.to_string().starts_with("syntax error: "), "{e}");
    assert!(matches!(
        compile_err("  ", ExprKind::Predicate, Scope::Request),
        CompileError::Empty
    ));
    let e = compile_err("has(body)", ExprKind::Predicate, Scope::Request);
    assert!(e.to_string().contains("has()"), "{e}");
    let e = compile_err("Foo{a: 1} == 1", ExprKind::Predicate, Scope::Request);
    assert!(matches!(e, CompileError::Unsupported(_)), "{e}");
}

// --- Helpers: usd(), words() ------------------------------------------------

#[test]
fn usd_is_exact_and_checked_at_compile() {
    assert_eq!(amount("usd('0.05')"), Ok(50_000));
    assert_eq!(amount("usd('$1.000001') * 2"), Ok(2_000_002));
    assert_eq!(amount("usd('0.1') + usd('0.2')"), Ok(300_000));
    let e = compile_err("usd('0.0000001')", ExprKind::Amount, Scope::Request);
    assert_eq!(
        e.to_string(),
        "invalid amount in usd('0.0000001'): too many decimal places: 7 (max 6, the precision \
         of a micro-dollar)"
    );
    for src in ["usd(body.pat)", "usd('1', '2')", "usd(1)"] {
        let e = compile_err(src, ExprKind::Amount, Scope::Request);
        assert!(matches!(e, CompileError::UsdArgument), "{src}: {e}");
    }
    let e = compile_err("usd('-1')", ExprKind::Amount, Scope::Request);
    assert!(matches!(e, CompileError::InvalidUsd { .. }), "{e}");
    // Beyond i64 micro-units, which rule arithmetic could not hold.
    let e = compile_err("usd('10000000000000')", ExprKind::Amount, Scope::Request);
    assert!(matches!(e, CompileError::InvalidUsd { .. }), "{e}");
}

#[test]
fn words_counts_whitespace_separated_words() {
    assert_eq!(amount(r"words('  hello   big\tworld\n')"), Ok(3));
    assert_eq!(amount("words('')"), Ok(0));
    assert_eq!(amount("words(request.query.q)"), Ok(10));
}

// --- Sign analysis ----------------------------------------------------------

#[test]
fn sign_analysis() {
    let non_negative = [
        "0",
        "42",
        "7u",
        "usd('0.05')",
        "size(body.documents)",
        "body.documents.size()",
        "words(request.query.q)",
        "uint(body.n)",
        "usd('0.01') + size(body.documents) * usd('0.002')",
        "size(request.query.q) / 100 % 7",
        "has(body.n) ? usd('0.01') : usd('0.02')",
        "math.greatest(0, body.n - 10)",
        "math.greatest(body.n, 1, body.f)",
        "math.least(1, 2u, size(body.documents))",
    ];
    for src in non_negative {
        assert!(!may_be_negative(src), "{src} is non-negative");
    }
    let maybe_negative = [
        "body.n",
        "response.usage.total_tokens",
        "-1",
        "10 - 1",
        "-size(body.documents)",
        "size(body.documents) - 1",
        "has(body.n) ? 1 : body.n",
        "math.least(0, body.n)",
        "math.greatest(body.n, body.n)",
        "int(body.pat)",
        "body.pat.indexOf('a')",
        "body.?n.orValue(1)",
        "size(body.documents) * body.n",
    ];
    for src in maybe_negative {
        assert!(may_be_negative(src), "{src} may be negative");
    }
    assert_eq!(amount("math.greatest(0, body.n - 10)"), Ok(0));
    // Conditions never produce amounts.
    assert!(!compile("body.n < 0", ExprKind::Predicate, Scope::Request).may_be_negative());
}

// --- Library panics ---------------------------------------------------------

fn boom<'b, 'v>(
    _: Vec<cel::common::value::CowVal<'b, 'v>>,
) -> Result<cel::common::value::CowVal<'b, 'v>, ExecutionError> {
    panic!("simulated library bug")
}

#[test]
fn a_panic_during_evaluation_is_an_error() {
    // Bypass the lint to reach a function that panics, as a library bug would.
    let mut env = Env::stdlib();
    env.add_overload("boom", "boom", vec![], boom).unwrap();
    let env = ExprEnv { env: Arc::new(env) };
    let ast = env.env.parser().parse("boom()").unwrap();
    let expr = Expr {
        inner: Arc::new(Compiled {
            source: "boom()".to_owned(),
            ast,
            kind: ExprKind::Amount,
            scope: Scope::Request,
            may_be_negative: true,
            uses_response: false,
        }),
    };
    let (r, b) = (request(), body());
    let bound = env.bind(&EvalInput {
        request: &r,
        body: &b,
        response: None,
    });
    assert_eq!(
        expr.eval_amount(&bound),
        Err(EvalError::Internal("simulated library bug".to_owned()))
    );
}

// --- A realistic search-pricing rule set ------------------------------------

/// Rules of a search API: a base price, a surcharge for finance queries, a
/// per-document price, and a capture on tokens used.
struct SearchRules {
    is_post_quote: Expr,
    is_finance: Expr,
    has_documents: Expr,
    price: Expr,
    capture: Expr,
}

fn search_rules() -> SearchRules {
    let p = |src| compile(src, ExprKind::Predicate, Scope::Request);
    SearchRules {
        is_post_quote: p(
            r"request.method == 'POST' && request.query.q.matches('(?i)\\b(price|quote)\\b') && size(request.query.q) < 200",
        ),
        is_finance: p(r#"request.query.q.matches("(?i)P/S|P/E|revenue|TVL|earnings")"#),
        has_documents: p("has(body.documents) && size(body.documents) > 1"),
        price: compile(
            "usd('0.01') + size(request.query.q) * 100 + size(body.documents) * usd('0.002')",
            ExprKind::Amount,
            Scope::Request,
        ),
        capture: compile(
            "math.greatest(usd('0.001'), response.usage.total_tokens * 2)",
            ExprKind::Amount,
            Scope::Response,
        ),
    }
}

#[test]
fn realistic_search_pricing() {
    let rules = search_rules();
    assert!(!rules.price.may_be_negative());
    assert!(!rules.capture.may_be_negative());
    let (r, b, resp) = (request(), body(), response());
    let bound = ENV.bind(&EvalInput {
        request: &r,
        body: &b,
        response: Some(&resp),
    });
    assert_eq!(rules.is_post_quote.eval_predicate(&bound), Ok(true));
    assert_eq!(rules.is_finance.eval_predicate(&bound), Ok(true));
    assert_eq!(rules.has_documents.eval_predicate(&bound), Ok(true));
    let q_len = u64::try_from(r.query["q"].chars().count()).unwrap();
    assert_eq!(
        rules.price.eval_amount(&bound),
        Ok(10_000 + q_len * 100 + 3 * 2_000)
    );
    assert_eq!(rules.capture.eval_amount(&bound), Ok(1864));

    // A GET for something else matches neither condition.
    let mut other = request();
    other.method = "GET".to_owned();
    other.query.insert("q".to_owned(), "pricey hats".to_owned());
    let empty = json!({});
    let bound = ENV.bind(&EvalInput {
        request: &other,
        body: &empty,
        response: None,
    });
    assert_eq!(rules.is_post_quote.eval_predicate(&bound), Ok(false));
    assert_eq!(rules.is_finance.eval_predicate(&bound), Ok(false));
    assert_eq!(rules.has_documents.eval_predicate(&bound), Ok(false));
    assert!(
        rules.price.eval_amount(&bound).is_err(),
        "no body.documents"
    );
}

/// Not asserted (timing is noisy on 2 cores); run with
/// `cargo test --release --lib pricing::expr::tests::timing -- --nocapture`.
#[test]
fn timing() {
    let rules = search_rules();
    let (r, b, resp) = (request(), body(), response());
    let iters = if cfg!(debug_assertions) {
        2_000
    } else {
        20_000
    };
    let mut total = 0u64;
    let start = Instant::now();
    for _ in 0..iters {
        let bound = ENV.bind(&EvalInput {
            request: &r,
            body: &b,
            response: None,
        });
        let hit = rules.is_post_quote.eval_predicate(&bound).unwrap()
            & rules.is_finance.eval_predicate(&bound).unwrap()
            & rules.has_documents.eval_predicate(&bound).unwrap();
        if hit {
            total += rules.price.eval_amount(&bound).unwrap();
        }
    }
    let per_request = start.elapsed() / iters;
    let start = Instant::now();
    for _ in 0..iters {
        let bound = ENV.bind(&EvalInput {
            request: &r,
            body: &b,
            response: Some(&resp),
        });
        total += rules.capture.eval_amount(&bound).unwrap();
    }
    let per_capture = start.elapsed() / iters;
    let start = Instant::now();
    for _ in 0..iters {
        let bound = ENV.bind(&EvalInput {
            request: &r,
            body: &b,
            response: None,
        });
        std::hint::black_box(&bound);
    }
    let per_bind = start.elapsed() / iters;
    let start = Instant::now();
    let compiles = 50u32;
    for _ in 0..compiles {
        std::hint::black_box(search_rules());
    }
    let per_compile = start.elapsed() / (compiles * 5);
    println!(
        "pricing::expr timing ({} build, {iters} iterations): bind + 3 conditions + amount = \
         {per_request:?}; bind alone = {per_bind:?}; bind + capture = {per_capture:?}; \
         compile = {per_compile:?} per rule [checksum {total}]",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
}

/// Worst-case sources up to the length cap must fail with an error, not
/// overflow the 2 MiB stack of a tokio worker (parse, lint and drop included).
#[test]
fn adversarial_sources_fail_cleanly_on_a_worker_sized_stack() {
    let n = MAX_SOURCE_BYTES;
    let sources = [
        vec!["1"; n / 4].join(" + "),
        vec!["1"; n / 4].join(" * "),
        format!("{}true", "!".repeat(n - 8)),
        format!("{}1", "-".repeat(n - 8)),
        format!("{}1", "- ".repeat(n / 2 - 4)),
        format!("body{}", ".a".repeat(n / 2 - 4)),
        format!("body{}", "[0]".repeat(n / 3 - 4)),
        format!("{}1{}", "(".repeat(n / 2 - 4), ")".repeat(n / 2 - 4)),
        format!("{}1{}", "[".repeat(n / 2 - 4), "]".repeat(n / 2 - 4)),
        format!("{}1{}", "size(".repeat(n / 6 - 2), ")".repeat(n / 6 - 2)),
        format!("true{}", " ? 1 : 2".repeat(n / 8 - 2)),
        vec!["true"; n / 8].join(" && "),
        format!("body.docs{}", ".filter(x, true)".repeat(n / 17 - 2)),
    ];
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            sources
                .iter()
                .map(|s| {
                    assert!(s.len() <= MAX_SOURCE_BYTES, "{}", s.len());
                    let e = ENV.compile(s, ExprKind::Amount, Scope::Request);
                    e.err().map(|e| e.to_string()).unwrap_or_default()
                })
                .collect::<Vec<_>>()
        })
        .unwrap();
    // And the deepest expressions the lint accepts evaluate on such a stack.
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let deepest = [
                vec!["size(body.documents)"; 30].join(" + "),
                format!("size({}1{})", "[".repeat(60), "]".repeat(60)),
                format!(
                    "size(body.docs.filter(d, {} > 0))",
                    vec!["d.id"; 27].join(" + ")
                ),
            ];
            let (r, b) = (request(), body());
            let bound = ENV.bind(&EvalInput {
                request: &r,
                body: &b,
                response: None,
            });
            for src in &deepest {
                let e = compile(src, ExprKind::Amount, Scope::Request);
                assert!(e.eval_amount(&bound).is_ok(), "{src}");
            }
        })
        .unwrap()
        .join()
        .expect("no stack overflow");
    let results = handle.join().expect("no stack overflow");
    for (i, msg) in results.iter().enumerate() {
        // The parser folds `- -` pairs, so the negation chains are just `1`.
        assert_eq!(msg.is_empty(), i == 3 || i == 4, "source {i}: {msg}");
    }
    assert_eq!(
        results[7],
        "syntax error: nesting too deep (the parser allows 96 levels)"
    );
}

/// The rules shipped in `pricing-rules/search.toml`, as written there.
#[test]
fn shipped_search_rules() {
    let compare_when = compile(
        "request.method == 'POST' && size(body.?documents.orValue([])) > 1",
        ExprKind::Predicate,
        Scope::Request,
    );
    let compare_price = compile(
        "usd('0.10') + usd('0.02') * (size(body.documents) - 2)",
        ExprKind::Amount,
        Scope::Request,
    );
    assert!(compare_price.may_be_negative(), "subtracts: needs `min`");
    let aggregate = compile(
        r"(has(request.query.q) ? request.query.q : body.?query.orValue('')).matches(r'(?i)\b(p/s|p/f|p/e|revenue|tvl|fees|volume|market cap|ratios?|metrics)\b')",
        ExprKind::Predicate,
        Scope::Request,
    );
    let mut get = request();
    get.method = "GET".to_owned();
    get.query = BTreeMap::from([("q".to_owned(), "P/S and P/F of Uniswap".to_owned())]);
    let empty = json!({});
    let bound = ENV.bind(&EvalInput {
        request: &get,
        body: &empty,
        response: None,
    });
    assert_eq!(compare_when.eval_predicate(&bound), Ok(false));
    assert_eq!(aggregate.eval_predicate(&bound), Ok(true));

    let mut post = request();
    post.query.clear();
    let filings = json!({"query": "compare risk factors", "documents": ["a", "b", "c"]});
    let bound = ENV.bind(&EvalInput {
        request: &post,
        body: &filings,
        response: None,
    });
    assert_eq!(compare_when.eval_predicate(&bound), Ok(true));
    assert_eq!(compare_price.eval_amount(&bound), Ok(120_000));
    assert_eq!(aggregate.eval_predicate(&bound), Ok(false));
    let tvl = json!({"query": "TVL of Aave"});
    let bound = ENV.bind(&EvalInput {
        request: &post,
        body: &tvl,
        response: None,
    });
    assert_eq!(aggregate.eval_predicate(&bound), Ok(true));
}
