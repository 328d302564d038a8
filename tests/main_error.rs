//! What `fn main() -> kiln::Result<()>` prints when it returns an error: the message and its
//! causes, not a `Debug` dump of the enum.
//!
//! This test is its own `main` (`harness = false` in Cargo.toml): run plainly, it starts
//! itself again as a child that returns an error from `main`, and checks the child's stderr.

use std::process::Command;

/// Set in the child's environment.
const CHILD: &str = "KILN_MAIN_ERROR_CHILD";

fn main() -> kiln::Result<()> {
    if std::env::var_os(CHILD).is_some() {
        // The child: a missing file, reported as a user's program would report it.
        kiln::data::read_csv(std::env::temp_dir().join("kiln-no-such-dir/iris.csv"))?;
        return Ok(());
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .env(CHILD, "1")
        .output()
        .expect("the child runs");
    assert!(!out.status.success(), "the child's main returned Err");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("Error: ") && first.ends_with("iris.csv: cannot read the CSV file"),
        "{stderr}"
    );
    assert!(stderr.contains("\n\nCaused by:\n    "), "{stderr}");
    for dump in ["Io {", "path:", "source:", "Os {"] {
        assert!(!stderr.contains(dump), "a Debug dump ({dump}) in: {stderr}");
    }
    println!("main_error: ok");
    Ok(())
}
