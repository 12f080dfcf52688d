//! The path normalizer's properties ([`super::fuzz::check_normalize`]: agreement with a
//! plain reference implementation, idempotence, the canonical-form rules) on generated
//! path-like and arbitrary strings.

use proptest::prelude::*;

/// Strings built from the pieces that matter to normalization.
fn pathish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_string()),
        Just("//".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("/./".to_string()),
        Just("/../".to_string()),
        Just("%2e".to_string()),
        Just("%2E%2e".to_string()),
        Just("%2F".to_string()),
        Just("%5c".to_string()),
        Just("%".to_string()),
        Just("%00".to_string()),
        "%[0-9a-fA-F]{2}",
        "%[0-9a-zA-Z]{0,2}",
        "[a-z0-9._~-]{1,4}",
        "[!$&'()*+,;=:@]",
        "[ #?\\\\\t\u{0}\u{7f}é]",
    ];
    (
        prop_oneof![4 => Just("/"), 1 => Just(""), 1 => Just("a")],
        prop::collection::vec(piece, 0..12),
    )
        .prop_map(|(head, pieces)| format!("{head}{}", pieces.concat()))
}

proptest! {
    // `check_normalize` asserts, for both option sets: agreement with a plain
    // reference implementation (including which error), output starts with '/', no
    // `//`, no `.`/`..` segment, escapes upper-case and never of unreserved or control
    // bytes, idempotence, `Cow::Borrowed` exactly when unchanged, the trailing-slash
    // rule, and that the default options only differ by rejecting encoded slashes.
    #[test]
    fn properties_on_pathish_strings(input in pathish()) {
        super::fuzz::check_normalize(&input);
    }

    #[test]
    fn properties_on_arbitrary_strings(input in any::<String>()) {
        super::fuzz::check_normalize(&input);
        super::fuzz::check_normalize(&format!("/{input}"));
    }
}
