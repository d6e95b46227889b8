//! The functions we add to, or replace in, cel's standard environment.
//!
//! `Env` overloads are plain `fn` pointers (no captured state), which is why
//! the regex cache below is a process-wide static rather than a field.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

use cel::common::types::{CelBool, CelInt, CelString, CelUInt, DYN_TYPE, STRING_TYPE};
use cel::common::value::{CowVal, Val};
use cel::{DeclarationError, Env, ExecutionError};
use regex::{Regex, RegexBuilder};

use super::usd::parse_usd;

/// Compiled-program size limit for one pattern. The regex default is 10 MiB,
/// which lets a pattern like `\w{100}{100}` burn ~90 ms compiling before it
/// fails; 1 MiB fails it in ~6 ms and is ample for real rule patterns.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Only literal patterns from loaded rules reach the cache (the lint rejects
/// the rest), so it stays small; the cap only guards against rule files being
/// reloaded with ever-new patterns for the life of the process.
const REGEX_CACHE_MAX: usize = 4096;

/// Stock cel `matches` calls `Regex::new` on every evaluation (~120 µs for
/// our patterns); this cache makes a match cost the match alone.
static REGEX_CACHE: LazyLock<RwLock<HashMap<String, Arc<Regex>>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));

/// The compiled `pattern`, from the cache when it is there.
///
/// Racing compilations of the same pattern all return the first one stored,
/// so a pattern maps to a single `Arc` for the life of the process.
pub fn cached_regex(pattern: &str) -> Result<Arc<Regex>, regex::Error> {
    // A panic while holding the lock cannot leave the map inconsistent (each
    // operation is a single insert or lookup), so poisoning is ignored.
    if let Some(re) = REGEX_CACHE
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(pattern)
    {
        return Ok(Arc::clone(re));
    }
    let re = Arc::new(
        RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()?,
    );
    let mut cache = REGEX_CACHE.write().unwrap_or_else(PoisonError::into_inner);
    if cache.len() >= REGEX_CACHE_MAX && !cache.contains_key(pattern) {
        return Ok(re);
    }
    Ok(Arc::clone(cache.entry(pattern.to_owned()).or_insert(re)))
}

/// What the lint renames `int(x)` and `uint(x)` to. The stdlib versions
/// truncate doubles (`uint(2.9)` is `2u`), which would let a float decide a
/// price; these convert only integers and decimal strings, exactly. Users
/// cannot write `@` names, so only the rename reaches them.
pub const INT_EXACT: &str = "@int";
pub const UINT_EXACT: &str = "@uint";

/// Registers `matches` (cached), `words`, `usd` and the exact `int`/`uint`.
///
/// cel's own `matches` exists only with its `regex` feature, which Cargo.toml
/// leaves off; were it enabled, the duplicate declaration here fails and
/// `ExprEnv::new` panics at startup rather than silently using the uncached
/// one.
pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    // One implementation serves both call styles: a member overload receives
    // its receiver as the first argument.
    env.add_overload(
        "matches",
        "matches",
        vec![STRING_TYPE, STRING_TYPE],
        matches_cached,
    )?;
    env.add_member_overload(
        "matches",
        "string.matches(string)",
        STRING_TYPE,
        vec![STRING_TYPE],
        matches_cached,
    )?;
    env.add_overload("words", "words_string", vec![STRING_TYPE], words)?;
    // `dyn`: one overload sees every argument type, so a double gets our
    // message instead of a bare "no matching overload for '@int'".
    env.add_overload(INT_EXACT, INT_EXACT, vec![DYN_TYPE], int_exact)?;
    env.add_overload(UINT_EXACT, UINT_EXACT, vec![DYN_TYPE], uint_exact)?;
    // `usd('..')` is folded into an integer literal when a rule compiles; this
    // overload only keeps the environment complete on its own.
    env.add_overload("usd", "usd_string", vec![STRING_TYPE], usd)?;
    Ok(())
}

fn str_arg<'a>(
    function: &str,
    args: &'a [CowVal<'_, '_>],
    i: usize,
) -> Result<&'a str, ExecutionError> {
    let arg = args
        .get(i)
        .ok_or_else(|| ExecutionError::invalid_argument_count(i + 1, args.len()))?;
    let val: &dyn Val = arg.as_ref();
    val.downcast_ref::<CelString>()
        .map(|s| s.inner())
        .ok_or_else(|| {
            ExecutionError::function_error(
                function,
                format!("expected a string, got {}", val.get_type().name()),
            )
        })
}

fn matches_cached<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let haystack = str_arg("matches", &args, 0)?;
    let pattern = str_arg("matches", &args, 1)?;
    let re = cached_regex(pattern).map_err(|e| {
        ExecutionError::function_error("matches", format!("invalid regex `{pattern}`: {e}"))
    })?;
    Ok(CowVal::owned(CelBool::from(re.is_match(haystack))))
}

fn words<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let count = str_arg("words", &args, 0)?.split_whitespace().count();
    // A string cannot hold more than isize::MAX words; saturate regardless.
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    Ok(CowVal::owned(CelInt::from(count)))
}

fn usd<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let micros = parse_usd(str_arg("usd", &args, 0)?)
        .map_err(|e| ExecutionError::function_error("usd", e))?;
    let micros = i64::try_from(micros)
        .map_err(|_| ExecutionError::function_error("usd", "amount too large for an int"))?;
    Ok(CowVal::owned(CelInt::from(micros)))
}

/// The integer in `v` (an `int`, `uint` or decimal string), as `i128` so
/// both `int` and `uint` ranges fit before the caller narrows it.
fn exact_integer(function: &str, args: &[CowVal<'_, '_>]) -> Result<i128, ExecutionError> {
    let [arg] = args else {
        return Err(ExecutionError::invalid_argument_count(1, args.len()));
    };
    let v: &dyn Val = arg.as_ref();
    if let Some(i) = v.downcast_ref::<CelInt>() {
        Ok(i128::from(*i.inner()))
    } else if let Some(u) = v.downcast_ref::<CelUInt>() {
        Ok(i128::from(*u.inner()))
    } else if let Some(s) = v.downcast_ref::<CelString>() {
        s.inner().parse::<i128>().map_err(|e| {
            ExecutionError::function_error(
                function,
                format!("`{}` is not an integer: {e}", s.inner()),
            )
        })
    } else {
        let ty = v.get_type().name();
        let why = if ty == "double" {
            "doubles are not converted, so no price depends on floating point"
        } else {
            "expected an int, uint or decimal string"
        };
        Err(ExecutionError::function_error(
            function,
            format!("cannot convert a {ty}: {why}"),
        ))
    }
}

fn int_exact<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let n = exact_integer("int", &args)?;
    let n = i64::try_from(n)
        .map_err(|_| ExecutionError::function_error("int", format!("{n} is out of range")))?;
    Ok(CowVal::owned(CelInt::from(n)))
}

fn uint_exact<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let n = exact_integer("uint", &args)?;
    let n = u64::try_from(n)
        .map_err(|_| ExecutionError::function_error("uint", format!("{n} is out of range")))?;
    Ok(CowVal::owned(CelUInt::from(n)))
}
