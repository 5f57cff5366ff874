//! No profiles file and no start request makes the core panic (issue 11 item 6): what an
//! operator writes and what a caller sends is answered with an error, never a crash.
//!
//! Profiles files: arbitrary text, and the example file with a slice replaced by arbitrary
//! text (odd unicode, control characters, cut-off tables), a line dropped or one repeated.
//! Start requests: each example profile rendered for arbitrary user and server names, option
//! values (of its own options and of none), URL prefixes and secret environment, as the
//! daemon renders a start request's body.

use std::collections::BTreeMap;

use fleetspawn_core::bundle::{Owner, Renderer, SpawnInput};
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../../../profiles/example.toml");

/// Text with what a hostile or careless writer puts in: any unicode, controls, bidi marks,
/// TOML and template syntax, and long runs.
fn nasty() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\u{0}-\\u{1f}\\u{7f}\\u{feff}\\u{202e}\\u{2066}\\u{200b}\"'\\[\\]{}=.#%\\\\\n a-z0-9]{0,64}",
        Just("{{".to_owned()),
        Just("{% for x in y %}".to_owned()),
        Just("[[profiles]]\n".to_owned()),
        Just("\"\"\"".to_owned()),
        (1usize..5000).prop_map(|n| "a".repeat(n)),
        (1usize..200).prop_map(|n| "[".repeat(n)),
    ]
}

fn renderer() -> Renderer {
    Renderer::builtin().expect("the built-in templates load")
}

/// Index of a char boundary of `s` near `at`.
fn boundary(s: &str, at: usize) -> usize {
    (0..=at.min(s.len())).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_is_no_crash(text in nasty()) {
        let _ = renderer().parse_profiles("profiles.toml", &text);
    }

    #[test]
    fn the_example_with_a_slice_replaced_is_no_crash(start in 0usize..EXAMPLE.len(), len in 0usize..200, with in nasty()) {
        let start = boundary(EXAMPLE, start);
        let end = boundary(EXAMPLE, start + len).max(start);
        let text = format!("{}{with}{}", &EXAMPLE[..start], &EXAMPLE[end..]);
        if let Err(diags) = renderer().parse_profiles("profiles.toml", &text) {
            // Every error names the file; a line, when it has one, is in the file.
            let lines = text.lines().count().max(1);
            for d in &diags.0 {
                prop_assert_eq!(&d.file, "profiles.toml");
                prop_assert!(d.line.is_none_or(|l| (1..=lines + 1).contains(&l)), "line {:?} of {} in {}", d.line, lines, d);
            }
        }
    }

    #[test]
    fn the_example_with_a_line_dropped_or_repeated_is_no_crash(line in 0usize..400, repeat in any::<bool>()) {
        let mut lines: Vec<&str> = EXAMPLE.lines().collect();
        let at = line % lines.len();
        if repeat {
            lines.insert(at, lines[at]);
        } else {
            lines.remove(at);
        }
        let _ = renderer().parse_profiles("profiles.toml", &lines.join("\n"));
    }

    #[test]
    fn any_start_request_renders_or_is_refused(
        user in nasty(),
        server in nasty(),
        values in proptest::collection::vec(nasty(), 0..3),
        stray in nasty(),
        url_prefix in proptest::option::of(nasty()),
        secret in nasty(),
    ) {
        let renderer = renderer();
        let set = renderer.parse_profiles("profiles.toml", EXAMPLE).expect("the example loads");
        let owner = Owner { uid: "0b6c2d6e-0000-4000-8000-000000000000".to_owned(), home: "fleetspawn".to_owned() };
        let secret_env = BTreeMap::from([("JUPYTERHUB_API_TOKEN".to_owned(), secret)]);
        for profile in set.iter() {
            // The profile's own options get the values, in turn; one option it does not have too.
            let mut options: BTreeMap<String, String> = profile.options.keys().cloned().zip(values.iter().cloned()).collect();
            if values.len() == 2 {
                options.insert(stray.clone(), values[1].clone());
            }
            for context in &profile.contexts {
                let input = SpawnInput {
                    user: &user,
                    server: &server,
                    profile,
                    options: &options,
                    context,
                    secret_env: &secret_env,
                    url_prefix: url_prefix.as_deref(),
                    hub_parameters: &Default::default(),
                    owner: Some(&owner),
                };
                let _ = renderer.render(&input);
            }
        }
    }
}

/// Deep nesting (an inline array or table thousands of levels deep) is refused at its line
/// by the TOML parser, before any of fleetspawn's recursive walks (and the checks on worker
/// threads, with their smaller stacks) could overflow.
#[test]
fn deeply_nested_values_are_refused_at_their_line() {
    let head = EXAMPLE.split_once("[[profiles]]").map_or(EXAMPLE, |(head, _)| head);
    for depth in [100, 10_000, 1_000_000] {
        let arrays = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let tables = format!("{}{}", "{ a = ".repeat(depth), "1 }".repeat(depth));
        for value in [&arrays, &tables] {
            let text =
                format!("{head}[[profiles]]\nslug = \"deep\"\ncontext = \"cluster-a\"\ningress_public_url = \"http://a.example.org\"\ntolerations = {value}\n");
            let line = text.lines().position(|l| l.starts_with("tolerations = ")).map(|i| i + 1);
            let diags = renderer().parse_profiles("profiles.toml", &text).expect_err("too deep");
            assert_eq!(diags.0.len(), 1, "{diags}");
            assert_eq!(diags.0[0].line, line, "{diags}");
            assert!(diags.0[0].message.contains("recursion"), "{diags}");
        }
    }
}
