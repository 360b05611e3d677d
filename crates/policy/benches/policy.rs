//! The SQL classifier and the policy matcher, per statement as the relay calls them.
//! `cargo bench -p warden-policy --bench policy -- --warm-up-time 1 --measurement-time 2`
//!
//! - `classify/*`: `classify(text, Postgres)` (split + sqlparser + the walk that collects
//!   kinds, tables, functions) on a simple SELECT, pgbench -S's SELECT, a 10-statement
//!   batch and a ~2 KB analytic query with CTEs, joins and window functions;
//! - `split/batch_10`: `split_statements` alone on the batch;
//! - `shape/*`: `literal_shape` (the key that lets texts differing only in literals share
//!   one classification) on the simple SELECT, pgbench -S's SELECT and the big CTE;
//! - `decide/*`: `Policy::decide` for an allowed SELECT and an allowed HTTP GET with 5 and
//!   200 rules (the matching rule last, most rules naming other principals/connections).

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use warden_core::{AuthInfo, AuthMethod, Effect, Principal};
use warden_policy::{
    ActionClass, Dialect, Policy, PrincipalPattern, Refinement, Rule, SqlKind, classify,
    classify_one, literal_shape, split_statements,
};

const SIMPLE: &str = "SELECT id, name, price FROM items WHERE id = 42";
const PGBENCH: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;";
const BATCH: &str = "BEGIN; \
SELECT id, name FROM items WHERE id = 1; \
SELECT count(*) FROM orders WHERE status = 'paid'; \
UPDATE orders SET status = 'shipped' WHERE id = 77; \
INSERT INTO audit_log(order_id, note) VALUES (77, 'shipped; by agent'); \
SELECT o.id, c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = 77; \
SET statement_timeout = '5s'; \
DELETE FROM carts WHERE updated_at < now() - interval '30 days'; \
SELECT $tag$literal ; with semicolon$tag$ AS s; \
COMMIT;";
const BIG_CTE: &str = "WITH recent AS (
    SELECT o.id, o.customer_id, o.total, o.created_at, o.status
    FROM sales.orders o
    WHERE o.created_at >= date_trunc('month', now()) - interval '3 months'
      AND o.status IN ('paid', 'shipped', 'delivered')
), per_customer AS (
    SELECT r.customer_id, count(*) AS n, sum(r.total) AS spent, max(r.created_at) AS last_order,
           avg(r.total) FILTER (WHERE r.status = 'delivered') AS avg_delivered
    FROM recent r
    GROUP BY r.customer_id
    HAVING count(*) > 2
), ranked AS (
    SELECT pc.*, rank() OVER (ORDER BY pc.spent DESC) AS spend_rank,
           ntile(10) OVER (ORDER BY pc.n DESC) AS decile,
           lag(pc.spent) OVER (PARTITION BY pc.n ORDER BY pc.last_order) AS prev_spent
    FROM per_customer pc
), regions AS (
    SELECT c.id, c.email, a.country, a.region, coalesce(a.city, 'unknown') AS city
    FROM crm.customers c
    LEFT JOIN crm.addresses a ON a.customer_id = c.id AND a.kind = 'billing'
    WHERE c.deleted_at IS NULL
)
SELECT rg.country, rg.region, rg.city, rk.customer_id, rg.email, rk.n, rk.spent,
       rk.spend_rank, rk.decile, round(rk.spent / nullif(rk.n, 0), 2) AS avg_order,
       CASE WHEN rk.prev_spent IS NULL THEN 'first' WHEN rk.spent > rk.prev_spent THEN 'up'
            ELSE 'down' END AS trend,
       (SELECT count(*) FROM support.tickets t WHERE t.customer_id = rk.customer_id
          AND t.opened_at > now() - interval '90 days') AS tickets
FROM ranked rk
JOIN regions rg ON rg.id = rk.customer_id
WHERE rk.spend_rank <= 100
  AND rg.country = ANY (ARRAY['DE', 'FR', 'NL', 'SE'])
  AND EXISTS (SELECT 1 FROM sales.payments p WHERE p.order_id IN
              (SELECT id FROM recent WHERE customer_id = rk.customer_id) AND p.state = 'settled')
ORDER BY rg.country, rk.spend_rank
LIMIT 100";

fn principal() -> Principal {
    Principal {
        id: "agent:bench".into(),
        groups: vec!["agents".into(), "reporting".into()],
        auth: AuthInfo {
            method: AuthMethod::WardenKey,
            issuer: Some("warden".into()),
            subject: Some("k7f3a9c2e".into()),
        },
        on_behalf_of: None,
    }
}

fn rule(id: String, principal: &str, connection: &str, sql: Option<Vec<SqlKind>>) -> Rule {
    let http = if sql.is_none() {
        Some(vec!["GET /invoices/**".to_string()])
    } else {
        None
    };
    Rule {
        id,
        principals: vec![PrincipalPattern::parse(principal).unwrap()],
        connections: vec![connection.to_string()],
        sql,
        http,
        effect: Effect::Allow,
        approvers: Vec::new(),
        refine: Refinement::default(),
    }
}

/// `n` rules: `n - 2` others (every fifth names the benchmark's principal but only write
/// kinds; the rest name other groups, a mix of deny/approve/allow, some with table
/// refinements), then the two that allow the benchmark's actions.
fn policy(n: usize) -> Policy {
    let mut rules = Vec::with_capacity(n);
    for i in 0..n - 2 {
        if i % 5 == 0 {
            // Names the benchmark's principal and connection, covers other kinds only.
            let mut r = rule(
                format!("agents-no-writes-{i}"),
                "group:agents",
                "*",
                Some(vec![SqlKind::Insert, SqlKind::Update, SqlKind::Delete]),
            );
            r.effect = Effect::Deny;
            rules.push(r);
            continue;
        }
        let mut r = rule(
            format!("team-{i}"),
            &format!("group:team{}", i % 17),
            if i % 3 == 0 { "*" } else { "orders" },
            Some(vec![SqlKind::Select, SqlKind::Insert, SqlKind::Update]),
        );
        r.effect = [Effect::Allow, Effect::Approve, Effect::Deny][i % 3];
        if r.effect == Effect::Approve {
            r.approvers = vec!["group:dba".into()];
        }
        if i % 4 == 0 {
            r.refine.tables = Some(vec![format!("payments_{i}"), "secrets.*".into()]);
        }
        rules.push(r);
    }
    rules.push(rule(
        "agents-select".into(),
        "group:agents",
        "orders",
        Some(vec![SqlKind::Select]),
    ));
    rules.push(rule("agents-get".into(), "group:agents", "billing", None));
    Policy::new(rules)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    for (name, sql) in [
        ("simple_select", SIMPLE),
        ("pgbench_select", PGBENCH),
        ("batch_10", BATCH),
        ("big_cte", BIG_CTE),
    ] {
        g.throughput(Throughput::Bytes(sql.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| black_box(classify(black_box(sql), Dialect::Postgres)))
        });
    }
    g.finish();
    assert_eq!(classify(BATCH, Dialect::Postgres).len(), 10);

    let mut g = c.benchmark_group("shape");
    for (name, sql) in [
        ("simple_select", SIMPLE),
        ("pgbench_select", PGBENCH),
        ("big_cte", BIG_CTE),
    ] {
        assert!(literal_shape(sql).is_some(), "{name} is shaped");
        g.throughput(Throughput::Bytes(sql.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| black_box(literal_shape(black_box(sql))))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("split");
    g.throughput(Throughput::Bytes(BATCH.len() as u64));
    g.bench_function("batch_10", |b| {
        b.iter(|| black_box(split_statements(black_box(BATCH))))
    });
    g.finish();

    let p = principal();
    let info = classify_one(PGBENCH, Dialect::Postgres);
    let mut g = c.benchmark_group("decide");
    for n in [5usize, 200] {
        let policy = policy(n);
        let sql = ActionClass::Sql(&info);
        assert_eq!(policy.decide(&p, "orders", &sql).effect, Effect::Allow);
        g.bench_function(format!("sql_select_{n}_rules"), |b| {
            b.iter(|| black_box(policy.decide(&p, black_box("orders"), &sql)))
        });
        let http = ActionClass::Http {
            method: "GET",
            path: "/invoices/7",
        };
        assert_eq!(policy.decide(&p, "billing", &http).effect, Effect::Allow);
        g.bench_function(format!("http_get_{n}_rules"), |b| {
            b.iter(|| black_box(policy.decide(&p, black_box("billing"), &http)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
