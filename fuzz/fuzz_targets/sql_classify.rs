//! The SQL splitter, the classifier and the shape lexer see every statement a client sends.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let pg = warden_policy::classify(s, warden_policy::Dialect::Postgres);
        let _ = warden_policy::classify(s, warden_policy::Dialect::MySql);
        // A shaped text is one statement whose text is the shape's (the shape cache
        // hands that text to a shared classification).
        if let Some(shape) = warden_policy::literal_shape(s) {
            assert_eq!(pg.len(), 1, "{s:?}");
            assert_eq!(pg[0].text, shape.text, "{s:?}");
        }
    }
});
