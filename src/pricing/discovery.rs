//! A route's discovery metadata rendered once, at load, into the JSON the 402 carries: the v2
//! `extensions` object (with `bazaar`) and the v1 `outputSchema`, per method.
//!
//! Building the Bazaar schema walks the examples and allocates a tree of JSON values; doing it
//! per 402 cost ~35 µs, more than everything else on the path. Rendered once and kept as raw
//! JSON, each 402 only copies the bytes.

use std::collections::BTreeMap;

use serde_json::Value;
use serde_json::value::RawValue;

use super::rules::{Discovery, PaymentIdPolicy};
use crate::x402::bazaar::{self, BodyType, DiscoveryInput, DiscoveryMethod, DiscoveryOutput};

/// Pre-serialised discovery JSON for one method of a route.
#[derive(Debug)]
pub struct RenderedDiscovery {
    /// The whole v2 `extensions` object: `{"bazaar": {"info": …, "schema": …}}`.
    pub v2_extensions: Box<RawValue>,
    /// The v1 requirement's `outputSchema`.
    pub v1_output_schema: Box<RawValue>,
}

fn raw(v: &Value) -> Box<RawValue> {
    RawValue::from_string(v.to_string()).expect("serde_json output is valid JSON")
}

/// The v2 `extensions` object of each method: its Bazaar discovery (if any) and the route's
/// `payment-identifier` declaration (if any). Methods with neither have no entry (`{}`).
/// Without `schemas`, each extension is sent without its `schema` (see
/// [`super::LoadOptions::extension_schemas`]).
pub fn render_extensions(
    discovery: &BTreeMap<String, RenderedDiscovery>,
    methods: &[String],
    payment_id: Option<&PaymentIdPolicy>,
    schemas: bool,
) -> BTreeMap<String, Box<RawValue>> {
    let mut out = BTreeMap::new();
    for m in methods {
        let mut ext: serde_json::Map<String, Value> = discovery
            .get(m)
            .and_then(|d| serde_json::from_str(d.v2_extensions.get()).ok())
            .unwrap_or_default();
        if let Some(p) = payment_id {
            ext.insert(
                crate::x402::payment_identifier::KEY.into(),
                crate::x402::payment_identifier::declaration(p.required),
            );
        }
        if !schemas {
            for declaration in ext.values_mut() {
                if let Value::Object(d) = declaration {
                    d.remove("schema");
                }
            }
        }
        if !ext.is_empty() {
            out.insert(m.clone(), raw(&Value::Object(ext)));
        }
    }
    out
}

/// Renders the discovery JSON for each of `methods`. Methods Bazaar cannot describe are left
/// out (their 402 simply carries no discovery metadata).
pub fn render(d: &Discovery, methods: &[String]) -> BTreeMap<String, RenderedDiscovery> {
    let output = d.output_example.clone().map(|example| DiscoveryOutput {
        example: Some(example),
    });
    let mut out = BTreeMap::new();
    for m in methods {
        let Ok(method) = m.parse::<DiscoveryMethod>() else {
            continue;
        };
        let mut input = DiscoveryInput::new(method);
        if let Some(Value::Object(q)) = &d.query_params {
            input = input.with_query_params(q.clone());
        }
        if let (true, Some(body)) = (method.takes_body(), &d.body) {
            match input.with_body(BodyType::Json, body.clone()) {
                Ok(i) => input = i,
                Err(_) => continue,
            }
        }
        let mut extensions = serde_json::Map::new();
        extensions.insert(
            bazaar::BAZAAR.into(),
            bazaar::bazaar_extension(&input, output.as_ref()),
        );
        out.insert(
            m.clone(),
            RenderedDiscovery {
                v2_extensions: raw(&Value::Object(extensions)),
                v1_output_schema: raw(&bazaar::v1_output_schema(&input, output.as_ref())),
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::rules::PaymentIdPolicy;

    fn extensions(schemas: bool) -> Value {
        let d: Discovery = toml::from_str("query_params = { q = \"bitcoin price\" }").unwrap();
        let methods = vec!["GET".to_string()];
        let policy = PaymentIdPolicy {
            required: true,
            max_answer_bytes: 1024,
        };
        let out = render_extensions(&render(&d, &methods), &methods, Some(&policy), schemas);
        serde_json::from_str(out["GET"].get()).unwrap()
    }

    #[test]
    fn without_schemas_every_extension_keeps_all_but_its_schema() {
        let (full, lean) = (extensions(true), extensions(false));
        let (full, lean) = (full.as_object().unwrap(), lean.as_object().unwrap());
        assert_eq!(
            full.keys().collect::<Vec<_>>(),
            ["bazaar", crate::x402::payment_identifier::KEY]
        );
        assert_eq!(
            full.keys().collect::<Vec<_>>(),
            lean.keys().collect::<Vec<_>>()
        );
        for (key, declaration) in full {
            let mut expected = declaration.as_object().unwrap().clone();
            assert!(expected.remove("schema").is_some(), "{key} has a schema");
            assert_eq!(lean[key], Value::Object(expected), "{key}");
        }
    }
}
