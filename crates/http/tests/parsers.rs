//! Property tests for the parsers that read untrusted bytes: the framing guard, the
//! router and the WebSocket frame follower never panic, and give the same answer however
//! the bytes are split across reads.
use proptest::prelude::*;
use warden_http::guard::{Poison, Tracker};
use warden_http::target::route;
use warden_http::tunnel::WsFrames;

fn http_ish() -> impl Strategy<Value = Vec<u8>> {
    let atoms = prop::sample::select(vec![
        &b"GET / HTTP/1.1\r\n"[..],
        b"POST /x HTTP/1.1\r\n",
        b"Content-Length: 3\r\n",
        b"Content-Length: 0\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Connection: upgrade\r\n",
        b"X-A: b\r\n",
        b"X-A: b\n",
        b" folded\r\n",
        b"\r\n",
        b"abc",
        b"3\r\nabc\r\n",
        b"0\r\n\r\n",
        b"\0",
    ]);
    prop::collection::vec(atoms, 0..24).prop_map(|v| v.concat())
}

fn poison_of(data: &[u8], chunk: usize) -> Option<&'static str> {
    let p = Poison::default();
    let mut t = Tracker::new(p.clone());
    for c in data.chunks(chunk.max(1)) {
        t.feed(c);
    }
    p.get()
}

proptest! {
    #[test]
    fn guard_is_chunking_independent(data in http_ish(), chunk in 1usize..40) {
        prop_assert_eq!(poison_of(&data, chunk).is_some(), poison_of(&data, data.len().max(1)).is_some());
    }

    #[test]
    fn guard_never_panics(data in prop::collection::vec(any::<u8>(), 0..2048), chunk in 1usize..64) {
        let _ = poison_of(&data, chunk);
    }

    #[test]
    fn routed_paths_have_no_dot_segments(path in "/[a-z]{1,4}(/(\\.|\\.\\.|%2[eEfF]|%5[cC]|[a-z]{1,3}|%[0-9a-f]{2})){0,8}/?") {
        if let Ok(t) = route(&path) {
            prop_assert!(t.path.starts_with('/'));
            prop_assert!(!t.path.split('/').any(|s| s == "." || s == ".."));
            prop_assert!(!t.policy_path.split('/').any(|s| s == "." || s == ".."));
            prop_assert!(!t.policy_path.contains('\\'));
        }
    }

    #[test]
    fn ws_follower_is_chunking_independent(data in prop::collection::vec(any::<u8>(), 0..4096), chunk in 1usize..100) {
        let mut a = WsFrames::new(256);
        a.feed(&data);
        let mut b = WsFrames::new(256);
        for c in data.chunks(chunk) {
            b.feed(c);
        }
        prop_assert_eq!((a.frames, a.text_messages, a.binary_messages), (b.frames, b.text_messages, b.binary_messages));
    }
}

fn masker() -> warden_masking::ConnectionMasker {
    use warden_masking::*;
    let config = MaskingConfig {
        rules: vec![MaskRule {
            connections: vec!["*".into()],
            detectors: vec![DetectorName::CreditCard, DetectorName::Email],
            operator: Operator::Partial,
            fields: vec![],
        }],
        ..Default::default()
    };
    Masker::new(&config).unwrap().for_connection("x").unwrap()
}

fn ws_frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

proptest! {
    #[test]
    fn ws_masker_masks_text_in_any_chunking(
        texts in prop::collection::vec("[a-z ]{0,40}", 1..6),
        chunk in 1usize..50,
        masked in any::<bool>(),
    ) {
        let email = "jane.doe@example.com";
        let mut stream = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            let text = format!("{t} {email} {t}");
            stream.extend(ws_frame(0x1, text.as_bytes(), masked.then_some([1, 2, 3, (i % 7) as u8])));
            stream.extend(ws_frame(0x2, &[0xff, 0x00, 0x40], None));
        }
        let mut whole = Vec::new();
        warden_http::tunnel::WsMasker::new(masker()).feed(&stream, &mut whole).unwrap();
        let mut pieces = Vec::new();
        let mut m = warden_http::tunnel::WsMasker::new(masker());
        for c in stream.chunks(chunk) {
            m.feed(c, &mut pieces).unwrap();
        }
        prop_assert_eq!(&whole, &pieces);
        prop_assert_eq!(m.stats.per_detector.get("email").copied(), Some(texts.len() as u64));
        // Every frame still parses, text no longer holds the address.
        let mut f = WsFrames::new(1 << 20);
        f.feed(&whole);
        prop_assert_eq!(f.frames, 2 * texts.len() as u64);
        prop_assert_eq!(f.text_messages, texts.len() as u64);
        let text = String::from_utf8_lossy(&f.text.head).into_owned();
        prop_assert!(!text.contains(email));
    }
}
