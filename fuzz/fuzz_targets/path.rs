//! Request path normalisation (`gateway-config/src/path.rs`), the form path rules are
//! matched in. The first byte picks the policy (`merge_slashes`, `path_escaped_slashes`),
//! the rest is the path (a `/` is put in front when it has none). Properties, beyond not
//! panicking:
//! - the normal form is normal: normalising it again changes nothing, and it starts with
//!   `/`, has no `.` or `..` segment, no backslash, no `//` when slashes merge, and every
//!   `%` is followed by two upper-case hex digits that do not encode an unreserved
//!   character;
//! - the form the rules compare has no `;`-parameter, and is what the normal form of itself
//!   compares as (the rules see one path, however often it is normalised);
//! - a path rule written as the normal form matches it, whatever the ASCII case.
#![no_main]

use gateway_config::path::{normalize, EscapedSlashes, PathPolicy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let policy = PathPolicy {
        merge_slashes: flags & 1 == 0,
        escaped_slashes: match (flags >> 1) % 3 {
            0 => EscapedSlashes::Reject,
            1 => EscapedSlashes::Keep,
            _ => EscapedSlashes::Decode,
        },
    };
    let path = if text.starts_with('/') {
        text.to_owned()
    } else {
        format!("/{text}")
    };
    let Ok(normal) = normalize(&path, policy) else {
        return;
    };
    let form = normal.as_str();
    assert!(form.starts_with('/'), "{form:?}");
    assert!(!form.contains('\\'), "{form:?}");
    for segment in form[1..].split('/') {
        let name = segment.split(';').next().unwrap_or_default();
        assert!(name != "." && name != "..", "{form:?}");
    }
    if policy.merge_slashes {
        assert!(!form.contains("//"), "{form:?}");
    }
    let bytes = form.as_bytes();
    for (i, _) in form.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3).expect("two digits after %");
        assert!(
            hex.iter()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)),
            "{form:?}"
        );
        let value = u8::from_str_radix(std::str::from_utf8(hex).expect("hex"), 16).expect("hex");
        assert!(
            !(value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~')),
            "{form:?} keeps an unreserved character encoded"
        );
    }
    let again = normalize(form, policy).expect("a normal path normalises");
    assert_eq!(again.as_str(), form, "normalising twice changed it");
    assert!(!again.changed());
    let routed = normal.routed();
    assert_eq!(again.routed(), routed);
    for segment in routed[1..].split('/') {
        assert!(!segment.contains(';') || form.contains("%3B"), "{routed:?}");
    }
    // The rule a user would write for this very path matches it, in any case.
    if !form.contains(';') && form.is_ascii() && !form.contains('*') {
        if let Ok(pattern) = gateway_config::PathPattern::parse_rule(form, policy) {
            assert!(pattern.matches(routed), "{form:?} / {routed:?}");
            assert!(
                pattern.matches(&routed.to_ascii_uppercase()),
                "{form:?}: case matters"
            );
        }
    }
});
