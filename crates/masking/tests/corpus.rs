//! Recall and false positives on the labelled corpus (`corpus/generate.py`).
//! Run with `--nocapture` to see the figures and every false positive.

use warden_masking::{DetectorName, MaskRule, Masker, MaskingConfig, Operator};

/// False positives documented in docs/masking.md; update both together.
const DOCUMENTED_FALSE_POSITIVES: usize = 3;

#[test]
fn corpus_recall_is_total_and_false_positives_are_known() {
    let config = MaskingConfig {
        rules: vec![MaskRule {
            connections: vec!["*".into()],
            detectors: DetectorName::BUILTIN.to_vec(),
            operator: Operator::Redact,
            fields: vec![],
        }],
        ..Default::default()
    };
    let masker = Masker::new(&config).unwrap();
    let conn = masker.for_connection("any").unwrap();
    let corpus = include_str!("../corpus/corpus.jsonl");
    let (mut positives, mut found, mut negatives, mut neg_hit) = (0, 0, 0, 0);
    let mut misses = Vec::new();
    let mut fps = Vec::new();
    let mut per_detector = std::collections::BTreeMap::<String, (u32, u32)>::new();
    for line in corpus.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let text = v["text"].as_str().unwrap();
        let dets = conn.find(text.as_bytes());
        let labels: Vec<(usize, usize, String)> = v["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["start"].as_u64().unwrap() as usize,
                    l["end"].as_u64().unwrap() as usize,
                    l["detector"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        for (s, e, d) in &labels {
            positives += 1;
            let entry = per_detector.entry(d.clone()).or_default();
            entry.0 += 1;
            if dets
                .iter()
                .any(|x| x.start == *s && x.end == *e && &x.detector == d)
            {
                found += 1;
                entry.1 += 1;
            } else {
                misses.push(format!(
                    "{d}: {:?} in {text:?} (found {dets:?})",
                    &text[*s..*e]
                ));
            }
        }
        for n in v["negatives"].as_array().unwrap() {
            negatives += 1;
            let (s, e) = (
                n["start"].as_u64().unwrap() as usize,
                n["end"].as_u64().unwrap() as usize,
            );
            if dets.iter().any(|x| x.start < e && s < x.end) {
                neg_hit += 1;
            }
        }
        for x in &dets {
            if !labels
                .iter()
                .any(|(s, e, d)| x.start == *s && x.end == *e && &x.detector == d)
            {
                fps.push(format!(
                    "{}: {:?} in {text:?}",
                    x.detector,
                    &text[x.start..x.end]
                ));
            }
        }
    }
    println!(
        "positives: {positives}, found: {found}, recall: {:.2}%",
        100.0 * found as f64 / positives as f64
    );
    for (d, (n, f)) in &per_detector {
        println!("  {d}: {f}/{n}");
    }
    println!("hard negatives: {negatives}, touched by a detection: {neg_hit}");
    println!("false positives: {}", fps.len());
    for f in &fps {
        println!("  FP {f}");
    }
    for m in &misses {
        println!("  MISS {m}");
    }
    assert!(
        misses.is_empty(),
        "recall below 100%: {} misses",
        misses.len()
    );
    assert_eq!(
        fps.len(),
        DOCUMENTED_FALSE_POSITIVES,
        "false positives changed; update docs/masking.md"
    );
}
