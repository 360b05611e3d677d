//! Every byte a PostgreSQL client may send before and after authentication goes through
//! these decoders; none of them may panic, loop or over-allocate.
#![no_main]
use libfuzzer_sys::fuzz_target;
use warden_pg::codec;

fuzz_target!(|data: &[u8]| {
    // Untagged first packets (startup, SSLRequest, CancelRequest).
    if let Ok(Some(body)) = codec::split_untagged(data) {
        let _ = codec::parse_first_packet(body);
    }
    let _ = codec::parse_first_packet(data);
    // A stream of tagged frames, each body through the parser for its tag.
    let mut rest = data;
    while let Ok(Some(f)) = codec::split_frame(rest, codec::MAX_FRAME) {
        match f.tag {
            b'Q' => drop(codec::parse_query(f.body)),
            b'P' => drop(codec::parse_parse(f.body)),
            b'B' => drop(codec::parse_bind(f.body)),
            b'E' => drop(codec::parse_execute(f.body)),
            b'C' | b'D' => drop(codec::parse_target(f.body, "target")),
            _ => drop(codec::parse_error_fields(f.body)),
        }
        rest = &rest[f.len..];
    }
});
