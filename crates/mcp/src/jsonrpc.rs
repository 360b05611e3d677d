//! JSON-RPC 2.0 as MCP uses it: one message (or, for clients of protocol 2025-03-26, a
//! batch) per HTTP POST body. Untrusted bytes: every way a body can be wrong maps to a
//! JSON-RPC error (`-32700` parse error, `-32600` invalid request), never a panic.
use serde_json::{Map, Value, json};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;

/// Most messages accepted in one batch.
pub const MAX_BATCH: usize = 64;
/// Deepest JSON nesting accepted (serde_json's own recursion limit is 128).
pub const MAX_DEPTH: usize = 64;

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }
    pub fn to_json(&self) -> Value {
        let mut e = json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.data {
            e["data"] = d.clone();
        }
        e
    }
}

/// One client → server message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request: must be answered (`id` is a string or a number).
    Request {
        id: Value,
        method: String,
        params: Option<Value>,
    },
    /// A notification: never answered.
    Notification {
        method: String,
        params: Option<Value>,
    },
    /// A response to a server → client request (Warden sends none; ignored).
    Response,
}

/// One entry of a body: a message, or what was wrong with it (and the id, when one could
/// be read, to answer with).
pub type Entry = Result<Message, (Value, RpcError)>;

/// A parsed POST body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Single(Entry),
    Batch(Vec<Entry>),
}

fn depth_ok(v: &Value, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    match v {
        Value::Array(a) => a.iter().all(|x| depth_ok(x, depth + 1)),
        Value::Object(o) => o.values().all(|x| depth_ok(x, depth + 1)),
        _ => true,
    }
}

/// Parse a POST body. `Err` is a whole-body failure (not JSON, empty batch), answered
/// with a single error response whose id is `null`.
pub fn parse_body(bytes: &[u8]) -> Result<Body, RpcError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| RpcError::new(PARSE_ERROR, format!("parse error: {e}")))?;
    if !depth_ok(&v, 0) {
        return Err(RpcError::new(
            INVALID_REQUEST,
            format!("invalid request: JSON nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    match v {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(RpcError::new(
                    INVALID_REQUEST,
                    "invalid request: empty batch",
                ));
            }
            if items.len() > MAX_BATCH {
                return Err(RpcError::new(
                    INVALID_REQUEST,
                    format!("invalid request: more than {MAX_BATCH} messages in one batch"),
                ));
            }
            Ok(Body::Batch(items.into_iter().map(parse_message).collect()))
        }
        other => Ok(Body::Single(parse_message(other))),
    }
}

fn invalid(id: Value, why: &str) -> (Value, RpcError) {
    (
        id,
        RpcError::new(INVALID_REQUEST, format!("invalid request: {why}")),
    )
}

/// One JSON value → one message.
pub fn parse_message(v: Value) -> Entry {
    let Value::Object(mut o) = v else {
        return Err(invalid(Value::Null, "a message must be a JSON object"));
    };
    let id = o.remove("id");
    let id_ok = matches!(&id, Some(Value::String(_)) | Some(Value::Number(_)));
    let reply_id = if id_ok {
        id.clone().unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    if o.get("jsonrpc") != Some(&Value::String("2.0".into())) {
        return Err(invalid(reply_id, "`jsonrpc` must be \"2.0\""));
    }
    let method = o.remove("method");
    let params = o.remove("params");
    let method = match method {
        None => {
            // A response from the client (to a server request): result or error.
            if o.contains_key("result") || o.contains_key("error") {
                return Ok(Message::Response);
            }
            return Err(invalid(reply_id, "`method` is missing"));
        }
        Some(Value::String(m)) => m,
        Some(_) => return Err(invalid(reply_id, "`method` must be a string")),
    };
    if let Some(p) = &params
        && !matches!(p, Value::Object(_) | Value::Array(_))
    {
        return Err(invalid(reply_id, "`params` must be an object or an array"));
    }
    match id {
        None => Ok(Message::Notification { method, params }),
        Some(_) if id_ok => Ok(Message::Request {
            id: reply_id,
            method,
            params,
        }),
        Some(_) => Err(invalid(Value::Null, "`id` must be a string or a number")),
    }
}

pub fn ok(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

pub fn err(id: &Value, e: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": e.to_json()})
}

/// `params` as an object (absent = empty); arrays are not used by MCP methods.
pub fn params_object(params: Option<Value>) -> Result<Map<String, Value>, RpcError> {
    match params {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(o)) => Ok(o),
        Some(_) => Err(RpcError::new(
            INVALID_PARAMS,
            "invalid params: expected an object",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn single(b: &str) -> Entry {
        match parse_body(b.as_bytes()).unwrap() {
            Body::Single(e) => e,
            Body::Batch(_) => panic!("batch"),
        }
    }

    #[test]
    fn requests_notifications_responses() {
        assert_eq!(
            single(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            Ok(Message::Request {
                id: json!(1),
                method: "ping".into(),
                params: None
            })
        );
        assert_eq!(
            single(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(Message::Notification {
                method: "notifications/initialized".into(),
                params: None
            })
        );
        assert_eq!(
            single(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#),
            Ok(Message::Response)
        );
    }

    #[test]
    fn malformed_bodies_are_jsonrpc_errors() {
        assert_eq!(parse_body(b"{not json").unwrap_err().code, PARSE_ERROR);
        assert_eq!(parse_body(b"").unwrap_err().code, PARSE_ERROR);
        assert_eq!(parse_body(b"[]").unwrap_err().code, INVALID_REQUEST);
        let e = single(r#"{"jsonrpc":"1.0","id":7,"method":"x"}"#).unwrap_err();
        assert_eq!((e.0, e.1.code), (json!(7), INVALID_REQUEST));
        let e = single(r#"{"jsonrpc":"2.0","id":7}"#).unwrap_err();
        assert_eq!(e.1.code, INVALID_REQUEST);
        let e = single(r#"{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}"#).unwrap_err();
        assert_eq!((e.0, e.1.code), (Value::Null, INVALID_REQUEST));
        let e = single(r#"{"jsonrpc":"2.0","id":1,"method":5}"#).unwrap_err();
        assert_eq!(e.1.code, INVALID_REQUEST);
        let e = single(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#).unwrap_err();
        assert_eq!(e.1.code, INVALID_REQUEST);
        assert_eq!(single("42").unwrap_err().1.code, INVALID_REQUEST);
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(parse_body(deep.as_bytes()).is_err());
    }

    #[test]
    fn batches() {
        let b = parse_body(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}, 5]"#).unwrap();
        let Body::Batch(v) = b else { panic!() };
        assert!(v[0].is_ok() && v[1].is_err());
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_body(&bytes);
        }

        #[test]
        fn never_panics_on_json_shapes(s in r#"[\[\]{}",:0-9a-z ]{0,64}"#) {
            let _ = parse_body(s.as_bytes());
        }
    }
}
