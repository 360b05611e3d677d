//! The tools Warden offers (`tools/list`) and their arguments, read from untrusted JSON
//! with messages an agent can act on.
use serde_json::{Map, Value, json};

/// Longest `purpose` kept (longer is refused: it goes into every record).
pub const MAX_PURPOSE: usize = 1024;
/// Most SQL parameters in one call.
pub const MAX_PARAMS: usize = 1000;

pub fn list() -> Value {
    let purpose = json!({"type": "string", "description": "Why you run this (recorded as evidence; some rules require it)."});
    json!([
        {
            "name": "list_connections",
            "title": "List connections",
            "description": "Connections you may use through Warden, with a one-line description and the kinds of actions the rules allow, hold for approval or deny.",
            "inputSchema": {"type": "object", "properties": {}, "additionalProperties": false},
            "annotations": {"readOnlyHint": true, "openWorldHint": false}
        },
        {
            "name": "describe_connection",
            "title": "Describe a connection",
            "description": "Tables and columns of a SQL connection (non-system schemas), or the HTTP requests the rules allow on an HTTP connection. Plan queries with it instead of guessing.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "connection": {"type": "string", "description": "Connection name (see list_connections)."},
                    "purpose": purpose
                },
                "required": ["connection"],
                "additionalProperties": false
            },
            "annotations": {"readOnlyHint": true, "openWorldHint": false}
        },
        {
            "name": "query",
            "title": "Run one SQL statement",
            "description": "Run exactly one SQL statement on a SQL connection with Warden's credential. Policy decides it (allow, deny, or hold for human approval); the result rows come back masked, capped, with column names. A held statement returns an approval id: poll approval_status, then repeat the same call with approval_id once approved.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "connection": {"type": "string", "description": "Connection name."},
                    "sql": {"type": "string", "description": "One SQL statement; use $1, $2, ... for parameters."},
                    "params": {"type": "array", "description": "Values for $1, $2, ... (sent as text; null is SQL NULL).", "items": {"type": ["string", "number", "boolean", "null"]}},
                    "purpose": purpose,
                    "approval_id": {"type": "string", "description": "The approval id a held call returned, once approved: runs that exact statement once."}
                },
                "required": ["connection", "sql"],
                "additionalProperties": false
            },
            "annotations": {"destructiveHint": true, "openWorldHint": false}
        },
        {
            "name": "http_request",
            "title": "Send one HTTP request",
            "description": "Send one HTTP request to an HTTP connection; Warden adds the connection's credential. Policy decides it; the response body comes back masked.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "connection": {"type": "string"},
                    "method": {"type": "string", "description": "GET, POST, PUT, PATCH, DELETE, HEAD."},
                    "path": {"type": "string", "description": "Path on the connection, starting with `/` (may include `?query`)."},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "body": {"description": "Request body: a string is sent as is, anything else as JSON."},
                    "purpose": purpose,
                    "approval_id": {"type": "string", "description": "The approval id a held call returned, once approved."}
                },
                "required": ["connection", "method", "path"],
                "additionalProperties": false
            },
            "annotations": {"destructiveHint": true, "openWorldHint": false}
        },
        {
            "name": "approval_status",
            "title": "Approval status",
            "description": "State of an approval you requested: pending, approved, denied, timeout or withdrawn.",
            "inputSchema": {
                "type": "object",
                "properties": {"id": {"type": "string", "description": "Approval id (apr_...)."}},
                "required": ["id"],
                "additionalProperties": false
            },
            "annotations": {"readOnlyHint": true, "openWorldHint": false}
        }
    ])
}

/// A tool argument problem, shown to the agent as a tool error.
pub type ArgError = String;

fn string(args: &Map<String, Value>, key: &str, max: usize) -> Result<Option<String>, ArgError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= max => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(format!("`{key}` is longer than {max} bytes")),
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

fn required(args: &Map<String, Value>, key: &str, max: usize) -> Result<String, ArgError> {
    string(args, key, max)?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| format!("`{key}` is required"))
}

fn purpose(args: &Map<String, Value>) -> Result<Option<String>, ArgError> {
    let p = string(args, "purpose", MAX_PURPOSE)?;
    Ok(
        p.map(|p| p.chars().filter(|c| !c.is_control()).collect::<String>())
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty()),
    )
}

fn no_unknown(args: &Map<String, Value>, known: &[&str]) -> Result<(), ArgError> {
    match args.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "unknown argument `{}` (expected: {})",
            k.chars().take(64).collect::<String>(),
            known.join(", ")
        )),
        None => Ok(()),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DescribeArgs {
    pub connection: String,
    pub purpose: Option<String>,
}

pub fn describe_args(args: &Map<String, Value>) -> Result<DescribeArgs, ArgError> {
    no_unknown(args, &["connection", "purpose"])?;
    Ok(DescribeArgs {
        connection: required(args, "connection", 256)?,
        purpose: purpose(args)?,
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueryArgs {
    pub connection: String,
    pub sql: String,
    pub params: Vec<Option<String>>,
    pub purpose: Option<String>,
    pub approval_id: Option<String>,
}

pub fn query_args(args: &Map<String, Value>) -> Result<QueryArgs, ArgError> {
    no_unknown(
        args,
        &["connection", "sql", "params", "purpose", "approval_id"],
    )?;
    let params = match args.get("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) if a.len() <= MAX_PARAMS => a
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Null => Ok(None),
                Value::String(s) => Ok(Some(s.clone())),
                Value::Number(n) => Ok(Some(n.to_string())),
                Value::Bool(b) => Ok(Some(b.to_string())),
                // JSON for json/jsonb parameters.
                other => serde_json::to_string(other)
                    .map(Some)
                    .map_err(|e| format!("`params[{i}]`: {e}")),
            })
            .collect::<Result<_, _>>()?,
        Some(Value::Array(_)) => return Err(format!("at most {MAX_PARAMS} `params`")),
        Some(_) => return Err("`params` must be an array".into()),
    };
    Ok(QueryArgs {
        connection: required(args, "connection", 256)?,
        sql: required(args, "sql", 1 << 20)?,
        params,
        purpose: purpose(args)?,
        approval_id: string(args, "approval_id", 64)?.filter(|s| !s.is_empty()),
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpArgs {
    pub connection: String,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub purpose: Option<String>,
    pub approval_id: Option<String>,
}

pub fn http_args(args: &Map<String, Value>) -> Result<HttpArgs, ArgError> {
    no_unknown(
        args,
        &[
            "connection",
            "method",
            "path",
            "headers",
            "body",
            "purpose",
            "approval_id",
        ],
    )?;
    let method = required(args, "method", 16)?.to_ascii_uppercase();
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("`method` must be an HTTP method such as GET or POST".into());
    }
    let path = required(args, "path", 8192)?;
    if !path.starts_with('/') {
        return Err("`path` must start with `/`".into());
    }
    let headers = match args.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(o)) if o.len() <= 100 => o
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(format!("header `{k}` must be a string")),
            })
            .collect::<Result<_, _>>()?,
        Some(Value::Object(_)) => return Err("at most 100 `headers`".into()),
        Some(_) => return Err("`headers` must be an object of strings".into()),
    };
    let body = match args.get("body") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone().into_bytes()),
        Some(other) => Some(serde_json::to_vec(other).map_err(|e| format!("`body`: {e}"))?),
    };
    Ok(HttpArgs {
        connection: required(args, "connection", 256)?,
        method,
        path,
        headers,
        body,
        purpose: purpose(args)?,
        approval_id: string(args, "approval_id", 64)?.filter(|s| !s.is_empty()),
    })
}

pub fn approval_id_arg(args: &Map<String, Value>) -> Result<String, ArgError> {
    no_unknown(args, &["id"])?;
    required(args, "id", 64)
}

pub fn no_args(args: &Map<String, Value>) -> Result<(), ArgError> {
    no_unknown(args, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(o) => o,
            _ => panic!("object"),
        }
    }

    #[test]
    fn query_arguments() {
        let a = query_args(&obj(json!({
            "connection": "orders", "sql": "select $1, $2, $3, $4",
            "params": ["x", 5, true, null], "purpose": "  ticket 7\n "
        })))
        .unwrap();
        assert_eq!(a.connection, "orders");
        assert_eq!(
            a.params,
            vec![
                Some("x".into()),
                Some("5".into()),
                Some("true".into()),
                None
            ]
        );
        assert_eq!(a.purpose.as_deref(), Some("ticket 7"));
        assert!(a.approval_id.is_none());
        assert!(query_args(&obj(json!({"connection": "orders"}))).is_err());
        assert!(query_args(&obj(json!({"connection": "o", "sql": 5}))).is_err());
        assert!(query_args(&obj(json!({"connection": "o", "sql": "x", "params": "no"}))).is_err());
        let e = query_args(&obj(json!({"connection": "o", "sql": "x", "bogus": 1}))).unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        assert!(query_args(&obj(json!({"connection": "o", "sql": "  "}))).is_err());
    }

    #[test]
    fn http_arguments() {
        let a = http_args(&obj(json!({
            "connection": "billing", "method": "post", "path": "/x?y=1",
            "headers": {"x-a": "b"}, "body": {"k": 1}
        })))
        .unwrap();
        assert_eq!(a.method, "POST");
        assert_eq!(a.body.as_deref(), Some(&br#"{"k":1}"#[..]));
        assert!(
            http_args(&obj(
                json!({"connection": "b", "method": "GET", "path": "x"})
            ))
            .is_err()
        );
        assert!(
            http_args(&obj(
                json!({"connection": "b", "method": "G T", "path": "/"})
            ))
            .is_err()
        );
        assert!(
            http_args(&obj(
                json!({"connection": "b", "method": "GET", "path": "/", "headers": {"a": 1}})
            ))
            .is_err()
        );
    }

    #[test]
    fn tool_list_is_well_formed() {
        let l = list();
        let names: Vec<&str> = l
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "list_connections",
                "describe_connection",
                "query",
                "http_request",
                "approval_status"
            ]
        );
        for t in l.as_array().unwrap() {
            assert_eq!(t["inputSchema"]["type"], "object");
        }
    }
}
