//! Unit tests per detector and operator, columns, JSON, streaming, config validation.

use warden_masking::*;

fn conn_with(dets: &[DetectorName], op: Operator, fields: &[(&str, Operator)]) -> ConnectionMasker {
    let config = MaskingConfig {
        rules: vec![MaskRule {
            connections: vec!["*".into()],
            detectors: dets.to_vec(),
            operator: op,
            fields: fields.iter().map(|(g, o)| (g.to_string(), *o)).collect(),
        }],
        custom_detectors: vec![CustomDetector {
            name: "employee_id".into(),
            pattern: r"EMP-[0-9]{6}".into(),
            operator: None,
        }],
        hmac_key: Some(b"test-key".to_vec()),
    };
    Masker::new(&config)
        .unwrap()
        .for_connection("orders")
        .unwrap()
}

fn all(op: Operator) -> ConnectionMasker {
    conn_with(&DetectorName::BUILTIN, op, &[])
}

fn redact(s: &str) -> String {
    all(Operator::Redact)
        .mask_text(s, &mut MaskStats::default())
        .into_owned()
}

fn partial(s: &str) -> String {
    all(Operator::Partial)
        .mask_text(s, &mut MaskStats::default())
        .into_owned()
}

fn untouched(s: &str) {
    assert_eq!(redact(s), s, "should survive: {s}");
}

#[test]
fn credit_cards() {
    for c in [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "5555555555554444",
        "2223003122003222",
        "378282246310005",
        "3782 822463 10005",
        "6011111111111117",
        "3530111333300000",
        "36227206271667",
        "6200000000000005",
        "6759649826438453",
    ] {
        assert_eq!(
            redact(&format!("pay {c} now")),
            "pay [REDACTED:credit_card] now",
            "{c}"
        );
    }
    assert_eq!(partial("4111 1111 1111 1111"), "**** **** **** 1111");
    assert_eq!(
        partial("card 4111-1111-1111-1111 2026"),
        "card ****-****-****-1111 2026"
    );
    untouched("4111111111111112"); // Luhn fails
    untouched("1234567812345670"); // Luhn ok, no issuer
    untouched("ISBN 978-3-16-148410-0");
}

#[test]
fn ssn() {
    assert_eq!(redact("ssn 123-45-6789."), "ssn [REDACTED:us_ssn].");
    assert_eq!(partial("123-45-6789"), "***-**-6789");
    assert_eq!(redact("SSN: 123456789"), "SSN: [REDACTED:us_ssn]");
    untouched("id 123456789"); // bare nine digits without context
    untouched("000-12-3456 666-12-3456 900-12-3456 123-00-4567 123-45-0000");
    untouched("INV-123-45-6789");
    untouched("ORD-2026-000123 on 2026-11-27");
}

#[test]
fn email() {
    assert_eq!(
        partial("to jane.doe+x@mail.example.com."),
        "to j***@mail.example.com."
    );
    assert_eq!(redact("a@b.co"), "[REDACTED:email]");
    untouched("user@localhost and @handle and user@ and @x.com");
}

#[test]
fn iban() {
    assert_eq!(
        redact("IBAN DE89 3704 0044 0532 0130 00, thanks"),
        "IBAN [REDACTED:iban], thanks"
    );
    assert_eq!(redact("GB82WEST12345698765432"), "[REDACTED:iban]");
    assert_eq!(partial("DE89370400440532013000"), "DE****************3000");
    untouched("DE89370400440532013001"); // mod-97 fails
    untouched("DE8937040044053201300"); // wrong length
}

#[test]
fn phone() {
    for p in [
        "+1 415 555 2671",
        "+14155552671",
        "+44 20 7946 0958",
        "(555) 123-4567",
        "555-123-4567",
    ] {
        assert_eq!(
            redact(&format!("call {p} today")),
            "call [REDACTED:phone] today",
            "{p}"
        );
    }
    assert_eq!(partial("+44 20 7946 0958"), "+** ** **** **58");
    untouched("on 2026-11-27 or 11/27/2026, total 123456789012 items");
    untouched("call 123-456-7890"); // area code cannot start with 1
}

#[test]
fn ip() {
    assert_eq!(redact("from 10.1.2.3:5432"), "from [REDACTED:ip]:5432");
    assert_eq!(
        redact("peer 2001:db8::8a2e:370:7334 up"),
        "peer [REDACTED:ip] up"
    );
    assert_eq!(partial("10.1.2.3"), "10.*.*.*");
    untouched("999.1.1.1 and 1.2.3.4.5 and 12:30:45 and std::vector and 00:1a:2b:3c:4d:5e");
}

#[test]
fn secrets() {
    let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    for s in [
        "AKIAIOSFODNN7EXAMPLE",
        "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",
        "github_pat_11ABCDEFG0123456789abc_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVW",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "sk-proj-abc123DEF456ghi789JKL012mno345",
        jwt,
    ] {
        assert_eq!(redact(&format!("t={s} ")), "t=[REDACTED:secret] ", "{s}");
    }
    assert_eq!(partial("AKIAIOSFODNN7EXAMPLE"), "AKIA…");
    assert_eq!(
        redact("Server=x;Password=hunter2;Port=1"),
        "Server=x;Password=[REDACTED:secret];Port=1"
    );
    assert_eq!(
        redact("postgres://app:s3cret@db:5432/x"),
        "postgres://app:[REDACTED:secret]@db:5432/x"
    );
    assert_eq!(
        partial(r#"{"password": "hunter2"}"#),
        r#"{"password": "****"}"#
    );
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAAAA==\n-----END RSA PRIVATE KEY-----";
    assert_eq!(
        redact(&format!("k:\n{pem}\nbye")),
        "k:\n[REDACTED:secret]\nbye"
    );
    untouched("eyJub3QiOiJqd3QifQ.eyJ4IjoxfQ.sig"); // header without alg
    untouched("the password is required; sk-learn");
}

#[test]
fn custom_detector_and_hash() {
    let c = conn_with(
        &[DetectorName::Custom("employee_id".into())],
        Operator::Hash,
        &[],
    );
    let mut st = MaskStats::default();
    let a = c.mask_text("emp EMP-123456", &mut st).into_owned();
    let b = c.mask_text("emp EMP-123456", &mut st).into_owned();
    assert_eq!(a, b);
    assert!(
        a.starts_with("emp h:") && a.len() == "emp h:".len() + 16,
        "{a}"
    );
    assert_eq!(st.per_detector["employee_id"], 2);
    // Same card in two formats hashes the same (joins still work).
    let h = all(Operator::Hash);
    let mut st = MaskStats::default();
    assert_eq!(
        h.mask_text("4111 1111 1111 1111", &mut st),
        h.mask_text("4111111111111111", &mut st)
    );
}

#[test]
fn null_operator_in_text_is_empty() {
    assert_eq!(
        all(Operator::Null).mask_text("a 123-45-6789 b", &mut MaskStats::default()),
        "a  b"
    );
}

#[test]
fn stats_count_per_detector() {
    let mut st = MaskStats::default();
    all(Operator::Redact).mask_text("a@b.co c@d.co 4111111111111111", &mut st);
    assert_eq!(st.per_detector["email"], 2);
    assert_eq!(st.per_detector["credit_card"], 1);
    assert_eq!(st.total(), 3);
}

fn col(name: &str, table: Option<&str>, oid: u32, binary: bool) -> ColumnInfo {
    ColumnInfo {
        name: name.into(),
        table: table.map(Into::into),
        type_oid: oid,
        binary,
    }
}

#[test]
fn columns() {
    let c = conn_with(
        &[DetectorName::Email, DetectorName::Ip],
        Operator::Partial,
        &[
            ("ssn", Operator::Redact),
            ("*.card_number", Operator::Partial),
            ("users.secret", Operator::Null),
        ],
    );
    let plan = c.plan_columns(&[
        col("id", None, 23, false),
        col("email", None, 25, false),
        col("ssn", None, 1043, false),
        col("card_number", Some("orders"), 25, false),
        col("ssn_int", None, 23, false),
        col("created", None, 1184, false),
        col("secret", Some("users"), 25, true),
        col("ssn", None, 23, true),
        col("addr", None, 869, true),
        col("doc", None, 3802, true),
    ]);
    use ColumnAction::*;
    assert_eq!(
        plan.actions(),
        vec![
            Skip,
            Scan,
            Field(Operator::Redact),
            Field(Operator::Partial),
            Skip,
            Skip,
            Field(Operator::Null),
            Field(Operator::Redact),
            Field(Operator::Null),
            Scan
        ]
    );
    let mut st = MaskStats::default();
    assert_eq!(plan.mask_value(0, b"42", &mut st), MaskResult::Unchanged);
    assert_eq!(
        plan.mask_value(1, b"jane@example.com", &mut st),
        MaskResult::Replaced(b"j***@example.com".to_vec())
    );
    assert_eq!(
        plan.mask_value(1, b"nobody", &mut st),
        MaskResult::Unchanged
    );
    assert_eq!(
        plan.mask_value(2, b"123-45-6789", &mut st),
        MaskResult::Replaced(b"****".to_vec())
    );
    assert_eq!(
        plan.mask_value(3, b"4111111111111111", &mut st),
        MaskResult::Replaced(b"************1111".to_vec())
    );
    assert_eq!(plan.mask_value(6, b"x", &mut st), MaskResult::Null);
    // Binary int targeted by a field rule: never passed, never garbled.
    assert_eq!(plan.mask_value(7, &[0, 0, 0, 1], &mut st), MaskResult::Null);
    assert_eq!(
        plan.mask_value(8, &[2, 32, 0, 4, 10, 0, 0, 1], &mut st),
        MaskResult::Null
    );
    let mut jsonb = vec![1u8];
    jsonb.extend_from_slice(br#"{"a":"jane@example.com"}"#);
    assert_eq!(
        plan.mask_value(9, &jsonb, &mut st),
        MaskResult::Replaced(b"\x01{\"a\":\"j***@example.com\"}".to_vec())
    );
    assert_eq!(plan.mask_value(99, b"x", &mut st), MaskResult::Null);
    assert_eq!(st.per_detector["field:ssn"], 2);
    // Column ids and counts never need detectors: a rule-free plan is a no-op.
    let only_fields = conn_with(&[], Operator::Redact, &[("ssn", Operator::Redact)]);
    assert!(
        only_fields
            .plan_columns(&[col("email", None, 25, false)])
            .is_noop()
    );
}

#[test]
fn json_fields_and_detectors() {
    let c = conn_with(
        &[DetectorName::Email, DetectorName::CreditCard],
        Operator::Redact,
        &[
            ("*.card_number", Operator::Partial),
            ("ssn", Operator::Null),
        ],
    );
    let mut v: serde_json::Value = serde_json::json!({
        "user": {"email": "jane@example.com", "ssn": "123-45-6789", "tags": ["ok", "x@y.io"]},
        "card_number": "4111111111111111",
        "payment": {"card_number": 4111111111111111u64},
        "note": "card 5555555555554444",
        "n": 7,
    });
    let mut st = MaskStats::default();
    c.mask_json(&mut v, &mut st);
    assert_eq!(
        v,
        serde_json::json!({
            "user": {"email": "[REDACTED:email]", "ssn": null, "tags": ["ok", "[REDACTED:email]"]},
            "card_number": "************1111",
            "payment": {"card_number": "************1111"},
            "note": "card [REDACTED:credit_card]",
            "n": 7,
        })
    );
    assert_eq!(st.per_detector["field:*.card_number"], 2);
}

#[test]
fn streaming_across_boundaries() {
    let c = all(Operator::Partial);
    let text = "x".repeat(1000) + " jane@example.com 4111 1111 1111 1111 " + &"y".repeat(700);
    let one = c.mask_text(&text, &mut MaskStats::default()).into_owned();
    for cut in [1000, 1005, 1010, 1020, 1025, 1700] {
        let mut s = c.stream();
        let mut out = Vec::new();
        let mut st = MaskStats::default();
        s.push(&text.as_bytes()[..cut], &mut out, &mut st);
        s.push(&text.as_bytes()[cut..], &mut out, &mut st);
        s.finish(&mut out, &mut st);
        assert_eq!(String::from_utf8(out).unwrap(), one, "cut at {cut}");
        assert_eq!(st.total(), 2);
    }
}

#[test]
fn streaming_holds_a_pem_key() {
    let c = all(Operator::Redact);
    let body: String = (0..40)
        .map(|i| format!("{}\n", "A".repeat(60 + i % 3)))
        .collect();
    let text = format!(
        "start\n-----BEGIN PRIVATE KEY-----\n{body}-----END PRIVATE KEY-----\n{}",
        "z".repeat(600)
    );
    let one = c.mask_text(&text, &mut MaskStats::default()).into_owned();
    assert!(!one.contains("AAAA"));
    let mut s = c.stream();
    let mut out = Vec::new();
    let mut st = MaskStats::default();
    for ch in text.as_bytes().chunks(7) {
        s.push(ch, &mut out, &mut st);
    }
    s.finish(&mut out, &mut st);
    assert_eq!(String::from_utf8(out).unwrap(), one);
}

#[test]
fn routing_by_connection() {
    let config = MaskingConfig {
        rules: vec![MaskRule {
            connections: vec!["orders".into()],
            detectors: vec![DetectorName::Email],
            operator: Operator::Redact,
            fields: vec![],
        }],
        ..Default::default()
    };
    let m = Masker::new(&config).unwrap();
    assert!(m.for_connection("orders").is_some());
    assert!(m.for_connection("billing").is_none());
}

#[test]
fn validation_names_the_problem() {
    let config = MaskingConfig {
        rules: vec![MaskRule {
            connections: vec!["*".into()],
            detectors: vec![DetectorName::parse("nope"), DetectorName::parse("bad")],
            operator: Operator::Hash,
            fields: vec![
                ("".into(), Operator::Redact),
                ("users..x".into(), Operator::Redact),
            ],
        }],
        custom_detectors: vec![
            CustomDetector {
                name: "bad".into(),
                pattern: "(unclosed".into(),
                operator: None,
            },
            CustomDetector {
                name: "long".into(),
                pattern: r"\d+".into(),
                operator: None,
            },
        ],
        hmac_key: None,
    };
    let errs = config.validate().unwrap_err();
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    let joined = text.join("\n");
    assert!(joined.contains("\"(unclosed\""), "{joined}");
    assert!(joined.contains("unknown detector \"nope\""), "{joined}");
    assert!(joined.contains("empty field pattern"), "{joined}");
    assert!(joined.contains("users..x"), "{joined}");
    assert!(joined.contains(r"\\d+"), "{joined}");
    assert!(joined.contains("needs a masking HMAC key"), "{joined}");
    assert!(Masker::new(&config).is_err());
}
