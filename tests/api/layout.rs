//! The architecture's rules, checked on the source: the layout stays what README.md says.

use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            files.push((path, text));
        }
    }
    files
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `(file, line)` of every line in `files` under `under` that mentions one of `needles`.
fn mentions(under: &str, needles: &[&str], except: &[&str]) -> Vec<String> {
    let root = src();
    sources(&root.join(under))
        .into_iter()
        .filter(|(path, _)| {
            let relative = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            !except.iter().any(|e| relative.starts_with(e))
        })
        .flat_map(|(path, text)| {
            text.lines()
                .enumerate()
                .filter(|(_, line)| needles.iter().any(|n| line.contains(n)))
                .map(|(i, line)| format!("{}:{}: {}", path.display(), i + 1, line.trim()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn only_startup_knows_the_http_handlers() {
    let found = mentions(
        "",
        &["crate::routes", "super::routes"],
        &["routes/", "startup.rs"],
    );
    assert!(
        found.is_empty(),
        "imports from routes/:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_database_layer_knows_nothing_above_it() {
    let above = [
        "crate::uploads",
        "crate::storage",
        "crate::chat",
        "crate::realtime",
        "crate::routes",
        "crate::state",
        "actix_web",
    ];
    let found = mentions("db", &above, &[]);
    assert!(found.is_empty(), "db/ reaches up:\n{}", found.join("\n"));
}

#[test]
fn no_unsafe_code_and_no_raw_descriptors() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    assert!(lib.contains("#![forbid(unsafe_code)]"));
    let raw = ["RawFd", "as_raw_fd", "from_raw_fd", "borrow_raw", "[patch."];
    let found = mentions("", &raw, &[]);
    assert!(found.is_empty(), "raw descriptors:\n{}", found.join("\n"));
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    assert!(!manifest.contains("[patch"), "no patched crates");
}

/// A machine with only Rust and a C compiler builds and runs the server: libpq is compiled
/// into the binary (pq-sys's bundled build), not looked up on the system.
#[test]
fn the_binary_links_no_system_libpq() {
    let binary = env!("CARGO_BIN_EXE_chatserver");
    let linked = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .expect("ldd (Debian's libc-bin) lists what the binary links");
    assert!(linked.status.success(), "ldd {binary} failed");
    let libraries = String::from_utf8_lossy(&linked.stdout);
    assert!(libraries.contains("libc.so"), "{libraries}");
    assert!(!libraries.contains("libpq"), "{libraries}");
}
