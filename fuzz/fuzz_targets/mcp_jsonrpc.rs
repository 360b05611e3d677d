//! The MCP front door reads every POST body to /mcp: JSON-RPC framing first, then the
//! tool arguments of each `tools/call`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use warden_mcp::{jsonrpc, tools};

fuzz_target!(|data: &[u8]| {
    let entries = match jsonrpc::parse_body(data) {
        Ok(jsonrpc::Body::Single(e)) => vec![e],
        Ok(jsonrpc::Body::Batch(v)) => v,
        Err(_) => return,
    };
    for e in entries {
        if let Ok(jsonrpc::Message::Request { params, .. }) = e
            && let Ok(p) = jsonrpc::params_object(params)
        {
            let args = match p.get("arguments") {
                Some(serde_json::Value::Object(o)) => o.clone(),
                _ => p.clone(),
            };
            let _ = tools::query_args(&args);
            let _ = tools::http_args(&args);
            let _ = tools::describe_args(&args);
            let _ = tools::approval_id_arg(&args);
        }
    }
});
