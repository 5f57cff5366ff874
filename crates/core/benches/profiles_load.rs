//! How long a large profiles file takes to load (issue 11 item 9: 5,000 profiles in under a
//! second), run by `./bench` (never part of `cargo test`).
//!
//! Two files of FSBENCH_PROFILES (5000) profiles:
//! - `example`: `profiles/example.toml` with its profiles repeated, each copy under slugs and
//!   display names of its own: the example's mix of options, free text, patches, objects,
//!   storage and several contexts;
//! - `plain`: the example's `[defaults]` and profiles as a generated file would have them (one
//!   per course, say): two contexts, an image, an environment variable and a two-choice option.
//!
//! A load is what the daemon does at start and on every reload: parse, check every profile
//! (with a sample render) and build the set. Prints the median of FSBENCH_LOAD_RUNS (7) loads
//! of each and `RESULT {json}`.

use std::time::Instant;

use fleetspawn_core::bundle::Renderer;

/// `example` with its `[[profiles]]` repeated to `count` profiles.
fn repeated(example: &str, count: usize) -> String {
    let (head, body) = example.split_once("[[profiles]]").expect("the example has profiles");
    let blocks: Vec<&str> = body.split("\n[[profiles]]").collect();
    let mut text = head.to_owned();
    for i in 0..count {
        let block = blocks[i % blocks.len()];
        let copy = i / blocks.len();
        let mut out = String::from("[[profiles]]");
        for line in block.lines() {
            if copy > 0 && line.starts_with("default = true") {
                continue;
            }
            if let Some(rest) = line.strip_prefix("slug = \"") {
                out.push_str(&format!("slug = \"c{copy}-{rest}"));
            } else if let Some(rest) = line.strip_prefix("display_name = \"") {
                out.push_str(&format!("display_name = \"#{copy} {rest}"));
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        text.push_str(&out);
        text.push('\n');
    }
    text
}

/// `example`'s `[defaults]` and `count` plain profiles.
fn plain(example: &str, count: usize) -> String {
    let (head, _) = example.split_once("[[profiles]]").expect("the example has profiles");
    let mut text = head.to_owned();
    for i in 0..count {
        text.push_str(&format!(
            "[[profiles]]\nslug = \"course-{i}\"\ndisplay_name = \"Course {i}\"\ncontext = [\"cluster-a\", \"cluster-b\"]\n\
             ingress_public_url = {{ cluster-a = \"http://a.example.org\", cluster-b = \"http://b.example.org\" }}\n\
             image = \"quay.io/jupyter/scipy-notebook:2025-0{}\"\n\
             [profiles.environment]\nCOURSE = \"course-{i}\"\n\
             [profiles.options.size]\ndefault = \"small\"\n\
             [profiles.options.size.choices.small]\noverride = {{ cpu_limit = 1 }}\n\
             [profiles.options.size.choices.large]\noverride = {{ cpu_limit = 4, mem_limit = \"8Gi\" }}\n\n",
            i % 9 + 1
        ));
    }
    text
}

/// The median seconds of `runs` loads of `text`, which holds `count` profiles.
fn median_load(renderer: &Renderer, text: &str, count: usize, runs: usize) -> (f64, f64, f64) {
    let mut seconds = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let set = match renderer.parse_profiles("profiles.toml", text) {
            Ok(set) => set,
            Err(diags) => panic!("the generated file does not load: {diags}"),
        };
        seconds.push(started.elapsed().as_secs_f64());
        assert_eq!(set.iter().count(), count, "every profile loads");
    }
    seconds.sort_by(f64::total_cmp);
    (seconds[seconds.len() / 2], seconds[0], seconds[runs - 1])
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let count = env_usize("FSBENCH_PROFILES", 5000);
    let runs = env_usize("FSBENCH_LOAD_RUNS", 7).max(1);
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../profiles/example.toml")).expect("profiles/example.toml");
    let renderer = Renderer::builtin().expect("the built-in templates");
    let mut results = Vec::new();
    for (shape, text) in [("example", repeated(&example, count)), ("plain", plain(&example, count))] {
        let (median, min, max) = median_load(&renderer, &text, count, runs);
        let kib = text.len() / 1024;
        println!("load of {count} {shape} profiles ({kib} KiB): median {median:.3} s of {runs} (min {min:.3}, max {max:.3})");
        results.push(format!("\"{shape}\": {{\"kib\": {kib}, \"median_s\": {median:.4}}}"));
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!("RESULT {{\"profiles\": {count}, \"runs\": {runs}, \"cores\": {cores}, {}}}", results.join(", "));
}
