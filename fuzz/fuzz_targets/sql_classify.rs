//! The SQL splitter and classifier see every statement a client sends.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = warden_policy::classify(s, warden_policy::Dialect::Postgres);
        let _ = warden_policy::classify(s, warden_policy::Dialect::MySql);
    }
});
