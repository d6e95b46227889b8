//! Request data to CEL values, borrowing rather than copying.
//!
//! We do not use `Context::add_variable` (serde → `Value` → `Val`): it copies
//! twice and, worse, turns every non-negative JSON integer into a CEL `uint`.
//! CEL forbids mixing `int` and `uint`, so `response.usage.total_tokens * 2`
//! would fail at run time with "Unsupported binary operator 'mul'". Here JSON
//! integers become `int`, which is what literals in rules are.

use std::collections::{BTreeMap, HashMap};

use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
};
use cel::common::value::Val;

use super::RequestView;

/// A JSON value as a CEL value borrowing its strings.
///
/// Integers that fit `i64` become `int`; larger ones `uint` (the only way to
/// keep them exact); any other number becomes `double`. The caller normalises
/// integral floats such as `3.0` to integers beforehand.
pub fn json_to_val<'v>(j: &'v serde_json::Value) -> Box<dyn Val + 'v> {
    use serde_json::Value as J;
    match j {
        J::Null => Box::new(CelNull),
        J::Bool(b) => Box::new(CelBool::from(*b)),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                Box::new(CelInt::from(i))
            } else if let Some(u) = n.as_u64() {
                Box::new(CelUInt::from(u))
            } else {
                // Not an integer: serde_json always has an f64 for it. This is
                // data for conditions; amounts reject doubles at evaluation.
                Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN)))
            }
        }
        J::String(s) => Box::new(CelString::from(s.as_str())),
        J::Array(a) => Box::new(CelList::from(a.iter().map(json_to_val).collect::<Vec<_>>())),
        J::Object(o) => Box::new(CelMap::from(
            o.iter()
                .map(|(k, v)| (CelMapKey::from(k.as_str()), json_to_val(v)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

fn str_val(s: &str) -> Box<dyn Val + '_> {
    Box::new(CelString::from(s))
}

fn string_map(m: &BTreeMap<String, String>) -> Box<dyn Val + '_> {
    Box::new(CelMap::from(
        m.iter()
            .map(|(k, v)| (CelMapKey::from(k.as_str()), str_val(v)))
            .collect::<HashMap<_, _>>(),
    ))
}

/// `request` as one map: `{method, path, params, query, headers, body_size}`.
pub fn request_to_val(r: &RequestView) -> Box<dyn Val + '_> {
    // `int` like every other integer a rule sees, so `request.body_size * 2`
    // works; a body over 8 EiB cannot happen, but stays exact as `uint`.
    let body_size: Box<dyn Val> = match i64::try_from(r.body_size) {
        Ok(i) => Box::new(CelInt::from(i)),
        Err(_) => Box::new(CelUInt::from(r.body_size)),
    };
    let mut m: HashMap<CelMapKey<'_>, Box<dyn Val + '_>> = HashMap::with_capacity(6);
    m.insert(CelMapKey::from("method"), str_val(&r.method));
    m.insert(CelMapKey::from("path"), str_val(&r.path));
    m.insert(CelMapKey::from("params"), string_map(&r.params));
    m.insert(CelMapKey::from("query"), string_map(&r.query));
    m.insert(CelMapKey::from("headers"), string_map(&r.headers));
    m.insert(CelMapKey::from("body_size"), body_size);
    Box::new(CelMap::from(m))
}
