//! Route discovery metadata ("bazaar"): how a paid route tells facilitators how to call it.
//!
//! v2 carries it as the `bazaar` extension, `{info, schema}`, in `PaymentRequired.extensions`.
//! The client echoes it into its payment, and a bazaar-capable facilitator validates `info`
//! against `schema` and catalogs the route when it sees paid traffic. The shape mirrors
//! `@x402/extensions` `declareDiscoveryExtension` (`bazaar/http/resourceService.ts`) *after*
//! the TS server's `enrichDeclaration` step, which narrows `method` to the concrete verb and
//! adds `pathParams`; here the verb is known up front, so both happen at build time.
//!
//! v1 carried the same information in each requirement's `outputSchema`; see
//! [`v1_output_schema`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use thiserror::Error;

/// Key of the discovery extension in `extensions`.
pub const BAZAAR: &str = "bazaar";

const JSON_SCHEMA_DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// HTTP methods discovery can describe. GET/HEAD/DELETE carry input in the query string,
/// POST/PUT/PATCH in a body; that split decides the `info.input` shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DiscoveryMethod {
    Get,
    Head,
    Delete,
    Post,
    Put,
    Patch,
}

impl DiscoveryMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscoveryMethod::Get => "GET",
            DiscoveryMethod::Head => "HEAD",
            DiscoveryMethod::Delete => "DELETE",
            DiscoveryMethod::Post => "POST",
            DiscoveryMethod::Put => "PUT",
            DiscoveryMethod::Patch => "PATCH",
        }
    }

    /// Whether discovery describes this method's input as a request body.
    pub fn takes_body(self) -> bool {
        matches!(
            self,
            DiscoveryMethod::Post | DiscoveryMethod::Put | DiscoveryMethod::Patch
        )
    }
}

impl fmt::Display for DiscoveryMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DiscoveryMethod {
    type Err = DiscoveryError;

    /// Case-insensitive, since HTTP libraries differ in how they spell methods.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const ALL: [DiscoveryMethod; 6] = [
            DiscoveryMethod::Get,
            DiscoveryMethod::Head,
            DiscoveryMethod::Delete,
            DiscoveryMethod::Post,
            DiscoveryMethod::Put,
            DiscoveryMethod::Patch,
        ];
        ALL.into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| DiscoveryError::UnsupportedMethod(s.to_owned()))
    }
}

/// How a request body is encoded (`info.input.bodyType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BodyType {
    #[default]
    Json,
    FormData,
    Text,
}

impl BodyType {
    pub fn as_str(self) -> &'static str {
        match self {
            BodyType::Json => "json",
            BodyType::FormData => "form-data",
            BodyType::Text => "text",
        }
    }
}

/// Why discovery metadata could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DiscoveryError {
    #[error(
        "method {0:?} cannot be described by bazaar discovery (GET, HEAD, DELETE, POST, PUT, PATCH)"
    )]
    UnsupportedMethod(String),
    #[error("{0} requests are described by query parameters, not a body")]
    BodyNotAllowed(DiscoveryMethod),
    #[error("{0} requests must describe a body (bodyType and body)")]
    BodyRequired(DiscoveryMethod),
    #[error("input type {0:?} is not supported (only \"http\")")]
    UnsupportedType(String),
}

/// Why a route template was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "route template {0:?} must match ^/[a-zA-Z0-9_/:.\\-~%]+$ and contain neither \"..\" nor \"://\""
)]
pub struct RouteTemplateError(pub String);

/// Example request body of a body method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryBody {
    pub body_type: BodyType,
    /// An example body; its JSON types also become the schema.
    pub example: Value,
}

/// `info.input` for an HTTP route. Constructors keep the invariant that body methods have a
/// body and query methods do not, so every value serializes to a shape facilitators accept.
///
/// Serializes to (and deserializes from) the wire shape:
/// `{type:"http", method, queryParams?, headers?, pathParams?}` for GET/HEAD/DELETE, and
/// `{type:"http", method, bodyType, body, queryParams?, headers?, pathParams?}` for
/// POST/PUT/PATCH.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "InputWire", into = "InputWire")]
pub struct DiscoveryInput {
    method: DiscoveryMethod,
    body: Option<DiscoveryBody>,
    query_params: Option<Map<String, Value>>,
    headers: Option<BTreeMap<String, String>>,
    path_params: Option<Map<String, Value>>,
}

impl DiscoveryInput {
    /// Input with no examples. Body methods start with an empty JSON object body, which is
    /// what the TS helper sends when no input is declared.
    pub fn new(method: DiscoveryMethod) -> Self {
        DiscoveryInput {
            method,
            body: method.takes_body().then(|| DiscoveryBody {
                body_type: BodyType::Json,
                example: Value::Object(Map::new()),
            }),
            query_params: None,
            headers: None,
            path_params: None,
        }
    }

    /// Input for a route answering `method`, from optional examples, never failing: this runs
    /// while rendering a 402, where a discovery problem must not block payment.
    ///
    /// A method discovery cannot describe (e.g. `OPTIONS`) falls back the way the TS server's
    /// `enrichDeclaration` does: POST when a body is declared, GET otherwise. A body method
    /// without a declared body gets `{}`; a query method ignores `body`. `query_params` is used
    /// only when it is a JSON object (the only shape a query string can have).
    pub fn for_method(method: &str, query_params: Option<Value>, body: Option<Value>) -> Self {
        let method = method.parse().unwrap_or(if body.is_some() {
            DiscoveryMethod::Post
        } else {
            DiscoveryMethod::Get
        });
        let mut input = DiscoveryInput::new(method);
        if let (Some(slot), Some(example)) = (input.body.as_mut(), body) {
            slot.example = example;
        }
        if let Some(Value::Object(params)) = query_params {
            input.query_params = Some(params);
        }
        input
    }

    /// Sets the example body. Only body methods have one.
    pub fn with_body(
        mut self,
        body_type: BodyType,
        example: Value,
    ) -> Result<Self, DiscoveryError> {
        if !self.method.takes_body() {
            return Err(DiscoveryError::BodyNotAllowed(self.method));
        }
        self.body = Some(DiscoveryBody { body_type, example });
        Ok(self)
    }

    /// Example query parameters.
    pub fn with_query_params(mut self, params: Map<String, Value>) -> Self {
        self.query_params = Some(params);
        self
    }

    /// Example request headers a caller must send (beyond the payment header).
    pub fn with_headers(mut self, headers: BTreeMap<String, String>) -> Self {
        self.headers = Some(headers);
        self
    }

    /// Concrete path parameter values for a dynamic route (see [`bazaar_extension_with_route`]).
    pub fn with_path_params(mut self, params: Map<String, Value>) -> Self {
        self.path_params = Some(params);
        self
    }

    pub fn method(&self) -> DiscoveryMethod {
        self.method
    }

    pub fn body(&self) -> Option<&DiscoveryBody> {
        self.body.as_ref()
    }

    pub fn query_params(&self) -> Option<&Map<String, Value>> {
        self.query_params.as_ref()
    }

    pub fn headers(&self) -> Option<&BTreeMap<String, String>> {
        self.headers.as_ref()
    }

    pub fn path_params(&self) -> Option<&Map<String, Value>> {
        self.path_params.as_ref()
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InputWire {
    #[serde(rename = "type")]
    kind: String,
    method: DiscoveryMethod,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body_type: Option<BodyType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    query_params: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path_params: Option<Map<String, Value>>,
}

impl From<DiscoveryInput> for InputWire {
    fn from(input: DiscoveryInput) -> Self {
        let (body_type, body) = match input.body {
            Some(b) => (Some(b.body_type), Some(b.example)),
            None => (None, None),
        };
        InputWire {
            kind: "http".to_owned(),
            method: input.method,
            body_type,
            body,
            query_params: input.query_params,
            headers: input.headers,
            path_params: input.path_params,
        }
    }
}

impl TryFrom<InputWire> for DiscoveryInput {
    type Error = DiscoveryError;

    fn try_from(wire: InputWire) -> Result<Self, Self::Error> {
        if wire.kind != "http" {
            return Err(DiscoveryError::UnsupportedType(wire.kind));
        }
        let body = match (wire.method.takes_body(), wire.body_type, wire.body) {
            (true, Some(body_type), Some(example)) => Some(DiscoveryBody { body_type, example }),
            (true, _, _) => return Err(DiscoveryError::BodyRequired(wire.method)),
            (false, None, None) => None,
            (false, _, _) => return Err(DiscoveryError::BodyNotAllowed(wire.method)),
        };
        Ok(DiscoveryInput {
            method: wire.method,
            body,
            query_params: wire.query_params,
            headers: wire.headers,
            path_params: wire.path_params,
        })
    }
}

/// `info.output`: what a successful response looks like. Serialized as
/// `{type:"json", example?}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiscoveryOutput {
    pub example: Option<Value>,
}

/// Builds the v2 `bazaar` extension value `{info, schema}` for `extensions["bazaar"]`.
///
/// `schema` is a JSON Schema (draft 2020-12) that `info` validates against, laid out like the
/// TS helper's: `input` is closed (`additionalProperties: false`) with `type`/`method` (plus
/// `bodyType`/`body` for body methods) required, and `method` narrowed to the one verb. The
/// TS helper takes hand-written schemas for parameters and bodies; here they are inferred from
/// the examples' JSON types (objects recurse, no field is `required`), which always validates
/// the examples and tells catalog readers each field's type.
pub fn bazaar_extension(input: &DiscoveryInput, output: Option<&DiscoveryOutput>) -> Value {
    let mut input_props = Map::new();
    input_props.insert("type".into(), json!({"type": "string", "const": "http"}));
    input_props.insert(
        "method".into(),
        json!({"type": "string", "enum": [input.method.as_str()]}),
    );
    let mut required = vec!["type", "method"];

    if let Some(body) = &input.body {
        input_props.insert(
            "bodyType".into(),
            json!({"type": "string", "enum": ["json", "form-data", "text"]}),
        );
        input_props.insert("body".into(), infer_schema(&body.example));
        required.extend(["bodyType", "body"]);
    }
    // Query methods always declare `queryParams` (as the TS helper does, defaulting to an open
    // object); body methods only when they have some, since the TS body schema has none.
    if input.query_params.is_some() || !input.method.takes_body() {
        let params = input.query_params.clone().unwrap_or_default();
        input_props.insert("queryParams".into(), infer_schema(&Value::Object(params)));
    }
    if input.headers.is_some() {
        input_props.insert(
            "headers".into(),
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
        );
    }
    if let Some(params) = &input.path_params {
        input_props.insert(
            "pathParams".into(),
            infer_schema(&Value::Object(params.clone())),
        );
    }

    let mut props = Map::new();
    props.insert(
        "input".into(),
        json!({
            "type": "object",
            "properties": input_props,
            "required": required,
            "additionalProperties": false,
        }),
    );

    let mut info = Map::new();
    info.insert(
        "input".into(),
        serde_json::to_value(input).expect("DiscoveryInput serializes to a JSON object"),
    );
    // The TS helper emits `output` only with an example; without one this still says
    // "the response is JSON", which the schema allows (`example` is not required).
    if let Some(output) = output {
        let mut output_props = Map::new();
        let mut output_info = Map::new();
        output_props.insert("type".into(), json!({"type": "string"}));
        output_info.insert("type".into(), json!("json"));
        if let Some(example) = &output.example {
            output_props.insert("example".into(), infer_schema(example));
            output_info.insert("example".into(), example.clone());
        }
        props.insert(
            "output".into(),
            json!({"type": "object", "properties": output_props, "required": ["type"]}),
        );
        info.insert("output".into(), Value::Object(output_info));
    }

    json!({
        "info": info,
        "schema": {
            "$schema": JSON_SCHEMA_DIALECT,
            "type": "object",
            "properties": props,
            "required": ["input"],
        },
    })
}

/// [`bazaar_extension`] for a dynamic route, adding the catalog key `routeTemplate` (e.g.
/// `/users/:userId`). Facilitators catalog the template rather than each concrete URL; pair it
/// with [`DiscoveryInput::with_path_params`].
pub fn bazaar_extension_with_route(
    input: &DiscoveryInput,
    output: Option<&DiscoveryOutput>,
    route_template: &str,
) -> Result<Value, RouteTemplateError> {
    if !is_valid_route_template(route_template) {
        return Err(RouteTemplateError(route_template.to_owned()));
    }
    let mut ext = bazaar_extension(input, output);
    ext["routeTemplate"] = Value::from(route_template);
    Ok(ext)
}

/// `^/[a-zA-Z0-9_/:.\-~%]+$`, without `..` or `://` (the bazaar spec's rule, which keeps
/// templates from smuggling path traversal or absolute URLs into a catalog key).
fn is_valid_route_template(t: &str) -> bool {
    let Some(rest) = t.strip_prefix('/') else {
        return false;
    };
    !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_/:.-~%".contains(&b))
        && !t.contains("..")
        && !t.contains("://")
}

/// The v1 `outputSchema` of a requirement:
/// `{input:{type:"http", method, discoverable:true, queryParams?, bodyType?, bodyFields?,
/// headerFields?}, output: <example or null>}`, as the legacy middleware built it.
///
/// v1 `queryParams` is a string→string record, so non-string example values are written as
/// their JSON text. `bodyFields` is the example body when it is an object. Path parameters
/// have no v1 equivalent and are left out.
pub fn v1_output_schema(input: &DiscoveryInput, output: Option<&DiscoveryOutput>) -> Value {
    let mut v1_input = Map::new();
    v1_input.insert("type".into(), json!("http"));
    v1_input.insert("method".into(), json!(input.method.as_str()));
    v1_input.insert("discoverable".into(), json!(true));
    if let Some(params) = &input.query_params {
        let as_strings: Map<String, Value> = params
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), Value::String(s))
            })
            .collect();
        v1_input.insert("queryParams".into(), Value::Object(as_strings));
    }
    if let Some(body) = &input.body {
        v1_input.insert("bodyType".into(), json!(body.body_type.as_str()));
        if let Value::Object(fields) = &body.example {
            v1_input.insert("bodyFields".into(), Value::Object(fields.clone()));
        }
    }
    if let Some(headers) = &input.headers {
        v1_input.insert(
            "headerFields".into(),
            serde_json::to_value(headers).expect("a string map serializes"),
        );
    }
    let output = output
        .and_then(|o| o.example.clone())
        .unwrap_or(Value::Null);
    json!({"input": v1_input, "output": output})
}

/// A JSON Schema describing `example`'s types. Arrays get `items` only when every element has
/// the same inferred schema, so the schema never rejects its own example.
fn infer_schema(example: &Value) -> Value {
    match example {
        Value::Null => json!({"type": "null"}),
        Value::Bool(_) => json!({"type": "boolean"}),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!({"type": "integer"}),
        Value::Number(_) => json!({"type": "number"}),
        Value::String(_) => json!({"type": "string"}),
        Value::Array(items) => {
            let mut schema = Map::new();
            schema.insert("type".into(), json!("array"));
            let mut inferred = items.iter().map(infer_schema);
            if let Some(first) = inferred.next()
                && inferred.all(|s| s == first)
            {
                schema.insert("items".into(), first);
            }
            Value::Object(schema)
        }
        Value::Object(fields) => {
            let properties: Map<String, Value> = fields
                .iter()
                .map(|(k, v)| (k.clone(), infer_schema(v)))
                .collect();
            json!({"type": "object", "properties": properties})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn get_with_query_params_matches_ts_layout() {
        let input = DiscoveryInput::new(DiscoveryMethod::Get)
            .with_query_params(obj(json!({"city": "San Francisco", "days": 3})));
        let output = DiscoveryOutput {
            example: Some(json!({"temperature": 72.5, "conditions": "sunny"})),
        };
        let ext = bazaar_extension(&input, Some(&output));
        assert_eq!(
            ext,
            json!({
                "info": {
                    "input": {
                        "type": "http",
                        "method": "GET",
                        "queryParams": {"city": "San Francisco", "days": 3}
                    },
                    "output": {
                        "type": "json",
                        "example": {"temperature": 72.5, "conditions": "sunny"}
                    }
                },
                "schema": {
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "object",
                    "properties": {
                        "input": {
                            "type": "object",
                            "properties": {
                                "type": {"type": "string", "const": "http"},
                                "method": {"type": "string", "enum": ["GET"]},
                                "queryParams": {
                                    "type": "object",
                                    "properties": {
                                        "city": {"type": "string"},
                                        "days": {"type": "integer"}
                                    }
                                }
                            },
                            "required": ["type", "method"],
                            "additionalProperties": false
                        },
                        "output": {
                            "type": "object",
                            "properties": {
                                "type": {"type": "string"},
                                "example": {
                                    "type": "object",
                                    "properties": {
                                        "temperature": {"type": "number"},
                                        "conditions": {"type": "string"}
                                    }
                                }
                            },
                            "required": ["type"]
                        }
                    },
                    "required": ["input"]
                }
            })
        );
    }

    #[test]
    fn bare_get_still_declares_open_query_params() {
        let ext = bazaar_extension(&DiscoveryInput::new(DiscoveryMethod::Head), None);
        assert_eq!(
            ext["info"],
            json!({"input": {"type": "http", "method": "HEAD"}})
        );
        assert_eq!(
            ext["schema"]["properties"]["input"]["properties"]["queryParams"],
            json!({"type": "object", "properties": {}})
        );
        assert!(ext["schema"]["properties"].get("output").is_none());
    }

    #[test]
    fn post_with_body_headers_and_path_params() {
        let input = DiscoveryInput::new(DiscoveryMethod::Post)
            .with_body(
                BodyType::Json,
                json!({"prompt": "hi", "tags": ["a", "b"], "n": null}),
            )
            .unwrap()
            .with_headers(BTreeMap::from([(
                "x-api-version".to_string(),
                "3".to_string(),
            )]))
            .with_path_params(obj(json!({"model": "m1"})));
        let ext = bazaar_extension(&input, None);
        assert_eq!(
            ext["info"],
            json!({
                "input": {
                    "type": "http", "method": "POST", "bodyType": "json",
                    "body": {"prompt": "hi", "tags": ["a", "b"], "n": null},
                    "headers": {"x-api-version": "3"},
                    "pathParams": {"model": "m1"}
                }
            })
        );
        let input_schema = &ext["schema"]["properties"]["input"];
        assert_eq!(
            input_schema["required"],
            json!(["type", "method", "bodyType", "body"])
        );
        assert_eq!(input_schema["additionalProperties"], false);
        assert_eq!(
            input_schema["properties"]["body"],
            json!({"type": "object", "properties": {
                "prompt": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "n": {"type": "null"}
            }})
        );
        assert_eq!(
            input_schema["properties"]["bodyType"]["enum"],
            json!(["json", "form-data", "text"])
        );
        assert_eq!(
            input_schema["properties"]["headers"],
            json!({"type": "object", "additionalProperties": {"type": "string"}})
        );
        assert_eq!(
            input_schema["properties"]["pathParams"]["properties"]["model"]["type"],
            "string"
        );
        // Body methods declare queryParams only when they have some.
        assert!(input_schema["properties"].get("queryParams").is_none());
        assert!(ext["schema"]["properties"].get("output").is_none());
    }

    #[test]
    fn output_without_example_only_says_json() {
        let ext = bazaar_extension(
            &DiscoveryInput::new(DiscoveryMethod::Get),
            Some(&DiscoveryOutput::default()),
        );
        assert_eq!(ext["info"]["output"], json!({"type": "json"}));
        assert_eq!(
            ext["schema"]["properties"]["output"],
            json!({"type": "object", "properties": {"type": {"type": "string"}}, "required": ["type"]})
        );
    }

    #[test]
    fn every_info_key_is_declared_in_the_closed_schema() {
        // additionalProperties:false means an undeclared key would make info invalid.
        let inputs = [
            DiscoveryInput::new(DiscoveryMethod::Delete)
                .with_headers(BTreeMap::new())
                .with_path_params(Map::new()),
            DiscoveryInput::new(DiscoveryMethod::Patch)
                .with_query_params(obj(json!({"dry": true})))
                .with_headers(BTreeMap::new()),
        ];
        for input in inputs {
            let ext = bazaar_extension(&input, None);
            let declared = ext["schema"]["properties"]["input"]["properties"]
                .as_object()
                .unwrap();
            for key in ext["info"]["input"].as_object().unwrap().keys() {
                assert!(
                    declared.contains_key(key),
                    "{key} undeclared for {}",
                    input.method()
                );
            }
        }
    }

    #[test]
    fn mixed_arrays_get_no_items() {
        assert_eq!(infer_schema(&json!([1, "a"])), json!({"type": "array"}));
        assert_eq!(infer_schema(&json!([])), json!({"type": "array"}));
        assert_eq!(
            infer_schema(&json!([1, 2])),
            json!({"type": "array", "items": {"type": "integer"}})
        );
        assert_eq!(infer_schema(&json!(true)), json!({"type": "boolean"}));
    }

    #[test]
    fn body_rules_are_enforced() {
        assert_eq!(
            DiscoveryInput::new(DiscoveryMethod::Get).with_body(BodyType::Json, json!({})),
            Err(DiscoveryError::BodyNotAllowed(DiscoveryMethod::Get))
        );
        let put = DiscoveryInput::new(DiscoveryMethod::Put);
        assert_eq!(put.body().unwrap().body_type, BodyType::Json);
        assert_eq!(put.body().unwrap().example, json!({}));
        assert!(
            DiscoveryInput::new(DiscoveryMethod::Delete)
                .body()
                .is_none()
        );
    }

    #[test]
    fn input_serde_round_trips_and_validates() {
        let input = DiscoveryInput::new(DiscoveryMethod::Post)
            .with_body(BodyType::Text, json!("hello"))
            .unwrap();
        let wire = serde_json::to_value(&input).unwrap();
        assert_eq!(
            wire,
            json!({"type": "http", "method": "POST", "bodyType": "text", "body": "hello"})
        );
        assert_eq!(
            serde_json::from_value::<DiscoveryInput>(wire).unwrap(),
            input
        );

        let cases = [
            (
                json!({"type": "http", "method": "POST"}),
                "must describe a body",
            ),
            (
                json!({"type": "http", "method": "GET", "bodyType": "json", "body": {}}),
                "not a body",
            ),
            (
                json!({"type": "mcp", "method": "GET"}),
                "\"mcp\" is not supported",
            ),
            (
                json!({"type": "http", "method": "OPTIONS"}),
                "unknown variant `OPTIONS`",
            ),
        ];
        for (wire, needle) in cases {
            let err = serde_json::from_value::<DiscoveryInput>(wire.clone()).unwrap_err();
            assert!(err.to_string().contains(needle), "{wire}: {err}");
        }
    }

    #[test]
    fn for_method_follows_the_route() {
        let get =
            DiscoveryInput::for_method("get", Some(json!({"q": "x"})), Some(json!({"ignored": 1})));
        assert_eq!(
            serde_json::to_value(&get).unwrap(),
            json!({"type": "http", "method": "GET", "queryParams": {"q": "x"}})
        );
        let post = DiscoveryInput::for_method("POST", None, Some(json!({"prompt": "hi"})));
        assert_eq!(
            serde_json::to_value(&post).unwrap(),
            json!({"type": "http", "method": "POST", "bodyType": "json", "body": {"prompt": "hi"}})
        );
        let put = DiscoveryInput::for_method("PUT", Some(json!("not an object")), None);
        assert_eq!(
            serde_json::to_value(&put).unwrap(),
            json!({"type": "http", "method": "PUT", "bodyType": "json", "body": {}})
        );
        // Methods discovery cannot describe fall back like the TS server.
        assert_eq!(
            DiscoveryInput::for_method("OPTIONS", None, None).method(),
            DiscoveryMethod::Get
        );
        assert_eq!(
            DiscoveryInput::for_method("OPTIONS", None, Some(json!({}))).method(),
            DiscoveryMethod::Post
        );
    }

    #[test]
    fn method_parsing() {
        assert_eq!("get".parse::<DiscoveryMethod>(), Ok(DiscoveryMethod::Get));
        assert_eq!(
            "PATCH".parse::<DiscoveryMethod>(),
            Ok(DiscoveryMethod::Patch)
        );
        assert_eq!(
            "OPTIONS".parse::<DiscoveryMethod>(),
            Err(DiscoveryError::UnsupportedMethod("OPTIONS".into()))
        );
        assert!(DiscoveryMethod::Put.takes_body());
        assert!(!DiscoveryMethod::Head.takes_body());
    }

    #[test]
    fn route_templates() {
        let input = DiscoveryInput::new(DiscoveryMethod::Get)
            .with_path_params(obj(json!({"userId": "123"})));
        let ext = bazaar_extension_with_route(&input, None, "/users/:userId").unwrap();
        assert_eq!(ext["routeTemplate"], "/users/:userId");
        assert_eq!(ext["info"]["input"]["pathParams"]["userId"], "123");
        assert_eq!(
            ext["schema"]["properties"]["input"]["properties"]["pathParams"],
            json!({"type": "object", "properties": {"userId": {"type": "string"}}})
        );
        for ok in ["/a", "/v1.0/items/:id", "/x~y/%20/_-"] {
            assert!(is_valid_route_template(ok), "{ok}");
        }
        for bad in [
            "",
            "/",
            "users/:id",
            "/a/../b",
            "/http://x",
            "/a b",
            "/a?b=1",
            "/a#b",
            "/é",
        ] {
            assert_eq!(
                bazaar_extension_with_route(&input, None, bad),
                Err(RouteTemplateError(bad.to_string())),
                "{bad}"
            );
        }
    }

    #[test]
    fn v1_output_schema_for_get() {
        let input = DiscoveryInput::new(DiscoveryMethod::Get)
            .with_query_params(obj(json!({"city": "SF", "days": 3})))
            .with_headers(BTreeMap::from([("x-k".to_string(), "v".to_string())]))
            .with_path_params(obj(json!({"ignored": "in v1"})));
        assert_eq!(
            v1_output_schema(&input, None),
            json!({
                "input": {
                    "type": "http", "method": "GET", "discoverable": true,
                    "queryParams": {"city": "SF", "days": "3"},
                    "headerFields": {"x-k": "v"}
                },
                "output": null
            })
        );
    }

    #[test]
    fn v1_output_schema_for_post() {
        let input = DiscoveryInput::new(DiscoveryMethod::Post)
            .with_body(BodyType::Json, json!({"prompt": "hi"}))
            .unwrap();
        let output = DiscoveryOutput {
            example: Some(json!({"answer": 42})),
        };
        assert_eq!(
            v1_output_schema(&input, Some(&output)),
            json!({
                "input": {
                    "type": "http", "method": "POST", "discoverable": true,
                    "bodyType": "json", "bodyFields": {"prompt": "hi"}
                },
                "output": {"answer": 42}
            })
        );
        // A non-object body has a bodyType but no bodyFields.
        let text = DiscoveryInput::new(DiscoveryMethod::Put)
            .with_body(BodyType::Text, json!("raw"))
            .unwrap();
        assert_eq!(
            v1_output_schema(&text, Some(&DiscoveryOutput::default()))["input"],
            json!({"type": "http", "method": "PUT", "discoverable": true, "bodyType": "text"})
        );
    }
}
