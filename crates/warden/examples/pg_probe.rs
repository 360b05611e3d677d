//! A tokio-postgres client used by the end-to-end tests: `pg_probe "<conn string>" <scenario>`.
//! Prints one JSON object on stdout. Scenarios: simple, extended, cancel, copy_out.
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio_postgres::NoTls;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(conn_str), Some(scenario)) = (args.next(), args.next()) else {
        eprintln!(
            "usage: pg_probe \"host=... port=... user=... password=... dbname=...\" simple|extended|cancel|copy_out"
        );
        std::process::exit(2);
    };
    let out = match run(&conn_str, &scenario).await {
        Ok(v) => v,
        Err(e) => {
            json!({"ok": false, "error": e.to_string(), "sqlstate": e.code().map(|c| c.code().to_string())})
        }
    };
    println!("{out}");
}

async fn run(conn_str: &str, scenario: &str) -> Result<serde_json::Value, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conn_str, NoTls).await?;
    let conn_task = tokio::spawn(connection);
    let v = match scenario {
        "simple" => {
            let msgs = client.simple_query("select 1").await?;
            let rows: Vec<Vec<Option<String>>> = msgs
                .iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                    }
                    _ => None,
                })
                .collect();
            json!({"ok": true, "rows": rows})
        }
        "extended" => {
            let stmt = client.prepare("select $1::int + 1").await?;
            let row = client.query_one(&stmt, &[&41i32]).await?;
            let value: i32 = row.get(0);
            json!({"ok": true, "value": value})
        }
        "cancel" => {
            let token = client.cancel_token();
            let canceller = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                token.cancel_query(NoTls).await
            });
            let r = client.simple_query("select pg_sleep(30)").await;
            let cancel_result = canceller.await.map(|r| r.is_ok()).unwrap_or(false);
            match r {
                Ok(_) => json!({"ok": false, "error": "query finished; cancel had no effect"}),
                Err(e) => json!({
                    "ok": cancel_result,
                    "cancelled": e.code().map(|c| c.code() == "57014").unwrap_or(false),
                    "sqlstate": e.code().map(|c| c.code().to_string()),
                }),
            }
        }
        "copy_out" => {
            let stream = client
                .copy_out("copy (select generate_series(1,1000)) to stdout")
                .await?;
            futures_util::pin_mut!(stream);
            let (mut bytes, mut lines) = (0usize, 0usize);
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                bytes += chunk.len();
                lines += chunk.iter().filter(|b| **b == b'\n').count();
            }
            json!({"ok": true, "bytes": bytes, "lines": lines})
        }
        other => json!({"ok": false, "error": format!("unknown scenario {other}")}),
    };
    drop(client);
    let _ = conn_task.await;
    Ok(v)
}
