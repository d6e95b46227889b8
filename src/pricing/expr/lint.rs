//! Load-time checks over the parsed AST.
//!
//! cel's `compile` only parses and expands macros: unknown functions,
//! misspelt variables and invalid regexes all surface at run time, on a
//! paying request, and nothing bounds evaluation. This walk makes every rule
//! prove at load time that it only uses allowlisted names, literal
//! (precompiled) regexes, and a bounded amount of work and stack.

use cel::IdedExpr;
use cel::common::ast::{
    CallExpr, ComprehensionExpr, EntryExpr, Expr, LiteralValue, operators as op,
};
use cel::common::types::CelInt;

use super::functions::{INT_EXACT, UINT_EXACT, cached_regex};
use super::usd::parse_usd;
use super::{CompileError, ExprKind, Scope};

/// Node budget for one expression, counted after macro expansion (each
/// `exists`/`map`/... adds about 8 nodes). Evaluation is a recursive tree walk
/// with no step limit; a flat `1 + 1 + ...` chain of 2,000 terms overflows a
/// 2 MiB tokio worker stack and aborts the process, so size is capped here.
pub const MAX_NODES: usize = 256;

/// Nesting budget: bounds the interpreter's recursion (and ours below).
pub const MAX_DEPTH: usize = 64;

/// Operators and macro internals the parser produces. Users cannot write the
/// `@`-names; they appear only through `in`, macros and `math.greatest/least`.
const OPERATORS: &[&str] = &[
    op::CONDITIONAL,
    op::LOGICAL_AND,
    op::LOGICAL_OR,
    op::LOGICAL_NOT,
    op::NEGATE,
    op::ADD,
    op::SUBSTRACT,
    op::MULTIPLY,
    op::DIVIDE,
    op::MODULO,
    op::EQUALS,
    op::NOT_EQUALS,
    op::LESS,
    op::LESS_EQUALS,
    op::GREATER,
    op::GREATER_EQUALS,
    op::IN,
    op::INDEX,
    op::OPT_INDEX,
    op::OPT_SELECT,
    op::NOT_STRICTLY_FALSE,
    MATH_MAX,
    MATH_MIN,
];

/// What `math.greatest(..)` / `math.least(..)` expand to.
const MATH_MAX: &str = "math.@max";
const MATH_MIN: &str = "math.@min";

/// Functions callable as `f(x)`. No `double()`, no timestamps or durations,
/// no `type()`/`dyn()`: nothing a price needs, and fewer ways to a float.
pub const GLOBAL_FUNCTIONS: &[&str] = &[
    "size", "int", "uint", "string", "bool", "matches", "words", "usd",
];

/// Functions callable as `x.f(..)`: the stdlib string and size methods, the
/// strings extension, and the optional-value accessors (`body.?n.orValue(1)`).
pub const MEMBER_FUNCTIONS: &[&str] = &[
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "lowerAscii",
    "upperAscii",
    "trim",
    "split",
    "replace",
    "substring",
    "indexOf",
    "lastIndexOf",
    "charAt",
    "join",
    "reverse",
    "orValue",
    "hasValue",
    "value",
    "or",
];

/// Variables bound for every expression.
const REQUEST_VARS: &[&str] = &["request", "body"];
const RESPONSE_VAR: &str = "response";

/// What the lint learnt about an accepted expression.
pub struct Analysis {
    pub may_be_negative: bool,
    pub uses_response: bool,
}

/// Checks `ast` and folds `usd('..')` calls into integer literals.
pub fn analyse(ast: &mut IdedExpr, kind: ExprKind, scope: Scope) -> Result<Analysis, CompileError> {
    measure(ast)?;
    let mut linter = Linter {
        scope,
        locals: Vec::new(),
        loop_depth: 0,
        uses_response: false,
    };
    linter.walk(ast)?;
    let ty = infer(ast);
    match kind {
        ExprKind::Amount if !matches!(ty, Ty::Int | Ty::UInt | Ty::Unknown) => {
            return Err(CompileError::AmountNotInteger(ty.name()));
        }
        ExprKind::Predicate if !matches!(ty, Ty::Bool | Ty::Unknown) => {
            return Err(CompileError::PredicateNotBool(ty.name()));
        }
        _ => {}
    }
    Ok(Analysis {
        // A predicate never yields an amount; the question only applies to
        // amounts.
        may_be_negative: kind == ExprKind::Amount && !non_negative(ast),
        uses_response: linter.uses_response,
    })
}

/// Calls `f` on each direct child of `e`.
fn for_each_child<'a>(e: &'a IdedExpr, mut f: impl FnMut(&'a IdedExpr)) {
    match &e.expr {
        Expr::Call(c) => {
            if let Some(t) = &c.target {
                f(t);
            }
            c.args.iter().for_each(f);
        }
        Expr::Comprehension(c) => {
            for child in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                f(child);
            }
        }
        Expr::List(l) => l.elements.iter().for_each(f),
        Expr::Map(m) => {
            for entry in &m.entries {
                match &entry.expr {
                    EntryExpr::MapEntry(me) => {
                        f(&me.key);
                        f(&me.value);
                    }
                    EntryExpr::StructField(sf) => f(&sf.value),
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &s.entries {
                if let EntryExpr::StructField(sf) = &entry.expr {
                    f(&sf.value);
                }
            }
        }
        Expr::Select(s) => f(&s.operand),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// Counts nodes and measures depth without recursion: the parser accepts a
/// left-associative chain thousands of nodes deep, and walking that
/// recursively would risk the very stack overflow this check prevents.
fn measure(ast: &IdedExpr) -> Result<(), CompileError> {
    let mut nodes = 0usize;
    let mut depth = 0usize;
    let mut stack = vec![(ast, 1usize)];
    while let Some((e, d)) = stack.pop() {
        nodes += 1;
        depth = depth.max(d);
        for_each_child(e, |c| stack.push((c, d + 1)));
    }
    // Size first: a long chain is also deep, and "too large" is the more
    // useful diagnosis for it.
    if nodes > MAX_NODES {
        return Err(CompileError::TooLarge {
            nodes,
            max: MAX_NODES,
        });
    }
    if depth > MAX_DEPTH {
        return Err(CompileError::TooDeep {
            depth,
            max: MAX_DEPTH,
        });
    }
    Ok(())
}

struct Linter {
    scope: Scope,
    /// Comprehension variables in scope, innermost last.
    locals: Vec<String>,
    /// How many comprehension loop bodies enclose the current node.
    loop_depth: usize,
    uses_response: bool,
}

impl Linter {
    /// Recursion is safe here: `measure` already bounded the depth.
    fn walk(&mut self, e: &mut IdedExpr) -> Result<(), CompileError> {
        match &mut e.expr {
            Expr::Literal(_) => Ok(()),
            Expr::Ident(name) => self.check_ident(name),
            Expr::Select(s) => self.walk(&mut s.operand),
            Expr::List(l) => l.elements.iter_mut().try_for_each(|x| self.walk(x)),
            Expr::Map(m) => {
                for entry in &mut m.entries {
                    match &mut entry.expr {
                        EntryExpr::MapEntry(me) => {
                            self.walk(&mut me.key)?;
                            self.walk(&mut me.value)?;
                        }
                        EntryExpr::StructField(sf) => {
                            return Err(CompileError::Unsupported(format!(
                                "struct field `{}` in a map literal",
                                sf.field
                            )));
                        }
                    }
                }
                Ok(())
            }
            Expr::Struct(s) => Err(CompileError::Unsupported(format!(
                "message construction `{}{{..}}`",
                s.type_name
            ))),
            Expr::Unspecified => Err(CompileError::Unsupported(
                "an incomplete expression".to_owned(),
            )),
            Expr::Comprehension(c) => self.check_comprehension(c),
            Expr::Call(_) => self.check_call(e),
        }
    }

    fn known_variables(&self) -> String {
        let mut known: Vec<&str> = REQUEST_VARS.to_vec();
        if self.scope == Scope::Response {
            known.push(RESPONSE_VAR);
        }
        // Macro accumulators (`@result`) cannot be written by users.
        for local in self.locals.iter().rev() {
            if !local.starts_with('@') && !known.contains(&local.as_str()) {
                known.push(local);
            }
        }
        known.join(", ")
    }

    fn check_ident(&mut self, name: &str) -> Result<(), CompileError> {
        if self.locals.iter().any(|l| l == name) || REQUEST_VARS.contains(&name) {
            return Ok(());
        }
        if name == RESPONSE_VAR {
            return if self.scope == Scope::Response {
                self.uses_response = true;
                Ok(())
            } else {
                Err(CompileError::ResponseNotInScope)
            };
        }
        Err(CompileError::UnknownVariable {
            name: name.to_owned(),
            known: self.known_variables(),
        })
    }

    fn check_comprehension(&mut self, c: &mut ComprehensionExpr) -> Result<(), CompileError> {
        // A comprehension in another's loop body runs once per outer element:
        // n^depth work (3 levels over 400 elements took 12 s). Chaining, as in
        // `xs.filter(..).map(..)`, puts one in the other's range instead,
        // which is evaluated once: linear, so allowed.
        if self.loop_depth > 0 {
            return Err(CompileError::NestedComprehension);
        }
        self.walk(&mut c.iter_range)?;
        self.walk(&mut c.accu_init)?;
        let pushed = 2 + usize::from(c.iter_var2.is_some());
        self.locals.push(c.iter_var.clone());
        if let Some(v2) = &c.iter_var2 {
            self.locals.push(v2.clone());
        }
        self.locals.push(c.accu_var.clone());
        self.loop_depth += 1;
        // `result` runs once, but macros never put user code there; treating
        // it as loop body is the conservative reading.
        let r = [&mut c.loop_cond, &mut c.loop_step, &mut c.result]
            .into_iter()
            .try_for_each(|x| self.walk(x));
        self.loop_depth -= 1;
        self.locals.truncate(self.locals.len() - pushed);
        r
    }

    fn check_call(&mut self, e: &mut IdedExpr) -> Result<(), CompileError> {
        let Expr::Call(call) = &mut e.expr else {
            unreachable!("check_call is only called on calls")
        };
        let name = call.func_name.as_str();
        if call.target.is_none() && OPERATORS.contains(&name) {
            return self.walk_call_children(call);
        }
        match (name, call.target.is_some()) {
            ("usd", false) => {
                let micros = usd_literal(call)?;
                // Folded now so evaluation does no parsing, and so the sign
                // analysis sees a plain non-negative literal.
                e.expr = Expr::Literal(LiteralValue::Int(CelInt::from(micros)));
                return Ok(());
            }
            ("matches", member) => check_regex(call, member)?,
            ("int", false) => call.func_name = INT_EXACT.to_owned(),
            ("uint", false) => call.func_name = UINT_EXACT.to_owned(),
            (_, false) => {
                if !GLOBAL_FUNCTIONS.contains(&name) {
                    return Err(CompileError::FunctionNotAllowed(name.to_owned()));
                }
            }
            (_, true) => {
                let target = call.target.as_deref().expect("member call has a target");
                // `strings.quote(x)`, `math.abs(x)`: a namespaced global
                // function rather than a method on a value.
                if let Some(path) = qualified_name(target) {
                    let root = path.split('.').next().unwrap_or_default();
                    let is_value = self.locals.iter().any(|l| l == root)
                        || REQUEST_VARS.contains(&root)
                        || root == RESPONSE_VAR;
                    if !is_value {
                        return Err(CompileError::FunctionNotAllowed(format!("{path}.{name}")));
                    }
                }
                if !MEMBER_FUNCTIONS.contains(&name) {
                    return Err(CompileError::FunctionNotAllowed(name.to_owned()));
                }
            }
        }
        self.walk_call_children(call)
    }

    fn walk_call_children(&mut self, call: &mut CallExpr) -> Result<(), CompileError> {
        if let Some(t) = &mut call.target {
            self.walk(t)?;
        }
        call.args.iter_mut().try_for_each(|a| self.walk(a))
    }
}

/// `a.b.c` when `e` is just identifiers and field selections.
fn qualified_name(e: &IdedExpr) -> Option<String> {
    match &e.expr {
        Expr::Ident(name) => Some(name.clone()),
        Expr::Select(s) if !s.test => Some(format!("{}.{}", qualified_name(&s.operand)?, s.field)),
        _ => None,
    }
}

fn string_literal(e: &IdedExpr) -> Option<&str> {
    match &e.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(s.inner()),
        _ => None,
    }
}

/// The micro-units of `usd('0.05')`, checked now so a typo fails the load.
fn usd_literal(call: &CallExpr) -> Result<i64, CompileError> {
    let [arg] = call.args.as_slice() else {
        return Err(CompileError::UsdArgument);
    };
    let literal = string_literal(arg).ok_or(CompileError::UsdArgument)?;
    let micros = parse_usd(literal).map_err(|source| CompileError::InvalidUsd {
        literal: literal.to_owned(),
        source,
    })?;
    // Rule arithmetic is in CEL `int`; an amount beyond i64::MAX micro-units
    // (9.2 trillion USD) could not be combined with anything anyway.
    i64::try_from(micros).map_err(|_| CompileError::InvalidUsd {
        literal: literal.to_owned(),
        source: super::UsdError::Overflow(literal.to_owned()),
    })
}

/// `matches` must get a literal pattern, which is compiled (and cached) now:
/// a pattern taken from the request would be compiled per call, and a hostile
/// one costs milliseconds to reject even at the 1 MiB size limit.
fn check_regex(call: &CallExpr, member: bool) -> Result<(), CompileError> {
    let (want, pattern_at) = if member { (1, 0) } else { (2, 1) };
    if call.args.len() != want {
        return Err(CompileError::MatchesArity);
    }
    let pattern = string_literal(&call.args[pattern_at]).ok_or(CompileError::NonLiteralRegex)?;
    // In a CEL string '\b' is a backspace, not the regex word boundary: a
    // silent never-matching rule. Spell it '\\b' or use a raw string r'\b'.
    if pattern.contains('\u{8}') {
        return Err(CompileError::InvalidRegex {
            pattern: pattern.escape_default().to_string(),
            message: "contains a backspace character: in a CEL string `\\b` is a backspace; \
                      write `\\\\b` or use a raw string r'...' for a word boundary"
                .to_owned(),
        });
    }
    cached_regex(pattern).map_err(|e| CompileError::InvalidRegex {
        pattern: pattern.to_owned(),
        message: e.to_string(),
    })?;
    Ok(())
}

/// A static type, where the shape of the expression makes it obvious.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Bool,
    Int,
    UInt,
    Double,
    String,
    Bytes,
    Null,
    List,
    Map,
    Unknown,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Bool => "bool",
            Ty::Int => "int",
            Ty::UInt => "uint",
            Ty::Double => "double",
            Ty::String => "string",
            Ty::Bytes => "bytes",
            Ty::Null => "null",
            Ty::List => "list",
            Ty::Map => "map",
            Ty::Unknown => "value of unknown type",
        }
    }
}

/// Shallow type inference: no type checker exists in cel 0.15, so this only
/// catches the statically obvious (`'20000'` or `1.5` as an amount), and says
/// `Unknown` for anything depending on request data.
fn infer(e: &IdedExpr) -> Ty {
    match &e.expr {
        Expr::Literal(l) => match l {
            LiteralValue::Boolean(_) => Ty::Bool,
            LiteralValue::Bytes(_) => Ty::Bytes,
            LiteralValue::Double(_) => Ty::Double,
            LiteralValue::Int(_) => Ty::Int,
            LiteralValue::Null => Ty::Null,
            LiteralValue::String(_) => Ty::String,
            LiteralValue::UInt(_) => Ty::UInt,
        },
        Expr::List(_) => Ty::List,
        Expr::Map(_) => Ty::Map,
        Expr::Select(s) if s.test => Ty::Bool,
        Expr::Comprehension(c) => match &c.result.expr {
            // all/exists/map/filter return their accumulator.
            Expr::Ident(name) if *name == c.accu_var => infer(&c.accu_init),
            _ => infer(&c.result),
        },
        Expr::Call(call) => infer_call(call),
        _ => Ty::Unknown,
    }
}

fn infer_call(call: &CallExpr) -> Ty {
    let same = |a: &IdedExpr, b: &IdedExpr| {
        let (ta, tb) = (infer(a), infer(b));
        if ta == tb { ta } else { Ty::Unknown }
    };
    match (call.func_name.as_str(), call.args.as_slice()) {
        (op::CONDITIONAL, [_, a, b]) => same(a, b),
        (op::ADD | op::SUBSTRACT | op::MULTIPLY | op::DIVIDE | op::MODULO, [a, b]) => {
            match same(a, b) {
                t @ (Ty::Int | Ty::UInt | Ty::Double | Ty::String | Ty::List) => t,
                _ => Ty::Unknown,
            }
        }
        (op::NEGATE, [a]) => match infer(a) {
            t @ (Ty::Int | Ty::Double) => t,
            _ => Ty::Unknown,
        },
        (
            op::LOGICAL_AND
            | op::LOGICAL_OR
            | op::LOGICAL_NOT
            | op::EQUALS
            | op::NOT_EQUALS
            | op::LESS
            | op::LESS_EQUALS
            | op::GREATER
            | op::GREATER_EQUALS
            | op::IN
            | op::NOT_STRICTLY_FALSE
            | "matches"
            | "contains"
            | "startsWith"
            | "endsWith"
            | "hasValue"
            | "bool",
            _,
        ) => Ty::Bool,
        ("size" | "words" | "usd" | INT_EXACT | "indexOf" | "lastIndexOf", _) => Ty::Int,
        (UINT_EXACT, _) => Ty::UInt,
        (
            "string" | "lowerAscii" | "upperAscii" | "trim" | "replace" | "substring" | "charAt"
            | "join" | "reverse",
            _,
        ) => Ty::String,
        ("split", _) => Ty::List,
        _ => Ty::Unknown,
    }
}

/// Sign analysis: `true` only when the expression provably cannot produce a
/// negative number (it may still fail, e.g. on overflow). Anything unknown,
/// field reads included, is "may be negative": the loader then demands an
/// explicit clamp such as `math.greatest(0, ..)` or a rule minimum.
fn non_negative(e: &IdedExpr) -> bool {
    match &e.expr {
        Expr::Literal(LiteralValue::Int(i)) => *i.inner() >= 0,
        Expr::Literal(LiteralValue::UInt(_)) => true,
        Expr::Call(call) => {
            let args = call.args.as_slice();
            match call.func_name.as_str() {
                "size" | "words" | "usd" | UINT_EXACT => true,
                // Subtraction and negation of non-negatives may go negative.
                op::ADD | op::MULTIPLY | op::DIVIDE | op::MODULO => {
                    args.len() == 2 && args.iter().all(non_negative)
                }
                op::CONDITIONAL => {
                    args.len() == 3 && non_negative(&args[1]) && non_negative(&args[2])
                }
                MATH_MAX => extreme_args(args).any(non_negative),
                MATH_MIN => {
                    let mut all = extreme_args(args).peekable();
                    all.peek().is_some() && all.all(non_negative)
                }
                _ => false,
            }
        }
        _ => false,
    }
}

/// The operands of `math.@max/@min`: the two arguments, or the elements of
/// the list literal the macro builds for three or more.
fn extreme_args(args: &[IdedExpr]) -> Box<dyn Iterator<Item = &IdedExpr> + '_> {
    match args {
        [one] => match &one.expr {
            Expr::List(l) => Box::new(l.elements.iter()),
            _ => Box::new(std::iter::once(one)),
        },
        _ => Box::new(args.iter()),
    }
}
