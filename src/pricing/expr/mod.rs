//! Pricing expressions: operator-written CEL conditions and amounts.
//!
//! Built on `cel` 0.15.0 with four guards the library itself lacks (see
//! `shared/reference/pricing-expressions.md`):
//!
//! 1. a cached `matches`: stock cel recompiles the regex on every call;
//! 2. our own JSON binding: cel's serde route makes JSON integers `uint`, which
//!    cannot be mixed with the `int` literals rules are written with;
//! 3. a load-time lint: cel's compile only parses, so unknown names, invalid
//!    regexes and unbounded work would otherwise surface on live requests;
//! 4. a typed result check: nothing types a CEL result ahead of time, so an
//!    amount is accepted only as a non-negative integer of micro-USD.
//!
//! Typical use: one [`ExprEnv`] for the process, [`ExprEnv::compile`] each rule
//! when the rule file loads, then per request [`ExprEnv::bind`] once and
//! evaluate every rule against that [`Bound`].

mod bind;
mod functions;
mod lint;
mod usd;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use cel::common::types::{CelBool, CelInt, CelUInt};
use cel::common::value::Val;
use cel::{Context, Env, ExecutionError, IdedExpr, Value};

pub use bind::json_to_val;
pub use lint::{GLOBAL_FUNCTIONS, MAX_DEPTH, MAX_NODES, MEMBER_FUNCTIONS};
pub use usd::{MICROS_PER_USD, UsdError, format_usd, parse_usd};

/// Longest accepted source. Parsing happens before any AST limit can apply
/// (~8 µs per `1 +` term), so this bounds load time and parser stack; it is
/// generous because a long string literal, e.g. a regex alternation of many
/// words, is a single node.
pub const MAX_SOURCE_BYTES: usize = 16 * 1024;

/// The parts of an HTTP request a rule may read, as `request.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestView {
    pub method: String,
    pub path: String,
    /// Path parameters captured by the route pattern.
    pub params: BTreeMap<String, String>,
    pub query: BTreeMap<String, String>,
    /// Lower-case header names: rules test `'x-client' in request.headers`.
    pub headers: BTreeMap<String, String>,
    pub body_size: u64,
}

/// Everything one evaluation can see.
#[derive(Debug, Clone, Copy)]
pub struct EvalInput<'a> {
    pub request: &'a RequestView,
    /// The JSON body; the caller passes `{}` when there is none, because with
    /// `null` every `body.x` and `has(body.x)` is an error instead of absent.
    pub body: &'a serde_json::Value,
    /// The upstream response, once there is one (capture/settle rules).
    pub response: Option<&'a serde_json::Value>,
}

/// Which variables an expression may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `request`, `body`: evaluated before forwarding.
    Request,
    /// `request`, `body`, `response`: evaluated after the upstream answered.
    Response,
}

/// What an expression must produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExprKind {
    /// A `bool`: whether a rule applies.
    Predicate,
    /// A non-negative integer of micro-USD.
    Amount,
}

/// Why a rule's expression was rejected at load time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("empty expression")]
    Empty,
    #[error("expression too long: {len} bytes (max {max})")]
    TooLong { len: usize, max: usize },
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("expression too large: {nodes} nodes (max {max})")]
    TooLarge { nodes: usize, max: usize },
    #[error("expression nested too deeply: depth {depth} (max {max})")]
    TooDeep { depth: usize, max: usize },
    #[error("unknown variable `{name}` (known: {known})")]
    UnknownVariable { name: String, known: String },
    #[error(
        "`response` is not available here: this expression is evaluated before the upstream \
         responds (known: request, body)"
    )]
    ResponseNotInScope,
    #[error("function `{0}` is not allowed")]
    FunctionNotAllowed(String),
    #[error("regex in matches() must be a string literal")]
    NonLiteralRegex,
    #[error("matches() takes a string and a regex: `s.matches('re')` or `matches(s, 're')`")]
    MatchesArity,
    #[error("invalid regex `{pattern}` in matches(): {message}")]
    InvalidRegex { pattern: String, message: String },
    #[error("usd() takes exactly one string literal, e.g. usd('0.05')")]
    UsdArgument,
    #[error("invalid amount in usd('{literal}'): {source}")]
    InvalidUsd {
        literal: String,
        #[source]
        source: UsdError,
    },
    #[error("nested comprehensions are not allowed")]
    NestedComprehension,
    #[error("{0} is not allowed")]
    Unsupported(String),
    #[error(
        "an amount must be an integer number of micro-USD (use usd('0.05') for dollars), but \
         this expression is a {0}"
    )]
    AmountNotInteger(&'static str),
    #[error("a condition must be a bool, but this expression is a {0}")]
    PredicateNotBool(&'static str),
    #[error("internal error in the expression parser: {0}")]
    Internal(String),
}

/// Why an evaluation failed. For a condition the caller treats any of these
/// as "no match"; for an amount, as a failed quote (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("arithmetic overflow: {0}")]
    Overflow(String),
    #[error("division by zero: {0}")]
    DivisionByZero(String),
    #[error("evaluation failed: {0}")]
    Execution(String),
    #[error("expression uses `response` but no response is bound")]
    NoResponse,
    #[error("amount is negative: {0}")]
    Negative(i64),
    #[error("amount must be an integer number of micro-USD, got a {0}")]
    NotAnInteger(String),
    #[error("condition must evaluate to a bool, got a {0}")]
    NotABool(String),
    #[error("internal error in the expression engine: {0}")]
    Internal(String),
}

impl From<ExecutionError> for EvalError {
    fn from(e: ExecutionError) -> Self {
        match e {
            ExecutionError::Overflow(..) => EvalError::Overflow(e.to_string()),
            ExecutionError::DivisionByZero(_) | ExecutionError::RemainderByZero(_) => {
                EvalError::DivisionByZero(e.to_string())
            }
            e => EvalError::Execution(e.to_string()),
        }
    }
}

/// The compiled environment: built once, shared by every rule and request.
#[derive(Clone)]
pub struct ExprEnv {
    env: Arc<Env>,
}

impl Default for ExprEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ExprEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExprEnv").finish_non_exhaustive()
    }
}

impl ExprEnv {
    /// The stdlib, the strings and math extensions, and our `matches`,
    /// `words`, `usd` and exact `int`/`uint`. Costs tens of µs: build it
    /// once, never per request.
    pub fn new() -> Self {
        let mut env = Env::stdlib();
        // These only fail on duplicate declarations, i.e. a programming error
        // that every test run would hit.
        env.add_extension(cel::extensions::strings)
            .expect("strings extension declares cleanly");
        env.add_extension(cel::extensions::math)
            .expect("math extension declares cleanly");
        functions::register(&mut env).expect("our functions declare cleanly");
        Self { env: Arc::new(env) }
    }

    /// Parses and lints `src`. Every check that can run without a request
    /// runs here, so a rule file either loads or fails with a clear message.
    ///
    /// Runs on a short-lived thread with a large stack (costs ~tens of µs,
    /// load time only): cel's parser recurses once per postfix step, so a
    /// 16 KiB `body.a.a.a...` overflows a 2 MiB tokio worker stack (measured
    /// at ~5,000 steps) before any AST limit can apply, and so does dropping
    /// the AST it builds. Accepted ASTs are at most 64 deep, safe anywhere.
    pub fn compile(&self, src: &str, kind: ExprKind, scope: Scope) -> Result<Expr, CompileError> {
        if src.len() > MAX_SOURCE_BYTES {
            return Err(CompileError::TooLong {
                len: src.len(),
                max: MAX_SOURCE_BYTES,
            });
        }
        if src.trim().is_empty() {
            return Err(CompileError::Empty);
        }
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("tariff-expr-compile".to_owned())
                .stack_size(COMPILE_STACK_BYTES)
                .spawn_scoped(s, || self.compile_here(src, kind, scope))
                .map_err(|e| {
                    CompileError::Internal(format!("cannot start the parser thread: {e}"))
                })?
                .join()
                // The parser is generated ANTLR code; a panic there must fail
                // one rule, not the loader.
                .map_err(|p| CompileError::Internal(panic_message(p.as_ref())))?
        })
    }

    fn compile_here(&self, src: &str, kind: ExprKind, scope: Scope) -> Result<Expr, CompileError> {
        let mut ast = self.env.parser().parse(src).map_err(|e| syntax_error(&e))?;
        let analysis = lint::analyse(&mut ast, kind, scope)?;
        Ok(Expr {
            inner: Arc::new(Compiled {
                source: src.to_owned(),
                ast,
                kind,
                scope,
                may_be_negative: analysis.may_be_negative,
                uses_response: analysis.uses_response,
            }),
        })
    }

    /// Binds one request's data for any number of evaluations. Borrows the
    /// input rather than copying its strings.
    pub fn bind<'a>(&self, input: &EvalInput<'a>) -> Bound<'a> {
        // `with_env` shares the Arc; `Context::default()` would rebuild the
        // whole stdlib (28-70 µs) per request.
        let mut ctx = Context::with_env(Arc::clone(&self.env));
        ctx.add_variable_as_val("request", bind::request_to_val(input.request));
        ctx.add_variable_as_val("body", json_to_val(input.body));
        if let Some(response) = input.response {
            ctx.add_variable_as_val("response", json_to_val(response));
        }
        Bound {
            ctx,
            has_response: input.response.is_some(),
        }
    }
}

/// One request's variables, ready for evaluation.
pub struct Bound<'a> {
    ctx: Context<'a, 'a>,
    has_response: bool,
}

/// A compiled, linted expression. Cheap to clone.
#[derive(Clone)]
pub struct Expr {
    inner: Arc<Compiled>,
}

struct Compiled {
    source: String,
    ast: IdedExpr,
    kind: ExprKind,
    scope: Scope,
    may_be_negative: bool,
    uses_response: bool,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expr")
            .field("source", &self.inner.source)
            .field("kind", &self.inner.kind)
            .field("scope", &self.inner.scope)
            .finish_non_exhaustive()
    }
}

/// A result reduced to what the callers accept, so no borrowed CEL value has
/// to leave the unwind guard.
enum Outcome {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Other(String),
}

impl Expr {
    /// Evaluates a condition. An execution error (absent field, type
    /// mismatch, ...) is returned as `Err`; the caller decides it means
    /// "no match".
    pub fn eval_predicate(&self, b: &Bound<'_>) -> Result<bool, EvalError> {
        match self.run(b)? {
            Outcome::Bool(v) => Ok(v),
            Outcome::Int(_) => Err(EvalError::NotABool("int".to_owned())),
            Outcome::UInt(_) => Err(EvalError::NotABool("uint".to_owned())),
            Outcome::Other(t) => Err(EvalError::NotABool(t)),
        }
    }

    /// Evaluates an amount in micro-USD: only a non-negative `int` or a `uint`
    /// is accepted. Doubles are refused rather than rounded, and a negative
    /// amount is an error rather than a credit.
    pub fn eval_amount(&self, b: &Bound<'_>) -> Result<u64, EvalError> {
        match self.run(b)? {
            Outcome::Int(i) => u64::try_from(i).map_err(|_| EvalError::Negative(i)),
            Outcome::UInt(u) => Ok(u),
            Outcome::Bool(_) => Err(EvalError::NotAnInteger("bool".to_owned())),
            Outcome::Other(t) => Err(EvalError::NotAnInteger(t)),
        }
    }

    /// Whether an amount might come out negative (always `false` for a
    /// condition). Loaders reject such an amount unless the rule clamps it.
    pub fn may_be_negative(&self) -> bool {
        self.inner.may_be_negative
    }

    pub fn source(&self) -> &str {
        &self.inner.source
    }

    pub fn kind(&self) -> ExprKind {
        self.inner.kind
    }

    pub fn scope(&self) -> Scope {
        self.inner.scope
    }

    /// Whether the expression reads `response` (only possible in
    /// [`Scope::Response`]).
    pub fn uses_response(&self) -> bool {
        self.inner.uses_response
    }

    fn run(&self, b: &Bound<'_>) -> Result<Outcome, EvalError> {
        if self.inner.uses_response && !b.has_response {
            return Err(EvalError::NoResponse);
        }
        // A panic inside the library must fail this evaluation, not the
        // server. (Stack overflow cannot be caught; the lint's node and depth
        // limits are what prevent it.)
        let ast = &self.inner.ast;
        catch_unwind(AssertUnwindSafe(|| {
            Value::resolve_val(ast, &b.ctx).map(|v| outcome(v.as_ref()))
        }))
        .map_err(|p| EvalError::Internal(panic_message(p.as_ref())))?
        .map_err(EvalError::from)
    }
}

fn outcome(v: &dyn Val) -> Outcome {
    if let Some(b) = v.downcast_ref::<CelBool>() {
        Outcome::Bool(*b.inner())
    } else if let Some(i) = v.downcast_ref::<CelInt>() {
        Outcome::Int(*i.inner())
    } else if let Some(u) = v.downcast_ref::<CelUInt>() {
        Outcome::UInt(*u.inner())
    } else {
        Outcome::Other(v.get_type().name().to_owned())
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-string payload".to_owned())
}

/// Stack for the compile thread: 8 MiB was measured to parse the worst
/// 16 KiB chains; 4x margin, and only touched pages are ever committed.
const COMPILE_STACK_BYTES: usize = 32 << 20;

/// The parser's errors as one message: `message (line L, column C); ...`.
fn syntax_error(errs: &cel::ParseErrors) -> CompileError {
    // Hitting the nesting limit aborts the parse and the rest is follow-on
    // noise; the limit itself arrives as a debug dump of a nested error.
    if let Some(e) = errs
        .errors
        .iter()
        .find(|e| e.msg.contains("Recursion limit of "))
    {
        let at = e.msg.find("Recursion limit of ").unwrap_or_default();
        let limit: String = e.msg[at + "Recursion limit of ".len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        return CompileError::Syntax(format!(
            "nesting too deep (the parser allows {limit} levels)"
        ));
    }
    let mut msgs: Vec<String> = Vec::new();
    for e in &errs.errors {
        // Some messages carry the parser's own label.
        let msg = e.msg.strip_prefix("Syntax error: ").unwrap_or(&e.msg);
        let msg = format!("{msg} (line {}, column {})", e.pos.0, e.pos.1);
        if !msgs.contains(&msg) {
            msgs.push(msg);
        }
    }
    // Error recovery can cascade; the first few locate the problem.
    msgs.truncate(3);
    CompileError::Syntax(msgs.join("; "))
}
